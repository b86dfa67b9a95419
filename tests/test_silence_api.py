"""The silence and acknowledgement API (cgwatchdog/web/silence_api.py) on a real aiohttp
server on 127.58.1.1, and the CLI (cgwatchdog/silencecli.py) talking to it over HTTP.

The CLI runs in a worker thread (it blocks on urllib) while the server answers on the
test's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cgwatchdog.alerts import AlertEngine, Evaluation, Signal
from cgwatchdog.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from cgwatchdog.silencecli import add_parsers, read_token
from cgwatchdog.silences import Matcher, Silence, SilenceBook
from cgwatchdog.simulator import FakeClock
from cgwatchdog.web.silence_api import MAX_BODY_BYTES, routes

HOST = "127.58.1.1"
TOKEN = "s3cret-token-for-tests"
T0 = 1_800_000_000.0
LABELS = {"alertname": "DeviceDead", "miner": "sim-001", "severity": "critical"}


@dataclass
class Api:
    url: str
    book: SilenceBook
    engine: AlertEngine
    clock: FakeClock

    @property
    def fingerprint(self) -> str:
        return self.engine.firing()[0].fingerprint


async def start(token: str | None) -> tuple[web.AppRunner, Api]:
    clock = FakeClock(T0)
    book = SilenceBook()
    book.set_config(
        [Silence("config-abc", (Matcher("miner", "sim-009"),), 0.0, T0 + 86400, "rack", "cfg")]
    )
    engine = AlertEngine()
    engine.update(Evaluation([Signal(LABELS, {}, "1")], {("DeviceDead", "sim-001")}), T0)
    app = web.Application()
    app.add_routes(routes(book, engine.acknowledge, clock, token))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, Api(f"http://{HOST}:{port}", book, engine, clock)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    runner, made = await start(TOKEN)
    yield made
    await runner.cleanup()


@pytest.fixture
async def read_only() -> AsyncIterator[Api]:
    runner, made = await start(None)
    yield made
    await runner.cleanup()


async def call(
    method: str, url: str, body: Any = None, *, token: str | None = TOKEN, raw: bytes | None = None
) -> tuple[int, dict[str, Any], Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, url, json=body if raw is None else None, data=raw, headers=headers
        ) as response,
    ):
        return response.status, dict(response.headers), await response.json()


SILENCE = {
    "matchers": [{"name": "miner", "value": "sim-001", "isRegex": False}],
    "duration": "2h",
    "comment": "board swap",
    "createdBy": "alice",
    "maintenance": True,
}


async def test_reads_are_open_and_writes_need_the_token(api: Api) -> None:
    status, _, listing = await call("GET", api.url + "/api/silences", token=None)
    assert status == 200 and [s["id"] for s in listing["silences"]] == ["config-abc"]
    assert listing["cluster"] == {"shared": False, "error": None}

    for token, why in ((None, "Authorization: Bearer"), ("wrong", "wrong token")):
        status, headers, answer = await call(
            "POST", api.url + "/api/silences", SILENCE, token=token
        )
        assert status == 401 and why in answer["error"]
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, _, _ = await call("DELETE", api.url + "/api/silences/config-abc", token=token)
        assert status == 401
        status, _, _ = await call(
            "POST", f"{api.url}/api/alerts/{api.fingerprint}/ack", {"by": "x"}, token=token
        )
        assert status == 401
    assert api.book.list(T0) != [] and len(api.book.list(T0)) == 1  # nothing was made

    status, _, made = await call("POST", api.url + "/api/silences", SILENCE)
    assert status == 200, made
    silence = made["silence"]
    assert made["silenceID"] == silence["id"] and silence["maintenance"] is True
    assert silence["status"] == {"state": "active"} and silence["createdBy"] == "alice"
    assert api.book.in_maintenance({"miner": "sim-001"}, T0)
    assert silence["endsAt"].startswith("2027-01-15T10:00:00")  # T0 + 2h


async def test_a_daemon_without_a_token_is_read_only(read_only: Api) -> None:
    status, _, answer = await call("POST", read_only.url + "/api/silences", SILENCE)
    assert status == 403 and "read-only" in answer["error"]
    status, _, _ = await call(
        "POST", f"{read_only.url}/api/alerts/{read_only.fingerprint}/ack", {"by": "x"}
    )
    assert status == 403
    status, _, _ = await call("GET", read_only.url + "/api/silences")
    assert status == 200


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"matchers": []}, "non-empty list"),
        ({"matchers": [{"name": "miner"}]}, "needs a value"),
        ({"matchers": [{"name": "miner", "value": "(", "isRegex": True}]}, "invalid regex"),
        ({"matchers": [{"name": "miner", "value": "x", "isEqual": False}]}, "only = and =~"),
        ({"matchers": [{"name": "miner", "value": ".*", "isRegex": True}]}, "every alert"),
        ({"duration": None}, "give endsAt"),
        ({"endsAt": "2027-01-01T00:00:00Z"}, "one of them"),
        ({"duration": "soon"}, "not a duration"),
        ({"duration": -5}, "not negative"),
        ({"duration": 0}, "positive"),
        ({"duration": None, "endsAt": "tomorrow"}, "RFC 3339"),
        ({"duration": None, "endsAt": "2020-01-01T00:00:00Z"}, "not in the future"),
        ({"comment": ""}, "say why"),
        ({"comment": 5}, "must be text"),
        ({"maintenance": "yes"}, "true or false"),
    ],
)
async def test_bad_silences_get_400_saying_what_to_fix(
    api: Api, change: dict[str, Any], why: str
) -> None:
    body = {k: v for k, v in {**SILENCE, **change}.items() if v is not None}
    status, _, answer = await call("POST", api.url + "/api/silences", body)
    assert status == 400 and why in answer["error"], answer
    assert len(api.book.list(T0)) == 1


async def test_bodies_that_are_not_a_silence_get_400(api: Api) -> None:
    for raw, why in (
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b"", "send a JSON object"),
        (b" " * (MAX_BODY_BYTES + 1), "larger than"),
    ):
        status, _, answer = await call("POST", api.url + "/api/silences", raw=raw)
        assert status == 400 and why in answer["error"], (raw[:20], answer)


async def test_expire_unknown_config_and_known_silences(api: Api) -> None:
    status, _, answer = await call("DELETE", api.url + "/api/silences/ffffffff-0000")
    assert status == 404 and "no silence" in answer["error"]
    status, _, answer = await call("DELETE", api.url + "/api/silences/config-abc")
    assert status == 409 and "config file" in answer["error"]
    _, _, made = await call("POST", api.url + "/api/silences", SILENCE)
    api.clock.advance(60)
    status, _, answer = await call("DELETE", f"{api.url}/api/silences/{made['silenceID'][:8]}")
    assert status == 200 and answer["silence"]["status"] == {"state": "expired"}
    assert not api.book.in_maintenance({"miner": "sim-001"}, api.clock())


async def test_acknowledge_over_http(api: Api) -> None:
    url = f"{api.url}/api/alerts/{api.fingerprint}/ack"
    status, _, answer = await call("POST", url, {})
    assert status == 400 and "who" in answer["error"]
    status, _, answer = await call(
        "POST", f"{api.url}/api/alerts/0123456789abcdef/ack", {"by": "a"}
    )
    assert status == 404 and "no alert" in answer["error"]
    status, _, answer = await call("POST", url, {"by": "alice"})
    assert status == 200
    assert answer["alert"]["acknowledgedBy"] == "alice" and answer["alert"]["state"] == "firing"
    assert api.engine.firing()[0].acknowledged_by == "alice"
    api.engine.update(Evaluation([], {("DeviceDead", "sim-001")}), T0 + 60)  # resolves
    status, _, answer = await call("POST", url, {"by": "alice"})
    assert status == 409 and "resolved" in answer["error"]


# --- the CLI against the server --------------------------------------------------------------


def cli(*argv: str) -> Callable[[], int]:
    parser = argparse.ArgumentParser(prog="cgwatchdog")
    add_parsers(parser.add_subparsers())
    args = parser.parse_args(argv)

    def run() -> int:
        code: int = args.func(args)
        return code

    return run


async def test_the_cli_adds_lists_expires_and_acknowledges(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    where = ("--url", api.url, "--token-file", str(token_file))

    code = await asyncio.to_thread(
        cli("silence", "add", "miner=sim-001", "alertname=~Device.*", "--for", "2h",
            "--comment", "board swap", "--maintenance", "--author", "bob", *where)
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == EXIT_OK, out.err
    silence_id = out.out.strip()
    made = api.book.get(silence_id)
    assert made.maintenance and made.created_by == "bob" and made.comment == "board swap"
    assert [str(m) for m in made.matchers] == ['miner="sim-001"', 'alertname=~"Device.*"']

    assert await asyncio.to_thread(cli("silence", "list", "--url", api.url)) == EXIT_OK
    listing = capsys.readouterr().out
    assert silence_id[:8] in listing and "maintenance" in listing and "config-a" in listing

    code = await asyncio.to_thread(cli("silence", "expire", silence_id[:8], *where))
    assert code == EXIT_OK and f"expired {silence_id}" in capsys.readouterr().out
    assert not api.book.in_maintenance({"miner": "sim-001", "alertname": "DeviceDead"}, T0)

    code = await asyncio.to_thread(cli("ack", api.fingerprint, "--by", "carol", *where))
    assert code == EXIT_OK and "DeviceDead on sim-001" in capsys.readouterr().out
    assert api.engine.firing()[0].acknowledged_by == "carol"


async def test_cli_exit_codes(api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    add = ("silence", "add", "miner=sim-001", "--for", "1h", "--comment", "c")
    cases = [
        ((*add, "--url", api.url), EXIT_USAGE, "Authorization: Bearer"),  # no token
        ((*add, "--url", api.url, "--token-file", str(wrong)), EXIT_USAGE, "wrong token"),
        ((*add, "--url", api.url, "--token-file", str(tmp_path / "missing")), EXIT_USAGE,
         "cannot read the token file"),
        (("silence", "add", "miner", "--for", "1h", "--comment", "c", "--url", api.url),
         EXIT_USAGE, "not a matcher"),
        (("silence", "add", "miner=x", "--for", "1x", "--comment", "c", "--url", api.url),
         EXIT_USAGE, "not a duration"),
        (("silence", "expire", "ffffffff", "--url", api.url, "--token-file", str(wrong)),
         EXIT_USAGE, "wrong token"),
        (("silence", "list", "--url", "http://127.58.1.2:9"), EXIT_FAILURE,
         "cannot reach the daemon"),
    ]  # fmt: skip
    for argv, expected, why in cases:
        code = await asyncio.to_thread(cli(*argv))
        err = capsys.readouterr().err
        assert code == expected and why in err, (argv, code, err)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    code = await asyncio.to_thread(
        cli("silence", "expire", "ffffffff", "--url", api.url, "--token-file", str(token_file))
    )
    assert code == EXIT_FAILURE and "no silence" in capsys.readouterr().err


def test_the_token_comes_from_the_file_the_config_names(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "http-token").write_text(f"{TOKEN}\n")
    config = tmp_path / "config.yaml"
    config.write_text("http: {listen: '127.58.1.1:9841', token_file: secrets/http-token}\n")
    assert read_token(None, str(config), environ={}) == TOKEN
    # As the service sees it: a relative name in $CREDENTIALS_DIRECTORY first.
    credentials = tmp_path / "credentials"
    (credentials / "secrets").mkdir(parents=True)
    (credentials / "secrets" / "http-token").write_text("from-credentials")
    environ = {"CREDENTIALS_DIRECTORY": str(credentials)}
    assert read_token(None, str(config), environ=environ) == "from-credentials"
    assert read_token(str(credentials / "secrets" / "http-token"), None) == "from-credentials"
    config.write_text("http: {listen: '127.58.1.1:9841'}\n")
    assert read_token(None, str(config), environ={}) is None


# --- the status page's forms, through the endpoint's own write guard ---------------------------


async def test_the_status_page_forms_go_through_the_write_guard() -> None:
    from pydantic import SecretStr

    from cgwatchdog.web.auth import AUTH, CSRF_FIELD, SESSION_COOKIE, Auth, write_guard

    clock = FakeClock(T0)
    book = SilenceBook()
    engine = AlertEngine()
    engine.update(Evaluation([Signal(LABELS, {}, "1")], {("DeviceDead", "sim-001")}), T0)
    app = web.Application(middlewares=[write_guard])
    auth = Auth(SecretStr(TOKEN), clock)
    app[AUTH] = auth
    app.add_routes(routes(book, engine.acknowledge, clock, TOKEN))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, HOST, 0).start()
    url = f"http://{HOST}:{runner.addresses[0][1]}"
    session = auth.new_session()
    fp = engine.firing()[0].fingerprint
    form = {
        CSRF_FIELD: auth.csrf_token(session),
        "next": "/miners/sim-001",
        "matchers": "miner=sim-001",
        "for": "2h",
        "comment": "board swap",
        "maintenance": "1",
    }
    try:
        async with aiohttp.ClientSession(cookies={SESSION_COOKIE: session}) as client:
            async with client.post(url + "/api/silences", data=form, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/miners/sim-001"
            (made,) = book.active(T0)
            assert made.maintenance and made.created_by == "the status page"
            assert made.ends_at == T0 + 7200
            bad = {**form, "matchers": "miner", "next": "//evil.example/"}
            async with client.post(url + "/api/silences", data=bad, allow_redirects=False) as r:
                assert r.status == 400 and "not a matcher" in await r.text()
            ack = {CSRF_FIELD: auth.csrf_token(session), "next": "https://evil.example/"}
            async with client.post(
                f"{url}/api/alerts/{fp}/ack", data=ack, allow_redirects=False
            ) as r:
                assert r.status == 303 and r.headers["Location"] == "/"  # never off-site
            assert engine.firing()[0].acknowledged_by == "the status page"
            # Without the CSRF token the guard refuses before the route runs.
            forged = {k: v for k, v in form.items() if k != CSRF_FIELD}
            async with client.post(url + "/api/silences", data=forged, allow_redirects=False) as r:
                assert r.status == 403
        assert len(book.list(T0)) == 1
    finally:
        await runner.cleanup()
