"""Webhooks (cgwatchdog/notify/webhook.py and formats/), Apprise, and test-notify.

A real HTTP server on 127.0.0.1 (pytest-httpserver) receives every format; each body
is checked against what that service documents it accepts: required fields, size
limits, escaping, and truncation that says how many alerts were left out.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cgwatchdog.alerts import AlertView, Notification, fingerprint
from cgwatchdog.config import ReceiverConfig
from cgwatchdog.config.loader import load_config
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify import build_integration, receiver_model, send_test
from cgwatchdog.notify.receivers.webhook import WebhookIntegration
from cgwatchdog.notify.render import more_note, utf16_len

TOKEN = "T0KEN-5f3a9c2e7b1d"
T0 = 1_764_100_800.0  # 2025-11-25T20:00:00Z


def alert(
    miner: str = "rack1-s9-01",
    device: int = 0,
    *,
    status: str = "firing",
    summary: str | None = None,
    severity: str = "critical",
    alertname: str = "DeviceDead",
    site: str = "north",
) -> AlertView:
    labels = {
        "alertname": alertname,
        "miner": miner,
        "device": str(device),
        "severity": severity,
        "site": site,
    }
    return AlertView(
        fingerprint=fingerprint(labels),
        labels=labels,
        annotations={"summary": summary or f"Device {device} of {miner} is Dead"},
        value="Dead",
        status=status,
        starts_at=T0,
        ends_at=None if status == "firing" else T0 + 600,
    )


def notification(*alerts: AlertView, receiver: str = "chat") -> Notification:
    views = alerts or (alert(device=0), alert(device=1), alert(device=2))
    return Notification(
        receiver=receiver,
        group_key='{}:{alertname="DeviceDead", site="north"}',
        group_labels={"alertname": "DeviceDead", "site": "north"},
        status="firing" if any(a.status == "firing" for a in views) else "resolved",
        alerts=tuple(views),
    )


def many(count: int) -> Notification:
    return notification(
        *(alert(f"rack{i // 100}-s9-{i % 100:02d}", i % 4, summary="x" * 120) for i in range(count))
    )


def webhook(server: HTTPServer, path: str = f"/hook/{TOKEN}", **settings: Any) -> ReceiverConfig:
    return receiver_model().model_validate(
        {"name": "chat", "webhook": {"url": server.url_for(path), **settings}}
    )


def integration(receiver: ReceiverConfig) -> WebhookIntegration:
    built = build_integration(receiver, external_url="http://127.0.0.1:9841")
    assert isinstance(built, WebhookIntegration)
    return built


def received(server: HTTPServer) -> list[tuple[Request, Any]]:
    out = []
    for request, _ in server.log:
        data = request.get_data()
        try:
            out.append((request, json.loads(data)))
        except ValueError:
            out.append((request, data.decode()))
    return out


def send(server: HTTPServer, n: Notification, **settings: Any) -> tuple[Request, Any]:
    server.expect_request("", method="POST").respond_with_data("ok")
    hook = integration(webhook(server, **settings))
    try:
        assert hook.notify(n) == "HTTP 200"
    finally:
        hook.close()
    ((request, body),) = received(server)
    return request, body


@pytest.fixture
def server(httpserver_ipv4: HTTPServer) -> Iterator[HTTPServer]:
    yield httpserver_ipv4
    httpserver_ipv4.clear()


# --- the default body: Alertmanager webhook JSON v4 ------------------------------------


def test_default_body_is_the_alertmanager_webhook_document(server: HTTPServer) -> None:
    n = notification(alert(device=0), alert(device=1, status="resolved"))
    request, body = send(server, n)
    assert request.path == f"/hook/{TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("cgwatchdog/")
    assert set(body) == {
        "receiver", "status", "alerts", "groupLabels", "commonLabels", "commonAnnotations",
        "externalURL", "version", "groupKey", "truncatedAlerts",
    }  # fmt: skip
    assert body["version"] == "4"
    assert body["receiver"] == "chat"
    assert body["status"] == "firing"
    assert body["groupKey"] == n.group_key
    assert body["groupLabels"] == {"alertname": "DeviceDead", "site": "north"}
    assert body["commonLabels"] == {
        "alertname": "DeviceDead", "miner": "rack1-s9-01", "severity": "critical", "site": "north"
    }  # fmt: skip
    assert body["externalURL"] == "http://127.0.0.1:9841"
    assert body["truncatedAlerts"] == 0
    firing, resolved = body["alerts"]
    assert set(firing) == {
        "status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"
    }  # fmt: skip
    assert firing["status"] == "firing"
    assert firing["startsAt"] == "2025-11-25T20:00:00Z"
    assert firing["endsAt"] == "0001-01-01T00:00:00Z"  # Alertmanager's "not ended"
    assert firing["fingerprint"] == fingerprint(firing["labels"])
    assert resolved["status"] == "resolved"
    assert resolved["endsAt"] == "2025-11-25T20:10:00Z"


def test_custom_headers_and_bearer_auth(server: HTTPServer) -> None:
    request, _ = send(
        server,
        notification(),
        headers={"X-Scope-OrgID": "farm-1"},
        auth={"bearer": {"token": "bearer-secret-1"}},
    )
    assert request.headers["Authorization"] == "Bearer bearer-secret-1"
    assert request.headers["X-Scope-OrgID"] == "farm-1"


def test_basic_auth(server: HTTPServer) -> None:
    request, _ = send(
        server, notification(), auth={"basic": {"user": "ops", "password": "pa55-word"}}
    )
    expected = base64.b64encode(b"ops:pa55-word").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"


# --- the presets, each as its service accepts it -----------------------------------------


def test_slack_blocks_and_escaping(server: HTTPServer) -> None:
    n = notification(alert(summary="fan <!channel> & <http://x|click> *bold*"))
    _, body = send(server, n, format="slack")
    assert body["text"].startswith("[FIRING:1] DeviceDead rack1-s9-01 (site=north)")
    header, section = body["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "[FIRING:1] DeviceDead rack1-s9-01 (site=north)"},
    }
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    text = section["text"]["text"]
    # Slack's three escapes: no mention, no link can come out of a label or annotation.
    assert "&lt;!channel&gt; &amp; &lt;http://x|click&gt;" in text
    assert "<" not in text.replace("&lt;", "")


def test_slack_limits_and_truncation(server: HTTPServer) -> None:
    _, body = send(server, many(3000), format="slack")
    blocks = body["blocks"]
    assert len(blocks) <= 50
    assert len(body["text"]) <= 40_000
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")
    shown = sum(b["text"]["text"].count("\n") + 1 for b in blocks if b["type"] == "section")
    assert blocks[-1] == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": more_note(3000 - shown)}],
    }
    shown_in_text = body["text"].count("\n") - 1  # title line and note line
    assert body["text"].endswith(more_note(3000 - shown_in_text))


def test_discord_embed_limits_escaping_and_no_pings(server: HTTPServer) -> None:
    n = notification(alert(summary="@everyone *boom* _x_ `code` [link](http://evil) <@123>"))
    _, body = send(server, n, format="discord")
    assert body["allowed_mentions"] == {"parse": []}
    assert len(body["content"]) <= 2000
    (embed,) = body["embeds"]
    assert embed["title"] == "[FIRING:1] DeviceDead rack1-s9-01 (site=north)"
    assert embed["color"] == 0xD0021B
    assert r"\*boom\* \_x\_ \`code\` \[link\](http://evil) \<@123>" in embed["description"]

    server.clear()
    _, body = send(server, many(3000), format="discord")
    (embed,) = body["embeds"]
    assert len(embed["title"]) <= 256 and len(embed["description"]) <= 4096
    total = len(embed["title"]) + len(embed["description"]) + len(embed["footer"]["text"])
    assert total <= 6000
    shown = embed["description"].count("\n")
    assert embed["description"].endswith(more_note(3000 - shown))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.seen: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open.append(tag)
        self.seen.add(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open.pop() == tag


def test_telegram_send_message_html(server: HTTPServer) -> None:
    n = notification(alert(summary="temp <85> & rising </b>"))
    request, body = send(server, n, format="telegram", chat_id=-1001234, path=f"/bot{TOKEN}")
    assert request.path == f"/bot{TOKEN}/sendMessage"
    assert body["chat_id"] == -1001234
    assert body["parse_mode"] == "HTML"
    assert "temp &lt;85&gt; &amp; rising &lt;/b&gt;" in body["text"]
    tags = _Tags()
    tags.feed(body["text"])
    assert tags.open == [] and tags.seen <= {"b", "i"}  # Telegram's HTML subset, balanced

    server.clear()
    _, body = send(server, many(3000), format="telegram", chat_id="@farm_alerts")
    assert body["chat_id"] == "@farm_alerts"
    assert utf16_len(body["text"]) <= 4096
    shown = body["text"].count("\n") - 2  # title, blank line, note
    assert body["text"].endswith(more_note(3000 - shown))


def test_mattermost_markdown(server: HTTPServer) -> None:
    _, body = send(
        server, notification(alert(summary="a *b* _c_ [d](e) #f |g|")), format="mattermost"
    )
    assert body["text"].startswith("#### \\[FIRING:1\\] DeviceDead")
    assert r"a \*b\* \_c\_ \[d\]\(e\) \#f \|g\|" in body["text"]
    server.clear()
    _, body = send(server, many(3000), format="mattermost")
    assert len(body["text"]) <= 16_383
    assert body["text"].endswith(more_note(3000 - (body["text"].count("\n") - 1)))


def test_teams_adaptive_card(server: HTTPServer) -> None:
    _, body = send(server, notification(), format="teams")
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert all(block["type"] == "TextBlock" and block["wrap"] for block in card["body"])
    assert card["body"][0]["text"] == "[FIRING:3] DeviceDead rack1-s9-01 (site=north)"
    assert card["actions"][0]["url"] == "http://127.0.0.1:9841"

    server.clear()
    request, body = send(server, many(3000), format="teams")
    assert len(request.get_data()) <= 28_000
    blocks = body["attachments"][0]["content"]["body"]
    assert blocks[-1]["text"] == more_note(3000 - (len(blocks) - 2))


def test_ntfy_json_publish_to_the_root_with_the_topic(server: HTTPServer) -> None:
    request, body = send(server, notification(), format="ntfy", path="/farm-alerts")
    assert request.path == "/"
    assert body["topic"] == "farm-alerts"
    assert body["title"] == "[FIRING:3] DeviceDead rack1-s9-01 (site=north)"
    assert body["priority"] == 5 and body["tags"] == ["rotating_light"]
    assert body["click"] == "http://127.0.0.1:9841"
    assert body["message"].count("\n") == 2

    server.clear()
    resolved = notification(alert(status="resolved", severity="warning"))
    _, body = send(server, resolved, format="ntfy", path="/farm-alerts")
    assert body["priority"] == 2 and body["tags"] == ["white_check_mark"]

    server.clear()
    _, body = send(server, many(3000), format="ntfy", path="/farm-alerts")
    assert len(body["message"].encode()) <= 4096
    assert body["message"].endswith(more_note(3000 - body["message"].count("\n")))


def test_custom_template_json_and_text(server: HTTPServer) -> None:
    template = (
        '{"title": {{ title | tojson }}, "count": {{ alerts | length }}, '
        '"miners": {{ firing | map(attribute="labels.miner") | list | tojson }}}'
    )
    request, body = send(server, notification(), format="custom", template=template)
    assert request.headers["Content-Type"] == "application/json"
    assert body == {
        "title": "[FIRING:3] DeviceDead rack1-s9-01 (site=north)",
        "count": 3,
        "miners": ["rack1-s9-01"] * 3,
    }
    server.clear()
    request, body = send(
        server, notification(), format="custom", template="{{ status | upper }}: {{ groupKey }}"
    )
    assert request.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body == 'FIRING: {}:{alertname="DeviceDead", site="north"}'


def test_custom_template_is_sandboxed(server: HTTPServer) -> None:
    hook = integration(
        webhook(
            server,
            format="custom",
            template="{{ ''.__class__.__mro__[1].__subclasses__() }}",
        )
    )
    with pytest.raises(NotifyError) as caught:
        hook.notify(notification())
    assert not caught.value.recoverable
    assert "SecurityError" in str(caught.value) or "unsafe" in str(caught.value)
    assert server.log == []


# --- outcomes --------------------------------------------------------------------------


def failure(server: HTTPServer, response: Response, **settings: Any) -> NotifyError:
    server.expect_request("", method="POST").respond_with_response(response)
    hook = integration(webhook(server, **settings))
    with pytest.raises(NotifyError) as caught:
        hook.notify(notification())
    hook.close()
    return caught.value


def test_server_errors_are_recoverable(server: HTTPServer) -> None:
    error = failure(server, Response("upstream down", status=503))
    assert error.recoverable and error.retry_after_s is None
    assert "HTTP 503" in str(error) and "upstream down" in str(error)


def test_429_honours_retry_after(server: HTTPServer) -> None:
    error = failure(server, Response("slow down", status=429, headers={"Retry-After": "17"}))
    assert error.recoverable and error.retry_after_s == 17.0
    server.clear()
    # Discord says it in the body too (seconds, float).
    discord = Response('{"message": "rate limited", "retry_after": 2.5}', status=429)
    error = failure(server, discord, format="discord")
    assert error.recoverable and error.retry_after_s == 2.5


def test_client_errors_are_not_recoverable_with_the_first_line_of_the_answer(
    server: HTTPServer,
) -> None:
    error = failure(server, Response("\n  invalid_payload\nsecond line", status=400))
    assert not error.recoverable
    assert str(error) == f"127.0.0.1:{server.port} answered HTTP 400 BAD REQUEST: invalid_payload"
    server.clear()
    moved = failure(server, Response("", status=301, headers={"Location": f"/new/{TOKEN}"}))
    assert not moved.recoverable and "moved" in str(moved) and TOKEN not in str(moved)


def test_timeout_is_recoverable() -> None:
    with socket.socket() as listener:  # accepts (the kernel does) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        receiver = receiver_model().model_validate(
            {
                "name": "chat",
                "webhook": {"url": f"http://127.0.0.1:{port}/{TOKEN}", "timeout": "200ms"},
            }
        )
        with pytest.raises(NotifyError) as caught:
            integration(receiver).notify(notification())
    assert caught.value.recoverable
    assert str(caught.value) == f"127.0.0.1:{port} did not answer within 0.2 s"


def test_connection_refused_is_recoverable_and_never_shows_the_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    receiver = receiver_model().model_validate(
        {"name": "chat", "webhook": {"url": f"http://127.0.0.1:{port}/hook/{TOKEN}"}}
    )
    with pytest.raises(NotifyError) as caught:
        integration(receiver).notify(notification())
    assert caught.value.recoverable
    assert "connection refused by 127.0.0.1" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert TOKEN not in str(caught.value) and TOKEN not in caplog.text


def test_an_echoed_token_is_redacted(server: HTTPServer) -> None:
    server.expect_request("", method="POST").respond_with_data(f"bad token {TOKEN}", status=403)
    hook = integration(webhook(server))
    with pytest.raises(NotifyError) as caught:
        hook.notify(notification())
    assert TOKEN in str(caught.value)  # the service said it; the redactor removes it
    assert TOKEN not in hook.redact(str(caught.value))
    assert "<redacted>" in hook.redact(str(caught.value))


# --- Apprise -----------------------------------------------------------------------------


def apprise_receiver(*urls: str) -> ReceiverConfig:
    return receiver_model().model_validate({"name": "push", "apprise": {"urls": list(urls)}})


def test_apprise_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # what an absent package looks like
    hook = build_integration(apprise_receiver("json://127.0.0.1:9/x"))
    with pytest.raises(NotifyError) as caught:
        hook.notify(notification())
    assert not caught.value.recoverable
    assert "pip install 'cgwatchdog[apprise]'" in str(caught.value)


def test_apprise_delivers_title_and_body(server: HTTPServer) -> None:
    pytest.importorskip("apprise", reason="the optional [apprise] extra is not installed")
    server.expect_request("/apprise", method="POST").respond_with_data("ok")
    hook = build_integration(apprise_receiver(f"json://127.0.0.1:{server.port}/apprise"))
    assert hook.notify(notification()) == "delivered by Apprise to 1 URL"
    ((_, body),) = received(server)
    assert body["title"] == "[FIRING:3] DeviceDead rack1-s9-01 (site=north)"
    assert body["message"].count("\n") == 2 and body["type"] == "failure"

    server.clear()
    server.expect_request("/apprise", method="POST").respond_with_data("no", status=500)
    with pytest.raises(NotifyError) as caught:
        hook.notify(notification())
    assert caught.value.recoverable and "URL #1 (json)" in str(caught.value)


# --- test-notify -------------------------------------------------------------------------


def test_send_test_reports_each_receiver_exactly(server: HTTPServer, tmp_path: Path) -> None:
    server.expect_request("/ok", method="POST").respond_with_data("ok")
    server.expect_request(f"/bad/{TOKEN}", method="POST").respond_with_data(
        f"no_service for {TOKEN}", status=404
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "receivers:\n"
        f"  - name: ok\n    webhook: {{url: '{server.url_for('/ok')}', format: slack}}\n"
        "  - name: bad\n    webhook: {url: '${BAD_URL}'}\n"
        f"  - name: down\n    webhook: {{url: 'http://127.0.0.1:{closed}/{TOKEN}x'}}\n"
        f"  - name: tls\n    webhook: {{url: 'https://127.0.0.1:{server.port}/ok'}}\n"
        "route: {receiver: ok, routes: [{receiver: bad}, {receiver: down}, {receiver: tls}]}\n"
    )
    config = load_config(config_file, environ={"BAD_URL": server.url_for(f"/bad/{TOKEN}")})
    results = {r.name: r for r in send_test(config)}
    assert results["ok"].ok and results["ok"].message == "HTTP 200"
    assert not results["bad"].ok
    assert results["bad"].message == (
        f"127.0.0.1:{server.port} answered HTTP 404 NOT FOUND: no_service for <redacted>"
    )
    assert results["down"].message.startswith(f"connection refused by 127.0.0.1:{closed}")
    assert results["tls"].message == (
        f"TLS with 127.0.0.1:{server.port} failed: the server did not answer TLS "
        "(plain HTTP on an https:// URL?)"
    )
    assert all(TOKEN not in r.message for r in results.values())
    (body,) = [b for r, b in received(server) if r.path == "/ok"]
    assert body["text"].startswith("[FIRING:1] CgwatchdogTest test-notify")

    (only,) = send_test(config, "ok")
    assert only.ok
    with pytest.raises(Exception, match="no receiver named 'nope'"):
        send_test(config, "nope")
