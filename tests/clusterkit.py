"""The harness of the scale-out end-to-end tests (tests/test_cluster_e2e.py).

Real parts only, all on 127.0.0.1 with free ports: an HTTP sink that records what it is
sent (:class:`Sink`), a cluster of Debian's ``prometheus-alertmanager`` processes that
gossip with each other (:class:`AlertmanagerCluster`), and ``cgwatchdog run`` instances
as subprocesses (:class:`Instance`). Every wait polls for a condition under a deadline
(:func:`until`); a window in which nothing may change is :func:`stays`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cgwatchdog.cluster import HEARTBEAT_ALERTNAME
from cgwatchdog.simulator import Fleet, SimulatedMiner, make_scenario
from cgwatchdog.units import parse_rfc3339
from tests.conftest import until
from tests.test_daemon import REPO, free_port
from tests.test_notify_alertmanager import ALERTMANAGER

__all__ = [
    "ALERTMANAGER",
    "AlertmanagerCluster",
    "AlertmanagerPeer",
    "Instance",
    "Notice",
    "Sink",
    "break_device",
    "logs_of",
    "stays",
    "until",
]

POLL_S = 0.05

# Alertmanager's HA is at-least-once; these settings make it once for the tests (which
# poll every second).
# Each peer flushes a group group_wait after the group's first alert arrives, then every
# group_interval. The first peer sends at once; the second waits peer-timeout, then
# sends unless the first peer's notification log entry for the same state has arrived
# by gossip. Both send, as seen under load, when
# - an alert's new state is pushed just as the groups flush, so that one peer's flush
#   sees it and the other's does not. Group timers start at a push, and pushes come
#   every poll interval: with group_wait 0 and group_interval a multiple of the
#   interval, every flush falls on a push of the replica that created the group. Hence
#   group_wait half an interval, and replicas of a shard kept in phase (align_phase);
# - peer-timeout is not well under group_interval: the first peer's next flush (a newer
#   state) lands before the second's check. Or not over a gossip round (tens of ms).
PEER_TIMEOUT_S = 1.0
GROUP_WAIT_S = 0.5
GROUP_INTERVAL_S = 2.0
CLUSTER_FLAGS = (
    f"--cluster.peer-timeout={PEER_TIMEOUT_S:g}s",
    "--cluster.gossip-interval=50ms",
    "--cluster.pushpull-interval=500ms",
    "--cluster.settle-timeout=3s",
    "--cluster.probe-interval=200ms",
    "--cluster.probe-timeout=100ms",
    "--cluster.reconnect-interval=1s",
)


async def _value(check: Callable[[], Any]) -> Any:
    found = check()
    if asyncio.iscoroutine(found) or isinstance(found, asyncio.Future):
        found = await found
    return found


async def stays(
    what: str,
    check: Callable[[], Any],
    window_s: float,
    *,
    context: Callable[[], str] = lambda: "",
) -> None:
    """Check that ``check`` holds throughout ``window_s`` (the time a duplicate would
    take to show up); fail at the first moment it does not."""
    deadline = time.monotonic() + window_s
    while True:
        if not await _value(check):
            pytest.fail(f"{what} stopped holding\n{context()}")
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(POLL_S)


# -- the sink ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """One alert inside one webhook body, as Alertmanager (or our webhook) sends it."""

    path: str
    alertname: str
    miner: str
    status: str
    sender: str  # the body's externalURL: which Alertmanager peer sent it
    at: float  # time.monotonic() of arrival


class Sink:
    """An HTTP server on 127.0.0.1 that answers 200 to everything and records it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notices: list[Notice] = []
        self._gets: list[tuple[str, float]] = []
        self.server = HTTPServer(host="127.0.0.1", port=0)
        self.server.expect_request(re.compile(r"/.*")).respond_with_handler(self._handle)

    def start(self) -> Sink:
        """Start serving in the server's own thread."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.server.port}"

    def _handle(self, request: Request) -> Response:
        now = time.monotonic()
        if request.method == "GET":
            with self._lock:
                self._gets.append((request.full_path.rstrip("?"), now))
            return Response("OK")
        body = json.loads(request.get_data() or b"{}")
        found = [
            Notice(
                request.path,
                str(alert["labels"].get("alertname", "")),
                str(alert["labels"].get("miner", "")),
                str(alert["status"]),
                str(body.get("externalURL", "")),
                now,
            )
            for alert in body.get("alerts", ())
        ]
        with self._lock:
            self._notices += found
        return Response("ok")

    def notices(
        self,
        path: str,
        alertname: str | None = None,
        miner: str | None = None,
        status: str | None = None,
    ) -> list[Notice]:
        """The alerts POSTed to ``path`` that match the given labels and status."""
        with self._lock:
            found = list(self._notices)
        return [
            n
            for n in found
            if n.path == path
            and (alertname is None or n.alertname == alertname)
            and (miner is None or n.miner == miner)
            and (status is None or n.status == status)
        ]

    def count(self, path: str, alertname: str, miner: str, status: str) -> int:
        """How many times ``alertname`` on ``miner`` arrived at ``path`` with ``status``."""
        return len(self.notices(path, alertname, miner, status))

    def gets(self, path_prefix: str = "/") -> list[tuple[str, float]]:
        """The GET requests (full path, arrival) whose path starts with ``path_prefix``."""
        with self._lock:
            return [(p, at) for p, at in self._gets if p.startswith(path_prefix)]


# -- the Alertmanager cluster -------------------------------------------------------------


def _get_json(url: str, timeout_s: float = 1.0) -> Any:
    """GET ``url`` and decode JSON; None when nothing answers."""
    try:
        response = requests.get(url, timeout=timeout_s)
    except requests.RequestException:
        return None
    if response.status_code != 200:
        return None
    return response.json()


@dataclass
class AlertmanagerPeer:
    """One ``prometheus-alertmanager`` process of the cluster."""

    process: subprocess.Popen[bytes]
    web_port: int
    cluster_port: int
    log: Path

    @property
    def url(self) -> str:
        """Its API's base URL, which is also its externalURL."""
        return f"http://127.0.0.1:{self.web_port}"

    def text(self) -> str:
        """What it logged so far."""
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=5)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 5 s), if it still runs."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _cluster_flags(port: int, others: Sequence[str], size: int) -> list[str]:
    if size == 1:
        return ["--cluster.listen-address="]
    return [
        f"--cluster.listen-address=127.0.0.1:{port}",
        f"--cluster.advertise-address=127.0.0.1:{port}",
        *others,
        *CLUSTER_FLAGS,
    ]


@dataclass
class AlertmanagerCluster:
    """Peers that gossip (silences, the notification log) and notify a webhook sink."""

    peers: list[AlertmanagerPeer]

    @classmethod
    def start(cls, tmp: Path, hook_url: str, size: int = 2) -> AlertmanagerCluster:
        """Start ``size`` peers, each listing every other as ``--cluster.peer`` (one
        peer: clustering off); the heartbeat and Watchdog alerts of cgwatchdog go to a
        receiver that does nothing, every other alert to ``hook_url`` in a group per
        (alertname, miner)."""
        config = tmp / "alertmanager.yml"
        config.write_text(
            "route:\n"
            "  receiver: sink\n"
            "  group_by: [alertname, miner]\n"
            f"  group_wait: {GROUP_WAIT_S * 1000:g}ms\n"
            f"  group_interval: {GROUP_INTERVAL_S:g}s\n"
            "  repeat_interval: 1h\n"
            "  routes:\n"
            "    - receiver: blackhole\n"
            "      matchers: ['alertname=~\"CgwatchdogHeartbeat|Watchdog\"']\n"
            "receivers:\n"
            "  - name: blackhole\n"
            "  - name: sink\n"
            "    webhook_configs:\n"
            f"      - url: {hook_url}\n"
            "        send_resolved: true\n"
        )
        ports = [(free_port(), free_port()) for _ in range(size)]
        peers = []
        for index, (web_port, cluster_port) in enumerate(ports):
            others = [f"--cluster.peer=127.0.0.1:{c}" for i, (_, c) in enumerate(ports) if i != index]
            log = tmp / f"alertmanager-{index + 1}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [
                        ALERTMANAGER,
                        f"--config.file={config}",
                        f"--storage.path={tmp / f'am-data-{index + 1}'}",
                        f"--web.listen-address=127.0.0.1:{web_port}",
                        f"--web.external-url=http://127.0.0.1:{web_port}",
                        *_cluster_flags(cluster_port, others, size),
                        "--log.level=info",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            peers.append(AlertmanagerPeer(process, web_port, cluster_port, log))
        return cls(peers)

    @property
    def urls(self) -> list[str]:
        """Every peer's base URL."""
        return [peer.url for peer in self.peers]

    def logs(self) -> str:
        """The tail of every peer's log."""
        return "\n".join(f"--- {p.url}\n{p.text()[-2000:]}" for p in self.peers)

    async def formed(self, timeout_s: float = 15.0) -> None:
        """Wait until every peer is ready and sees every peer in /api/v2/status."""
        size = len(self.peers)

        def ready() -> bool:
            for peer in self.peers:
                if peer.process.poll() is not None:
                    pytest.fail(f"alertmanager {peer.url} exited:\n{peer.text()}")
                status = _get_json(peer.url + "/api/v2/status")
                cluster = status.get("cluster", {}) if isinstance(status, dict) else {}
                if size == 1:
                    if cluster.get("status") != "disabled":
                        return False
                elif cluster.get("status") != "ready" or len(cluster.get("peers") or ()) != size:
                    return False
            return True

        await until(
            f"{size} Alertmanager peers to form a ready cluster",
            lambda: asyncio.to_thread(ready),
            timeout_s,
            context=self.logs,
        )

    def alerts(self, peer: AlertmanagerPeer, **matchers: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` of one peer with label equalities (empty when down)."""
        params = "&".join(f"filter={k}=%22{v}%22" for k, v in matchers.items())
        found = _get_json(f"{peer.url}/api/v2/alerts?{params}")
        return found if isinstance(found, list) else []

    def heartbeat_pushed_at(
        self, shard: str, replica: str, lifetime_s: float
    ) -> float | None:
        """When ``replica`` of ``shard`` last pushed its heartbeat (epoch s), read from
        its ``endsAt`` on the live peers, which the daemon sets ``lifetime_s`` ahead;
        None when no live peer holds it."""
        ends = [
            parse_rfc3339(alert.get("endsAt"))
            for peer in self.peers
            if peer.process.poll() is None
            for alert in self.alerts(peer, alertname=HEARTBEAT_ALERTNAME, shard=shard)
            if alert["labels"].get("replica") == replica
        ]
        known = [end for end in ends if end is not None]
        return max(known) - lifetime_s if known else None

    async def next_push(
        self, shard: str, replica: str, lifetime_s: float, after: float, timeout_s: float = 10.0
    ) -> float:
        """Wait for a heartbeat push of ``replica`` later than ``after`` (epoch s); its time."""

        async def pushed() -> float | None:
            found = await asyncio.to_thread(self.heartbeat_pushed_at, shard, replica, lifetime_s)
            return found if found is not None and found > after + 1e-3 else None

        found: float = await until(
            f"a heartbeat push of replica {replica}", pushed, timeout_s, context=self.logs
        )
        return found

    async def align_phase(
        self,
        follower: Instance,
        shard: str,
        leader_replica: str,
        follower_replica: str,
        *,
        offset_s: float,
        interval_s: float,
        lifetime_s: float,
        tolerance_s: float = 0.15,
    ) -> float:
        """Put ``follower``'s cycles ``offset_s`` after those of ``leader_replica``;
        return the offset measured from their heartbeat pushes afterwards.

        The follower is stopped (SIGSTOP) across one of its cycles and continued
        (SIGCONT) at the wanted instant: its loop, late, runs a cycle at once and keeps
        that phase (with ``poll.jitter`` 0). Fails after three tries.
        """
        measured = math.nan
        for _ in range(3):
            lead = await self.next_push(shard, leader_replica, lifetime_s, time.time())
            resume_at = lead + offset_s
            while resume_at < time.time() + interval_s + 0.05:  # it misses one cycle
                resume_at += interval_s
            follower.process.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(resume_at - time.time())  # an instant chosen, not a wait
            finally:
                follower.process.send_signal(signal.SIGCONT)
            pushed = await self.next_push(shard, follower_replica, lifetime_s, resume_at - 0.01)
            measured = (pushed - lead) % interval_s
            if abs(measured - offset_s) <= tolerance_s:
                return measured
        pytest.fail(
            f"could not put replica {follower_replica} {offset_s:g} s after "
            f"{leader_replica} (last measured {measured:.2f} s)"
        )

    def stop(self) -> None:
        """Stop every peer still running."""
        for peer in self.peers:
            peer.stop()


# -- cgwatchdog instances -----------------------------------------------------------------


@dataclass
class Instance:
    """One ``cgwatchdog run`` subprocess with its own state dir and HTTP port."""

    label: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(
        cls,
        config: Path,
        tmp: Path,
        label: str,
        *,
        shard: str | None = None,
        replica: str | None = None,
        global_flags: Sequence[str] = (),
    ) -> Instance:
        """Start ``python -m cgwatchdog [GLOBAL_FLAGS] run -c CONFIG`` with the instance
        flags, its own ``--state-dir`` and ``--listen`` on a free port."""
        port = free_port()
        state = tmp / f"state-{label}"
        argv = [sys.executable, "-m", "cgwatchdog", *global_flags, "run", "-c", str(config)]
        if shard is not None:
            argv += ["--shard", shard]
        if replica is not None:
            argv += ["--replica", replica]
        argv += ["--state-dir", str(state), "--listen", f"127.0.0.1:{port}"]
        log = tmp / f"cgwatchdog-{label}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=_child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        return cls(label, process, port, log)

    def text(self) -> str:
        """Its stderr so far."""
        return self.log.read_text(errors="replace")

    @property
    def running(self) -> bool:
        """Whether the process has not exited."""
        return self.process.poll() is None

    async def document(self) -> dict[str, Any] | None:
        """Its /api/alerts, or None when it does not answer; fails the test when the
        process has exited (it is only asked while it should run)."""
        if self.process.poll() is not None:
            pytest.fail(f"{self.label} exited with {self.process.returncode}:\n{self.text()}")
        found = await asyncio.to_thread(_get_json, f"http://127.0.0.1:{self.port}/api/alerts")
        return found if isinstance(found, dict) else None

    async def field(self, name: str) -> Any:
        """One field of /api/alerts (None when it does not answer)."""
        document = await self.document()
        return None if document is None else document.get(name)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=5)

    async def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, then wait for the exit code."""
        self.process.send_signal(signal.SIGTERM)
        await until(
            f"{self.label} to exit after SIGTERM",
            lambda: self.process.poll() is not None,
            timeout_s,
            context=self.text,
        )
        return int(self.process.returncode)

    def cleanup(self) -> None:
        """SIGKILL if it still runs (the end of a test, whatever happened)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _child_env() -> dict[str, str]:
    # Not under systemd here: no sd_notify socket, logs as plain text on stderr.
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def logs_of(instances: Iterable[Instance], tail: int = 3000) -> str:
    """The tail of every instance's stderr, for a failure message."""
    return "\n".join(f"--- {i.label}\n{i.text()[-tail:]}" for i in instances)


# -- the simulator --------------------------------------------------------------------------


def break_device(fleet: Fleet, name: str, device: int = 1) -> SimulatedMiner:
    """From now on, device ``device`` of miner ``name`` is Dead until the miner restarts.

    The member gets a new simulated miner of the same flavour, seed and uptime whose
    ``device_dead`` fault starts at once (and, as that scenario does, is repaired by a
    restart); its ``restarts`` counts the restarts from now on. Returns it.
    """
    member = fleet[name]
    old = member.miner
    now = fleet.clock()
    miner = SimulatedMiner(
        name,
        old.flavour,
        make_scenario("device_dead", fail_after_s=0.0, device=device),
        now=now,
        seed=old.seed,
        uptime_s=float(old.elapsed_s(now)),
        restart_downtime_s=old.restart_downtime_s,
    )
    member.miner = miner
    return miner
