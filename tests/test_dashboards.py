"""The Grafana dashboard and the alerting rules, against a real Prometheus scraping a
real daemon that watches the simulator.

All on 127.18.4.0/24: the simulated miners (.1), the daemon's endpoint (.2), a webhook
sink (.3) and Debian's ``/usr/bin/prometheus`` (.4), started here with a temporary
config and storage and a 1 s scrape interval, the rules file loaded. Every panel query
of ``dashboards/cgwatchdog-fleet.json`` is asked with its template variables filled in
as Grafana would (Grafana itself is not installable here) and must return data; the
template variables' own queries too; every metric a panel names is one the daemon
exports; ``promtool check rules`` and ``promtool test rules`` pass. The real daemon's
status page is checked on the way: the hashrate trend and the kept raw replies are fed.

CI installs ``prometheus`` (Debian; it brings promtool).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_httpserver import HTTPServer

from cgwatchdog.simulator import Fleet, make_scenario, serve
from tests.conftest import until

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "dashboards" / "cgwatchdog-fleet.json"
RULES = REPO / "dashboards" / "cgwatchdog-rules.yml"
RULE_TESTS = REPO / "dashboards" / "cgwatchdog-rules.test.yml"
PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
SIM, DAEMON, SINK, PROM = "127.18.4.1", "127.18.4.2", "127.18.4.3", "127.18.4.4"
# What Grafana would put in for the built-in variables; all sites and models.
VARIABLES = {"$__rate_interval": "15s", "$__range": "2m", "$__interval": "2s"}


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def need(binary: Path) -> None:
    if not binary.exists():
        pytest.skip(f"{binary} is missing (apt-get install prometheus)")


def fill(expr: str, site: str = ".*", model: str = ".*") -> str:
    expr = expr.replace("$site", site).replace("$model", model)
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", ())
    ]


# -- the dashboard as a document ---------------------------------------------------------------


def test_the_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "cgwatchdog_miner_info" in variables["site"]["definition"]
    assert "cgwatchdog_miner_info" in variables["model"]["definition"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for wanted in ("hashrate by site", "down", "hardware errors", "temperatures",
                   "alerts firing", "actions", "cycle duration", "delivery"):  # fmt: skip
        assert wanted in titles, wanted


def test_promtool_checks_and_tests_the_rules() -> None:
    need(PROMTOOL)
    check = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 11 rules found" in check.stdout
    tests = subprocess.run(
        [str(PROMTOOL), "test", "rules", RULE_TESTS.name],
        capture_output=True, text=True, timeout=60, cwd=RULE_TESTS.parent,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    names = {rule["alert"] for rule in rules}
    assert {"CgwatchdogDown", "CgwatchdogCyclesFailing", "CgwatchdogDeliveriesFailing",
            "CgwatchdogHeartbeatMissing"} <= names  # fmt: skip


# -- against a real Prometheus -----------------------------------------------------------------


@dataclass
class Stack:
    daemon_url: str
    prometheus_url: str
    daemon_log: Path
    prometheus_log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as answer:
            document = json.loads(answer.read())
        assert document["status"] == "success", document
        result: list[dict[str, Any]] = document["data"]["result"]
        return result

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.prometheus_url + path, timeout=10) as answer:
            return json.loads(answer.read())["data"]

    def page(self, path: str) -> str:
        request = urllib.request.Request(self.daemon_url + path, headers={"Host": "localhost"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return str(answer.read().decode())

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in (self.daemon_log, self.prometheus_log)
            if p.exists()
        )


@pytest.fixture
def sink() -> Iterator[HTTPServer]:
    server = HTTPServer(host=SINK, port=0)
    server.expect_request("/hook", method="POST").respond_with_data("ok")
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
async def stack(tmp_path: Path, sink: HTTPServer) -> AsyncIterator[Stack]:
    need(PROMETHEUS)
    fleet = Fleet.build(
        4,
        {make_scenario("device_dead", fail_after_s=0.5, device=1): 1},
        flavours=("cgminer", "antminer", "whatsminer", "braiins"),
        listen=SIM,
        base_port=0,
        clock=time.time,
    )
    processes: list[asyncio.subprocess.Process] = []
    async with serve(fleet):
        members = list(fleet)
        await fleet.set_mode(members[3].name, "down")
        http_port, prom_port = free_port(DAEMON), free_port(PROM)
        config = {
            "poll": {"interval": "500ms", "timeout": "400ms", "connect_timeout": "200ms",
                     "jitter": "0%"},
            "state_dir": str(tmp_path / "state"),
            "http": {"listen": f"{DAEMON}:{http_port}"},
            "miners": [
                {"name": m.name, "host": m.host, "port": m.port,
                 "labels": {"site": "north" if i < 2 else "south",
                            **({"model": "S19 (by the book)"} if i == 1 else {})}}
                for i, m in enumerate(members)
            ],
            "rules": [
                {"name": "DeviceDead", "type": "device_status", "status": ["Dead"], "for": "0s",
                 "severity": "critical", "actions": [{"do": "restart"}]},
                {"name": "MinerUnreachable", "type": "unreachable", "for": "0s",
                 "severity": "warning"},
            ],
            "receivers": [{"name": "hook", "webhook": {"url": sink.url_for("/hook")}}],
            "route": {"receiver": "hook", "group_wait": "0s", "group_interval": "1s"},
        }  # fmt: skip
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        daemon_log = tmp_path / "daemon.log"
        with daemon_log.open("wb") as out:
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "cgwatchdog", "run", "-c", str(tmp_path / "config.yaml"),
                    cwd=REPO, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )  # fmt: skip
        (tmp_path / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "cgwatchdog",
                            "static_configs": [{"targets": [f"{DAEMON}:{http_port}"]}],
                        }
                    ],
                }
            )
        )
        prometheus_log = tmp_path / "prometheus.log"
        with prometheus_log.open("wb") as out:
            processes.append(
                await asyncio.create_subprocess_exec(
                    str(PROMETHEUS),
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address={PROM}:{prom_port}",
                    "--log.level=warn",
                    stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                )
            )  # fmt: skip
        found = Stack(
            f"http://{DAEMON}:{http_port}", f"http://{PROM}:{prom_port}", daemon_log, prometheus_log
        )
        try:
            yield found
        finally:
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    async with asyncio.timeout(20):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def answered(stack: Stack, expr: str) -> list[dict[str, Any]]:
    try:
        return await asyncio.to_thread(stack.query, expr)
    except OSError:
        return []


async def test_every_panel_query_returns_data_from_a_real_prometheus(stack: Stack) -> None:
    logs = stack.logs

    async def ready() -> bool:
        return bool(await answered(stack, "count_over_time(cgwatchdog_cycles_total[30s]) >= 6"))

    await until("Prometheus to have scraped the daemon six times", ready, 40, context=logs)
    await until(
        "an action and a notification to be counted",
        lambda: _both(stack),
        30,
        context=logs,
    )
    # Every metric a panel names is one the daemon exports.
    exported = set(
        re.findall(r"^(cgwatchdog_\w+)", await asyncio.to_thread(stack.page, "/metrics"), re.M)
    )
    for title, expr in panel_queries():
        for name in re.findall(r"\bcgwatchdog_\w+", expr):
            assert name in exported, f"{title}: {name} is not exported"
    # Every panel query, as Grafana would send it, returns data.
    for title, expr in panel_queries():
        query = fill(expr)
        result = await until(
            f"data for {title!r}: {query}", lambda q=query: answered(stack, q), 20, context=logs
        )
        assert result, title
    # The template variables' own queries (label_values is Grafana's: this is its API call).
    sites = await asyncio.to_thread(
        stack.api, "/api/v1/label/site/values?match[]=cgwatchdog_miner_info"
    )
    assert sites == ["north", "south"]
    models = await asyncio.to_thread(
        stack.api,
        "/api/v1/label/model/values?"
        + urllib.parse.urlencode({"match[]": 'cgwatchdog_miner_info{site=~"north"}'}),
    )
    assert "S19 (by the book)" in models  # the operator's label wins over the detected one
    # One site chosen: only its series.
    by_site = next(expr for title, expr in panel_queries() if title == "Fleet hashrate by site")
    north = await answered(stack, fill(by_site, site="north"))
    assert [r["metric"].get("site") for r in north] == ["north"]
    down = next(expr for title, expr in panel_queries() if title == "Miners down by site")
    counts = {r["metric"]["site"]: float(r["value"][1]) for r in await answered(stack, fill(down))}
    assert counts == {"north": 0.0, "south": 1.0}
    # The rules are loaded and evaluate without error.
    groups = await asyncio.to_thread(stack.api, "/api/v1/rules")
    rules = [rule for group in groups["groups"] for rule in group["rules"]]
    assert len(rules) == 11
    assert all(rule["health"] == "ok" for rule in rules), [r.get("lastError") for r in rules]

    # The real daemon's status page is fed: the hour of hashrate, and the raw replies of
    # the miner that is alerting (and not of a healthy one).
    fleet_page = await asyncio.to_thread(stack.page, "/")
    assert re.search(r'<svg class="spark"[^>]*><path d="M', fleet_page)
    dead = await asyncio.to_thread(stack.page, "/miners/sim-001")
    assert "as the miner answered at" in dead and "DeviceDead" in dead
    healthy = await asyncio.to_thread(stack.page, "/miners/sim-003")
    assert "kept only for miners that are down or alerting" in healthy


async def _both(stack: Stack) -> bool:
    actions = await answered(stack, "cgwatchdog_actions_total")
    sent = await answered(stack, 'cgwatchdog_notifications_total{outcome="sent"} > 0')
    return bool(actions and sent)
