"""What the daemon's loop last did, as the endpoint tells it: health and /api/alerts.

:class:`DaemonStatus` is updated by the daemon after each cycle and read by the
endpoint; :class:`Health` is the /healthz verdict (ok, degraded or unhealthy);
:func:`alerts_document` is the /api/alerts object and :func:`status_lines` what
``cgwatchdog status`` prints of it. No I/O: the clock is an argument.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cgwatchdog import __version__
from cgwatchdog.alerts import Alert, AlertState
from cgwatchdog.units import iso_seconds

__all__ = [
    "HEALTHY_WITHIN_INTERVALS",
    "RECENT_ACTIONS",
    "ROLES",
    "DaemonStatus",
    "Health",
    "alerts_document",
    "status_lines",
]

# /healthz fails when no cycle finished within this many poll intervals: one late cycle
# is a slow fleet, three are a stuck daemon.
HEALTHY_WITHIN_INTERVALS: Final = 3


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
