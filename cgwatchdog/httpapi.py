"""The daemon's local HTTP endpoint: /metrics, /healthz, /api/alerts.

A thin adapter over the daemon's state, in three parts:

- :class:`DaemonStatus` (what the loop last did) and :class:`Metrics` (prometheus-client
  collectors in an injected ``CollectorRegistry``), both updated by the daemon after each
  cycle; nothing here polls, evaluates or schedules.
- A sans-I/O HTTP/1.1 core: :func:`parse_request_head` turns the bytes of a request head
  into a :class:`Request` or raises :class:`HttpProblem` with the status to answer;
  :class:`Response` encodes an answer. Only GET and HEAD, no bodies, one request per
  connection (``Connection: close``): a scraper or ``cgwatchdog status`` needs no more.
- :class:`HttpApi`, whose :meth:`HttpApi.handle` serves one connection over asyncio
  streams with limits: a head past ``MAX_HEAD_BYTES`` gets 431, a client that has not
  sent its head within ``HEAD_TIMEOUT_S`` or does not read its answer within
  ``WRITE_TIMEOUT_S`` is dropped, and past ``MAX_CONNECTIONS`` new ones get 503. The
  daemon binds the port (``asyncio.start_server(api.handle, ...)``); this module never does.

``/metrics`` is rendered in a worker thread, from per-cycle snapshots that the loop
replaces wholesale and never mutates, so a scrape of 10,000 miners does not stall polling.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cgwatchdog import __version__
from cgwatchdog.alerts import Alert, AlertState
from cgwatchdog.notify.outbox import ReceiverCounters
from cgwatchdog.snapshot import PollResult, Snapshot
from cgwatchdog.units import iso_seconds

__all__ = [
    "HEAD_TIMEOUT_S",
    "HEALTHY_WITHIN_INTERVALS",
    "MAX_CONNECTIONS",
    "MAX_HEAD_BYTES",
    "WRITE_TIMEOUT_S",
    "DaemonStatus",
    "Health",
    "HttpApi",
    "HttpProblem",
    "Metrics",
    "Request",
    "Response",
    "alerts_document",
    "parse_request_head",
    "status_lines",
]

log = logging.getLogger("cgwatchdog.http")

# The request line and headers together; a scraper sends a few hundred bytes.
MAX_HEAD_BYTES: Final = 8192
# A client must send its whole head within this (slowloris) ...
HEAD_TIMEOUT_S: Final = 10.0
# ... and take its answer within this (a large /metrics to a slow reader).
WRITE_TIMEOUT_S: Final = 30.0
# Beyond this many open connections new ones get 503 at once; the endpoint is for a
# scraper and an operator, not for a crowd.
MAX_CONNECTIONS: Final = 64
# /healthz fails when no cycle finished within this many poll intervals: one late cycle
# is a slow fleet, three are a stuck daemon.
HEALTHY_WITHIN_INTERVALS: Final = 3

_ALLOWED_METHODS: Final = ("GET", "HEAD")
_TOKEN_CHARS: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_CYCLE_BUCKETS_S: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_JSON: Final = "application/json"
_TEXT: Final = "text/plain; charset=utf-8"


def _iso_or_none(epoch: float | None) -> str | None:
    return None if epoch is None else iso_seconds(epoch)


# -- the daemon's state, as the endpoint shows it -----------------------------------------


ROLES: Final = ("leader", "follower", "isolated")
"""The values of ``cluster.Role`` (kept apart: this module does not import the cluster)."""

RECENT_ACTIONS: Final = 50
"""Remediation events kept for /api/alerts (the full log is in the store)."""


@dataclass(slots=True)
class DaemonStatus:
    """What the daemon's loop last did; the daemon updates it, the endpoint reads it."""

    interval_s: float
    started_at: float
    shard: str = "1/1"
    replica: str | None = None
    role: str = "leader"
    cycles: int = 0
    last_cycle_at: float | None = None  # when the last completed cycle finished
    last_cycle_duration_s: float | None = None
    miners: int = 0
    miner_names: tuple[str, ...] = ()  # the miners this instance (its shard) polls
    up: int = 0
    outbox_depth: int = 0
    cycle_error: str | None = None  # the last cycle failed with this (a bug: see the log)
    store_error: str | None = None  # the state file failed at the last attempt
    config_error: str | None = None  # the last reload was refused
    delivery_problems: tuple[str, ...] = ()  # receivers failing, one line each
    stopping: bool = False
    recent_actions: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=RECENT_ACTIONS)
    )  # the newest remediation events, for /api/alerts and `cgwatchdog status`

    def record_actions(self, events: Iterable[Any]) -> None:
        """Keep the newest action events (``actions.ActionEvent``) for the endpoint."""
        for event in events:
            self.recent_actions.append(
                {"at": _iso_or_none(event.at), "miner": event.miner, "alertname": event.alertname,
                 "action": event.action, "outcome": event.kind.value, "detail": event.detail}
            )  # fmt: skip

    def health(self, now: float) -> Health:
        """Unhealthy (503) unless a cycle completed within ``HEALTHY_WITHIN_INTERVALS``
        intervals; otherwise degraded while notifications are not getting through, the
        state file fails or the last cycle failed; otherwise ok.

        Degraded still answers 200: the daemon watches and alerts what it can, and a
        restart would not mend a receiver or a disk. A refused reload is a warning: the
        old configuration keeps running.
        """
        degraded = (
            *self.delivery_problems,
            *(() if self.store_error is None else (f"state file: {self.store_error}",)),
            *(() if self.cycle_error is None else (f"last cycle failed: {self.cycle_error}",)),
        )
        warnings = () if self.config_error is None else (f"config reload: {self.config_error}",)
        limit_s = HEALTHY_WITHIN_INTERVALS * self.interval_s
        if self.stopping:
            return Health(False, "stopping", warnings, degraded)
        if self.last_cycle_at is None:
            waited = max(0.0, now - self.started_at)
            return Health(
                False,
                f"no cycle has completed yet (started {waited:.0f} s ago)",
                warnings,
                degraded,
            )
        age_s = now - self.last_cycle_at
        if age_s > limit_s:
            return Health(
                False,
                f"the last cycle completed {age_s:.0f} s ago, more than "
                f"{HEALTHY_WITHIN_INTERVALS} poll intervals ({limit_s:g} s)",
                warnings,
                degraded,
            )
        return Health(True, None, warnings, degraded)


@dataclass(frozen=True, slots=True)
class Health:
    """The /healthz verdict: ``reason`` says why not, ``warnings`` what deserves a look."""

    ok: bool
    reason: str | None
    warnings: tuple[str, ...] = ()
    degraded: tuple[str, ...] = ()
    """What works only in part (a receiver failing, the state file): one line each."""

    @property
    def state(self) -> str:
        """``ok``, ``degraded`` or ``unhealthy``, as /api/alerts and ``status`` say it."""
        if not self.ok:
            return "unhealthy"
        return "degraded" if self.degraded else "ok"

    def lines(self) -> list[str]:
        """The /healthz body: the verdict first, then each problem and warning."""
        head = {"ok": "ok", "degraded": None, "unhealthy": f"unhealthy: {self.reason}"}[self.state]
        return [
            *(() if head is None else (head,)),
            *(f"degraded: {text}" for text in self.degraded),
            *(f"warning: {text}" for text in self.warnings),
        ]


# -- metrics -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FleetView:
    """One cycle's figures for /metrics; replaced wholesale, never mutated."""

    results: tuple[PollResult, ...] = ()
    alerts_by_state: Mapping[str, int] = field(default_factory=dict)
    alerts_by_name: Mapping[tuple[str, str], int] = field(default_factory=dict)
    notifications: Mapping[str, ReceiverCounters] = field(default_factory=dict)


_ALERT_STATES: Final = (AlertState.PENDING, AlertState.FIRING, AlertState.RESOLVED)


class _FleetCollector(Collector):
    """Per-miner series, built at scrape time from the last cycle's results."""

    def __init__(self, view: Callable[[], _FleetView]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        view = self._view()
        up = GaugeMetricFamily(
            "cgwatchdog_miner_up", "1 if the miner answered the last poll", labels=["miner"]
        )
        hashrate = GaugeMetricFamily(
            "cgwatchdog_miner_hashrate_hashes_per_second",
            "Hashrate the miner reports (its shortest window), H/s",
            labels=["miner"],
        )
        hw_ratio = GaugeMetricFamily(
            "cgwatchdog_miner_hardware_error_ratio",
            "Hardware errors among work done since the miner started, 0..1",
            labels=["miner"],
        )
        temperature = GaugeMetricFamily(
            "cgwatchdog_miner_temperature_max_celsius",
            "Hottest temperature the miner reports",
            labels=["miner"],
        )
        device = GaugeMetricFamily(
            "cgwatchdog_device_status",
            "1 for the status each device (or board) reports",
            labels=["miner", "device", "status"],
        )
        pool = GaugeMetricFamily(
            "cgwatchdog_pool_status",
            "1 for the status each pool reports",
            labels=["miner", "pool", "status"],
        )
        pool_active = GaugeMetricFamily(
            "cgwatchdog_pool_active", "1 for the pool the miner mines on", labels=["miner", "pool"]
        )
        info = GaugeMetricFamily(
            "cgwatchdog_miner_info",
            "1 per miner, its firmware as recognised (join on miner for family labels)",
            labels=["miner", "family", "firmware_version", "model", "fork"],
        )
        for result in view.results:
            name = result.name
            if not isinstance(result, Snapshot):
                up.add_metric((name,), 0.0)
                if result.family is not None:
                    identity = (name, result.family, result.firmware_version or "", "", "")
                    info.add_metric(identity, 1.0)
                continue
            up.add_metric((name,), 1.0)
            info.add_metric(
                (name, result.family or "", result.firmware_version or "", result.model or "",
                 result.fork or ""),
                1.0,
            )  # fmt: skip
            if result.hashrate_hs is not None:
                hashrate.add_metric((name,), result.hashrate_hs)
            ratio = result.hardware_error_ratio
            if ratio is not None and math.isfinite(ratio):
                hw_ratio.add_metric((name,), ratio)
            if result.temperature_max_c is not None:
                temperature.add_metric((name,), result.temperature_max_c)
            for dev in result.devices:
                device.add_metric((name, str(dev.id), dev.status), 1.0)
            for p in result.pools:
                pool.add_metric((name, str(p.id), p.status), 1.0)
                pool_active.add_metric((name, str(p.id)), 1.0 if p.active else 0.0)
        yield from (up, info, hashrate, hw_ratio, temperature, device, pool, pool_active)

        by_state = GaugeMetricFamily("cgwatchdog_alerts", "Alerts by state", labels=["state"])
        for state in _ALERT_STATES:
            by_state.add_metric((state.value,), float(view.alerts_by_state.get(state.value, 0)))
        yield by_state
        by_name = GaugeMetricFamily(
            "cgwatchdog_alerts_by_alertname",
            "Alerts by alert name and state",
            labels=["alertname", "state"],
        )
        for (alertname, state_name), count in sorted(view.alerts_by_name.items()):
            by_name.add_metric((alertname, state_name), float(count))
        yield by_name

        notifications = CounterMetricFamily(
            "cgwatchdog_notifications",
            "Notification attempts by receiver: sent, failed (an attempt), dropped (given up)",
            labels=["receiver", "outcome"],
        )
        for receiver, counts in sorted(view.notifications.items()):
            notifications.add_metric((receiver, "sent"), float(counts.sent))
            notifications.add_metric((receiver, "failed"), float(counts.failed))
            notifications.add_metric((receiver, "dropped"), float(counts.dropped))
        yield notifications


class Metrics:
    """The daemon's prometheus-client metrics, registered in ``registry``.

    The daemon calls :meth:`observe_cycle` after each cycle and the ``record_*`` methods
    as things happen; :meth:`record_action` is the hook the actions module feeds.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._view = _FleetView()
        registry.register(_FleetCollector(lambda: self._view))
        self.cycles = Counter("cgwatchdog_cycles", "Cycles completed", registry=registry)
        self.cycle_failures = Counter(
            "cgwatchdog_cycle_failures",
            "Cycles that failed with an internal error",
            registry=registry,
        )
        self.slow_cycles = Counter(
            "cgwatchdog_slow_cycles",
            "Cycles that took longer than the poll interval",
            registry=registry,
        )
        self.cycle_duration = Histogram(
            "cgwatchdog_cycle_duration_seconds",
            "Wall time of one cycle: poll, evaluate, save",
            buckets=_CYCLE_BUCKETS_S,
            registry=registry,
        )
        self.last_cycle = Gauge(
            "cgwatchdog_last_cycle_timestamp_seconds",
            "When the last cycle completed",
            registry=registry,
        )
        self.miners = Gauge("cgwatchdog_miners", "Miners configured", registry=registry)
        self.miners_up = Gauge(
            "cgwatchdog_miners_up", "Miners that answered the last poll", registry=registry
        )
        self.poll_errors = Counter(
            "cgwatchdog_poll_errors",
            "Miners that gave no usable answer, per cycle, by kind",
            ["kind"],
            registry=registry,
        )
        self.outbox_depth = Gauge(
            "cgwatchdog_outbox_depth", "Notifications waiting in the outbox", registry=registry
        )
        self.pushes = Counter(
            "cgwatchdog_alertmanager_pushes",
            "Pushes of alert state to Alertmanager receivers",
            ["receiver", "result"],
            registry=registry,
        )
        self.actions = Counter(
            "cgwatchdog_actions",
            "Remediation steps by action and outcome",
            ["action", "outcome"],
            registry=registry,
        )
        self.store_errors = Counter(
            "cgwatchdog_store_errors", "Failures of the sqlite state file", registry=registry
        )
        self.store_healthy = Gauge(
            "cgwatchdog_store_healthy", "1 if the state file took the last write", registry=registry
        )
        self.reloads = Counter(
            "cgwatchdog_config_reloads",
            "Configuration reloads (SIGHUP) by result",
            ["result"],
            registry=registry,
        )
        self.reload_ok = Gauge(
            "cgwatchdog_config_last_reload_successful",
            "1 if the last reload was applied (or none was tried)",
            registry=registry,
        )
        self.role = Gauge(
            "cgwatchdog_role",
            "1 for the role this replica runs its cycles as (leader, follower, isolated)",
            ["role"],
            registry=registry,
        )
        self.heartbeat_pings = Counter(
            "cgwatchdog_heartbeat_pings",
            "Dead man's switch pings (heartbeat.url) by result",
            ["result"],
            registry=registry,
        )
        self.build = Gauge(
            "cgwatchdog_build_info", "The running version", ["version"], registry=registry
        )
        self.build.labels(version=__version__).set(1)
        self.store_healthy.set(1)
        self.reload_ok.set(1)

    def observe_cycle(
        self,
        results: Sequence[PollResult],
        alerts: Iterable[Alert],
        *,
        duration_s: float,
        finished_at: float,
        interval_s: float,
    ) -> None:
        """Take one completed cycle's figures."""
        by_state: dict[str, int] = {}
        by_name: dict[tuple[str, str], int] = {}
        for alert in alerts:
            state = alert.state.value
            by_state[state] = by_state.get(state, 0) + 1
            key = (alert.alertname, state)
            by_name[key] = by_name.get(key, 0) + 1
        errors: dict[str, int] = {}
        up = 0
        for result in results:
            if isinstance(result, Snapshot):
                up += 1
            else:
                errors[result.kind.value] = errors.get(result.kind.value, 0) + 1
        for kind, count in errors.items():
            self.poll_errors.labels(kind=kind).inc(count)
        self._view = _FleetView(tuple(results), by_state, by_name, self._view.notifications)
        self.cycles.inc()
        self.cycle_duration.observe(duration_s)
        if duration_s > interval_s:
            self.slow_cycles.inc()
        self.last_cycle.set(finished_at)
        self.miners.set(len(results))
        self.miners_up.set(up)

    def observe_outbox(self, depth: int, counters: Mapping[str, ReceiverCounters]) -> None:
        """The outbox's depth and per-receiver totals."""
        self.outbox_depth.set(depth)
        view = self._view
        self._view = _FleetView(
            view.results, view.alerts_by_state, view.alerts_by_name, dict(counters)
        )

    def record_action(self, name: str, outcome: str) -> None:
        """One remediation step (``restart``, ``exec``, ...) and how it ended."""
        self.actions.labels(action=name, outcome=outcome).inc()

    def record_push(self, receiver: str, ok: bool) -> None:
        """One push of alert state to an Alertmanager receiver."""
        self.pushes.labels(receiver=receiver, result="ok" if ok else "failed").inc()

    def record_role(self, role: str) -> None:
        """The role of this cycle: its series is 1, the other roles' 0."""
        for name in ROLES:
            self.role.labels(role=name).set(1 if name == role else 0)

    def record_heartbeat(self, ok: bool) -> None:
        """One ping of the dead man's switch."""
        self.heartbeat_pings.labels(result="ok" if ok else "failed").inc()

    def record_store(self, ok: bool) -> None:
        """Whether the state file took the last write."""
        if not ok:
            self.store_errors.inc()
        self.store_healthy.set(1 if ok else 0)

    def record_reload(self, ok: bool) -> None:
        """A configuration reload, applied or refused."""
        self.reloads.labels(result="ok" if ok else "failed").inc()
        self.reload_ok.set(1 if ok else 0)

    def record_cycle_failure(self) -> None:
        """A cycle that ended with an internal error."""
        self.cycle_failures.inc()


# -- /api/alerts -----------------------------------------------------------------------------


def _alert_entry(alert: Alert) -> dict[str, Any]:
    firing = alert.state is AlertState.FIRING
    since = alert.fired_at if firing and alert.fired_at is not None else alert.active_since
    if alert.state is AlertState.RESOLVED and alert.resolved_at is not None:
        since = alert.resolved_at
    return {
        "alertname": alert.alertname,
        "miner": alert.miner,
        "state": alert.state.value,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "value": alert.value,
        "since": _iso_or_none(since),
        "active_since": _iso_or_none(alert.active_since),
        "fingerprint": alert.fingerprint,
    }


_STATE_ORDER: Final = {AlertState.FIRING: 0, AlertState.PENDING: 1}


def alerts_document(status: DaemonStatus, alerts: Iterable[Alert], now: float) -> dict[str, Any]:
    """The /api/alerts object: health, the last cycle, and every firing or pending alert.

    ``since`` is when the alert entered its state (fired, or became pending). Keys may be
    added, none renamed (``cgwatchdog status`` and scripts read it).
    """
    health = status.health(now)
    shown = sorted(
        (a for a in alerts if a.state in _STATE_ORDER),
        key=lambda a: (_STATE_ORDER[a.state], a.alertname, a.miner, a.fingerprint),
    )
    firing = sum(1 for a in shown if a.state is AlertState.FIRING)
    age = None if status.last_cycle_at is None else round(max(0.0, now - status.last_cycle_at), 3)
    duration = status.last_cycle_duration_s
    return {
        "time": _iso_or_none(now),
        "version": __version__,
        "health": health.state,
        "reason": health.reason if not health.ok else "; ".join(health.degraded) or None,
        "degraded": list(health.degraded),
        "warnings": list(health.warnings),
        "last_cycle": {
            "finished_at": _iso_or_none(status.last_cycle_at),
            "age_s": age,
            "duration_s": None if duration is None else round(duration, 3),
        },
        "cycles": status.cycles,
        "interval_s": status.interval_s,
        "shard": status.shard,
        "replica": status.replica,
        "role": status.role,
        "miners": status.miners,
        "miner_names": list(status.miner_names),
        "up": status.up,
        "outbox_depth": status.outbox_depth,
        "firing": firing,
        "pending": len(shown) - firing,
        "alerts": [_alert_entry(a) for a in shown],
        "actions": list(status.recent_actions),
    }


def status_lines(document: Mapping[str, Any]) -> list[str]:
    """What ``cgwatchdog status`` prints for an /api/alerts document."""
    state = document.get("health")
    degraded = list(document.get("degraded") or ())
    if state == "ok":
        head = "ok"
    elif state == "degraded":
        head = f"DEGRADED ({len(degraded)} problem{'s' if len(degraded) != 1 else ''})"
    else:
        head = f"UNHEALTHY: {document.get('reason') or 'unknown reason'}"
    lines = [
        f"cgwatchdog {head}",
        f"{document.get('miners', 0):,} miners, {document.get('up', 0):,} up, "
        f"{document.get('firing', 0):,} firing, {document.get('pending', 0):,} pending, "
        f"outbox {document.get('outbox_depth', 0):,}",
    ]
    cycle = document.get("last_cycle") or {}
    if cycle.get("finished_at"):
        lines.append(
            f"last cycle: {cycle['finished_at']} ({cycle.get('age_s') or 0:.1f} s ago), "
            f"took {cycle.get('duration_s') or 0:.2f} s"
        )
    else:
        lines.append("last cycle: none yet")
    lines.append(
        f"shard {document.get('shard', '1/1')}, replica {document.get('replica') or '-'}, "
        f"role {document.get('role', '-')}"
    )
    lines += [f"degraded: {text}" for text in degraded]
    lines += [f"warning: {w}" for w in document.get("warnings") or ()]
    for alert in document.get("alerts") or ():
        if alert.get("state") != "firing":
            continue
        labels = alert.get("labels") or {}
        where = " ".join(f"{k}={labels[k]}" for k in ("device", "pool") if labels.get(k))
        parts = [
            "FIRING",
            str(alert.get("alertname", "")),
            str(alert.get("miner") or "-"),
            where,
            f"since {alert.get('since')}",
            str(alert.get("value") or ""),
        ]
        lines.append("  ".join(part for part in parts if part))
    for action in document.get("actions") or ():
        lines.append(
            f"ACTION  {action.get('at')}  {action.get('miner')}  {action.get('action')} "
            f"for {action.get('alertname')}: {action.get('outcome')}"
            + (f" ({action['detail']})" if action.get("detail") else "")
        )
    return lines


# -- HTTP, sans-I/O --------------------------------------------------------------------------


class HttpProblem(Exception):
    """A request that gets an error answer: ``status`` and a one-line ``message``."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status.value} {message}")


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None


def head_end(data: bytes) -> int | None:
    """Where the head in ``data`` ends (after its blank line), or None if it has not."""
    for marker in (b"\r\n\r\n", b"\n\n"):
        found = data.find(marker)
        if found >= 0:
            return found + len(marker)
    return None


def parse_request_head(data: bytes) -> Request:
    """Parse a request head (request line and headers, up to the blank line).

    Raises HttpProblem: 431 past MAX_HEAD_BYTES, 400 when malformed or when a body is
    announced on a GET, 405 for other methods, 505 for other HTTP versions.
    """
    if len(data) > MAX_HEAD_BYTES:
        raise HttpProblem(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"request head over {MAX_HEAD_BYTES} bytes"
        )
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise HttpProblem(HTTPStatus.BAD_REQUEST, "unreadable request") from None
    lines = text.replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpProblem(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    if not set(method) <= _TOKEN_CHARS:
        raise HttpProblem(HTTPStatus.BAD_REQUEST, "malformed method")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        if not version.startswith("HTTP/"):
            raise HttpProblem(HTTPStatus.BAD_REQUEST, "malformed request line")
        raise HttpProblem(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"{version} is not supported")
    if not target.startswith("/") or any(ord(c) <= 32 or ord(c) == 127 for c in target):
        raise HttpProblem(HTTPStatus.BAD_REQUEST, "malformed request target")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or not set(name) <= _TOKEN_CHARS:
            raise HttpProblem(HTTPStatus.BAD_REQUEST, "malformed header line")
        headers.append((name.lower(), value.strip()))
    request = Request(method, target, version, tuple(headers))
    if method not in _ALLOWED_METHODS:
        raise HttpProblem(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed: only GET")
    length = request.header("content-length")
    if request.header("transfer-encoding") is not None or (
        length is not None and length.strip() not in ("", "0")
    ):
        raise HttpProblem(HTTPStatus.BAD_REQUEST, "request bodies are not accepted")
    return request


@dataclass(frozen=True, slots=True)
class Response:
    """An answer: status, body and its content type, extra headers."""

    status: HTTPStatus
    body: bytes = b""
    content_type: str = _TEXT
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, status: HTTPStatus, text: str, *headers: tuple[str, str]) -> Response:
        """A plain-text answer (a newline is added)."""
        return cls(status, (text + "\n").encode(), _TEXT, headers)

    @classmethod
    def problem(cls, problem: HttpProblem) -> Response:
        """The answer to a refused request."""
        extra = (
            (("Allow", ", ".join(_ALLOWED_METHODS)),)
            if problem.status == HTTPStatus.METHOD_NOT_ALLOWED
            else ()
        )
        return cls.text(
            problem.status,
            f"{problem.status.value} {problem.status.phrase}: {problem.message}",
            *extra,
        )

    def encode(self, *, head_only: bool = False) -> bytes:
        """The bytes on the wire (HTTP/1.1, Connection: close)."""
        lines = [
            f"HTTP/1.1 {self.status.value} {self.status.phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


# -- the endpoint ---------------------------------------------------------------------------


_INDEX: Final = (
    "cgwatchdog\n"
    "  /metrics     Prometheus metrics\n"
    "  /healthz     200 while cycles complete (ok, or degraded: why), else 503 and why\n"
    "  /api/alerts  firing and pending alerts, health, last cycle (JSON)\n"
)


class HttpApi:
    """Serves /metrics, /healthz and /api/alerts from the daemon's state.

    ``alerts`` returns the engine's alerts (read on the event loop's thread, where the
    engine changes them); ``clock`` is the daemon's epoch clock.
    """

    def __init__(
        self,
        status: DaemonStatus,
        registry: CollectorRegistry,
        *,
        alerts: Callable[[], Iterable[Alert]],
        clock: Callable[[], float],
        head_timeout_s: float = HEAD_TIMEOUT_S,
        write_timeout_s: float = WRITE_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.status = status
        self.registry = registry
        self._alerts = alerts
        self._clock = clock
        self.head_timeout_s = head_timeout_s
        self.write_timeout_s = write_timeout_s
        self.max_connections = max_connections
        self._open = 0

    async def respond(self, request: Request) -> Response:
        """The answer to a well-formed GET or HEAD."""
        path = request.path
        if path == "/metrics":
            encoder, content_type = choose_encoder(request.header("accept") or "")
            body = await asyncio.to_thread(encoder, self.registry)
            return Response(HTTPStatus.OK, body, content_type)
        if path == "/healthz":
            health = self.status.health(self._clock())
            code = HTTPStatus.OK if health.ok else HTTPStatus.SERVICE_UNAVAILABLE
            return Response.text(code, "\n".join(health.lines()))
        if path == "/api/alerts":
            document = alerts_document(self.status, self._alerts(), self._clock())
            body = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
            return Response(HTTPStatus.OK, body, _JSON)
        if path == "/":
            return Response(HTTPStatus.OK, _INDEX.encode(), _TEXT)
        return Response.text(HTTPStatus.NOT_FOUND, f"404 Not Found: {path}")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection: one request, one answer, close."""
        self._open += 1
        try:
            if self._open > self.max_connections:
                await self._send(
                    writer, Response.text(HTTPStatus.SERVICE_UNAVAILABLE, "busy"), False
                )
                return
            try:
                async with asyncio.timeout(self.head_timeout_s):
                    head = await self._read_head(reader)
            except TimeoutError:
                await self._send(
                    writer,
                    Response.text(HTTPStatus.REQUEST_TIMEOUT, "request head too slow"),
                    False,
                )
                return
            if head is None:
                return  # the client left without asking
            try:
                request = parse_request_head(head)
            except HttpProblem as problem:
                await self._send(writer, Response.problem(problem), False)
                return
            try:
                response = await self.respond(request)
            except Exception:
                log.exception("internal error answering %s %s", request.method, request.path)
                response = Response.text(
                    HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the log)"
                )
            await self._send(writer, response, request.method == "HEAD")
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to tell anyone
        finally:
            self._open -= 1
            writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            except Exception:  # still not gone: drop whatever it has not read
                writer.transport.abort()

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
        """The head, or a too-long prefix of it (parse_request_head refuses it), or None."""
        data = b""
        while True:
            end = head_end(data)
            if end is not None:
                return data[:end]
            if len(data) > MAX_HEAD_BYTES:
                return data
            chunk = await reader.read(4096)
            if not chunk:
                return data if data.strip() else None
            data += chunk

    async def _send(
        self, writer: asyncio.StreamWriter, response: Response, head_only: bool
    ) -> None:
        writer.write(response.encode(head_only=head_only))
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await writer.drain()
        except TimeoutError:
            # A client that does not read its answer: close() would keep the socket and
            # the unsent answer until it does, uncounted by max_connections. Drop both.
            writer.transport.abort()
