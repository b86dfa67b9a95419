"""What the status page shows, computed from a cycle's figures: rows, totals, sparklines.

Pure: :class:`FleetView` is one cycle's figures as /metrics and the page read them; the
page handlers (``pages.py``) hand in the last one,
the alerts and the clock's ``now``; everything here sorts, filters, sums and formats,
and nothing escapes HTML (the templates do, every value).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from cgwatchdog.alerts import Alert, AlertState
from cgwatchdog.config import MinerConfig
from cgwatchdog.snapshot import PollResult, Snapshot
from cgwatchdog.units import format_duration, format_hashrate

__all__ = [
    "KEPT_REPLIES",
    "NO_SITE",
    "SITE_LABEL",
    "SORT_KEYS",
    "STATES",
    "AlertLine",
    "AlertRow",
    "FleetView",
    "MinerRow",
    "SiteTotal",
    "alert_counts",
    "alert_lines",
    "filter_rows",
    "miner_rows",
    "replies_worth_keeping",
    "site_totals",
    "sort_rows",
    "sparkline",
]

SITE_LABEL: Final = "site"
"""The miner label the page groups hashrate by (``labels: {site: north}``)."""
NO_SITE: Final = "(no site)"
STATES: Final = ("all", "up", "down", "alerting")
"""The state filter's choices."""
KEPT_REPLIES: Final = 256
"""The page shows the last raw replies of at most this many miners: a fleet-wide incident
must not make the daemon keep every miner's replies."""
SPARK_WIDTH: Final = 120
SPARK_HEIGHT: Final = 24


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert as /metrics shows it, copied when the cycle is observed."""

    alertname: str
    state: str
    severity: str
    miner: str
    device: str
    pool: str

    @classmethod
    def of(cls, alert: Alert) -> AlertRow:
        """The row of an engine alert (whose labels the engine changes later)."""
        labels = alert.labels
        return cls(
            alert.alertname,
            alert.state.value,
            labels.get("severity", ""),
            alert.miner,
            labels.get("device", ""),
            labels.get("pool", ""),
        )


@dataclass(frozen=True, slots=True)
class FleetView:
    """One cycle's figures for /metrics and the status page, replaced each cycle."""

    results: Sequence[PollResult] = ()
    """Each miner's result in the cycle's order. While the next cycle polls, a miner's
    new result takes its place here as it comes (``Metrics.take_result``), so one
    cycle's snapshots are alive at a time, not two; a reader that goes over it more than
    once copies it first."""
    miners: Mapping[str, MinerConfig] = field(default_factory=dict)
    alerts: tuple[AlertRow, ...] = ()
    identity: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """(model, fork) last seen of each miner, so a miner that is down still joins."""
    at: float | None = None
    serial: int = 0
    """Which view this is (each cycle's one more than the last): what is made from a view
    and kept (the /metrics body, the page's table) names it by this, never holds it, so
    that a cycle's snapshots are let go as soon as the next cycle's view replaces them."""


@dataclass(frozen=True, slots=True)
class MinerRow:
    """One miner as the fleet table shows it."""

    name: str
    address: str
    site: str
    labels: Mapping[str, str]
    up: bool
    family: str
    model: str
    hashrate_hs: float | None
    temperature_c: float | None
    fans_rpm: tuple[int, ...]
    pools: int
    pools_alive: int
    active_pool: str
    firing: int
    pending: int
    error: str | None
    uptime_s: float | None

    @property
    def alerting(self) -> bool:
        """Whether an alert of this miner is pending or firing."""
        return bool(self.firing or self.pending)

    @property
    def search_text(self) -> str:
        """What the filter box matches against, lower-cased."""
        words = [
            self.name,
            self.address,
            self.site,
            self.family,
            self.model,
            self.active_pool,
            *self.labels.values(),
            "up" if self.up else "down",
            "alerting" if self.alerting else "",
        ]
        return " ".join(words).lower()

    @property
    def hashrate_text(self) -> str:
        """``13.5 TH/s``, or ``-``."""
        return "-" if self.hashrate_hs is None else format_hashrate(self.hashrate_hs)

    @property
    def temperature_text(self) -> str:
        """``71 °C``, or ``-``."""
        return "-" if self.temperature_c is None else f"{self.temperature_c:.0f} °C"

    @property
    def fans_text(self) -> str:
        """``4 fans, min 5,400 rpm``, or ``-``."""
        if not self.fans_rpm:
            return "-"
        count = len(self.fans_rpm)
        return f"{count} fan{'s' if count != 1 else ''}, min {min(self.fans_rpm):,} rpm"


SORT_KEYS: Final = ("name", "site", "family", "model", "hashrate", "temperature", "fans", "alerts")
"""The columns the table sorts by."""


def _sort_value(row: MinerRow, key: str) -> tuple[int, float | str]:
    # Unknown values sort last whichever the direction: (1, ...) after (0, ...).
    if key == "hashrate":
        return (0, row.hashrate_hs) if row.hashrate_hs is not None else (1, 0.0)
    if key == "temperature":
        return (0, row.temperature_c) if row.temperature_c is not None else (1, 0.0)
    if key == "fans":
        return (0, float(min(row.fans_rpm))) if row.fans_rpm else (1, 0.0)
    if key == "alerts":
        return (0, float(row.firing * 1000 + row.pending))
    text = {"site": row.site, "family": row.family, "model": row.model}.get(key, row.name)
    return (0, text.lower()) if text else (1, "")


def sort_rows(rows: Sequence[MinerRow], key: str, *, descending: bool = False) -> list[MinerRow]:
    """Rows sorted by a column of ``SORT_KEYS`` (else by name), unknowns last, then by name."""
    if key not in SORT_KEYS:
        key = "name"
    by_name = sorted(rows, key=lambda r: r.name)
    known = [r for r in by_name if _sort_value(r, key)[0] == 0]
    unknown = [r for r in by_name if _sort_value(r, key)[0] == 1]
    known.sort(key=lambda r: _sort_value(r, key)[1], reverse=descending)
    return known + unknown


def filter_rows(rows: Iterable[MinerRow], query: str = "", state: str = "all") -> list[MinerRow]:
    """Rows whose text holds every word of ``query`` and whose state is ``state``."""
    words = query.lower().split()
    out = []
    for row in rows:
        if state == "up" and not row.up:
            continue
        if state == "down" and row.up:
            continue
        if state == "alerting" and not row.alerting:
            continue
        if words:
            text = row.search_text
            if not all(word in text for word in words):
                continue
        out.append(row)
    return out


def alert_counts(alerts: Iterable[Alert]) -> dict[str, tuple[int, int]]:
    """Firing and pending alerts per miner."""
    counts: dict[str, tuple[int, int]] = {}
    for alert in alerts:
        firing, pending = counts.get(alert.miner, (0, 0))
        if alert.state is AlertState.FIRING:
            counts[alert.miner] = (firing + 1, pending)
        elif alert.state is AlertState.PENDING:
            counts[alert.miner] = (firing, pending + 1)
    return counts


def miner_rows(
    view: FleetView, alerts: Iterable[Alert], *, counts: Mapping[str, tuple[int, int]] | None = None
) -> list[MinerRow]:
    """One row per miner of the last cycle, in the cycle's order (``counts``: the alerts
    already counted by :func:`alert_counts`)."""
    counts = alert_counts(alerts) if counts is None else counts
    rows = []
    no_labels: Mapping[str, str] = {}
    for result in view.results:
        config = view.miners.get(result.name)
        labels = config.labels if config is not None else no_labels
        firing, pending = counts.get(result.name, (0, 0))
        known_model, _ = view.identity.get(result.name, ("", ""))
        snapshot = result if isinstance(result, Snapshot) else None
        active = None if snapshot is None else snapshot.active_pool
        pools = () if snapshot is None else snapshot.pools
        rows.append(
            MinerRow(
                name=result.name,
                address=f"{result.host}:{result.port}",
                site=labels.get(SITE_LABEL, ""),
                labels=labels,
                up=snapshot is not None,
                family=result.family or "",
                model=labels.get("model")
                or (snapshot.model if snapshot is not None else None)
                or known_model,
                hashrate_hs=None if snapshot is None else _finite(snapshot.hashrate_hs),
                temperature_c=None if snapshot is None else _finite(snapshot.temperature_max_c),
                fans_rpm=() if snapshot is None else snapshot.fans_rpm,
                pools=len(pools),
                pools_alive=sum(1 for p in pools if p.status == "Alive"),
                active_pool="" if active is None else active.url,
                firing=firing,
                pending=pending,
                error=None if isinstance(result, Snapshot) else result.error,
                uptime_s=None if snapshot is None else _finite(snapshot.elapsed_s),
            )
        )
    return rows


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass(slots=True)
class SiteTotal:
    """One site's miners and hashrate."""

    site: str
    miners: int = 0
    up: int = 0
    hashrate_hs: float = 0.0
    share: float = 0.0  # of the largest site's hashrate, 0..1 (the bar's length)

    @property
    def hashrate_text(self) -> str:
        """The site's hashrate for people."""
        return format_hashrate(self.hashrate_hs)


def site_totals(rows: Iterable[MinerRow]) -> list[SiteTotal]:
    """Miners, miners up and hashrate per site (``NO_SITE`` for miners without one)."""
    sites: dict[str, SiteTotal] = {}
    for row in rows:
        name = row.site or NO_SITE
        total = sites.setdefault(name, SiteTotal(name))
        total.miners += 1
        total.up += row.up
        total.hashrate_hs += row.hashrate_hs or 0.0
    top = max((s.hashrate_hs for s in sites.values()), default=0.0)
    for total in sites.values():
        total.share = total.hashrate_hs / top if top > 0 else 0.0
    return sorted(sites.values(), key=lambda s: (s.site == NO_SITE, s.site))


@dataclass(frozen=True, slots=True)
class AlertLine:
    """A pending or firing alert as the page lists it."""

    fingerprint: str
    alertname: str
    miner: str
    state: str
    severity: str
    where: str  # "device ASC1", "pool 0", ""
    value: str
    summary: str
    since: float
    age_text: str
    labels: Mapping[str, str] = field(default_factory=dict)


def alert_lines(
    alerts: Iterable[Alert], now: float, *, miner: str | None = None
) -> list[AlertLine]:
    """Firing then pending alerts (of one miner, if given), oldest first, with their age."""
    out = []
    for alert in alerts:
        if alert.state not in (AlertState.FIRING, AlertState.PENDING):
            continue
        if miner is not None and alert.miner != miner:
            continue
        firing = alert.state is AlertState.FIRING
        since = alert.fired_at if firing and alert.fired_at is not None else alert.active_since
        labels = alert.labels
        where = " ".join(f"{k} {labels[k]}" for k in ("device", "pool") if labels.get(k))
        out.append(
            AlertLine(
                fingerprint=alert.fingerprint,
                alertname=alert.alertname,
                miner=alert.miner,
                state=alert.state.value,
                severity=labels.get("severity", ""),
                where=where,
                value=alert.value,
                summary=alert.annotations.get("summary", ""),
                since=since,
                age_text=format_duration(max(0.0, now - since)),
                labels=dict(labels),
            )
        )
    out.sort(key=lambda a: (a.state != "firing", a.since, a.alertname, a.miner))
    return out


def sparkline(values: Sequence[float | None], *, top: float | None = None) -> str:
    """An SVG path (``d``) drawing ``values`` left to right in a SPARK_WIDTH x
    SPARK_HEIGHT box, from 0 to ``top`` (default: their maximum); gaps where None."""
    known = [v for v in values if v is not None]
    if not known or len(values) < 2:
        return ""
    high = top if top is not None and top > 0 else max(known)
    if high <= 0:
        high = 1.0
    step = SPARK_WIDTH / (len(values) - 1)
    parts: list[str] = []
    drawing = False
    for index, value in enumerate(values):
        if value is None:
            drawing = False
            continue
        x = index * step
        y = SPARK_HEIGHT - 1 - (SPARK_HEIGHT - 2) * min(max(value / high, 0.0), 1.0)
        parts.append(f"{'L' if drawing else 'M'}{x:.1f} {y:.1f}")
        drawing = True
    return " ".join(parts)


def replies_worth_keeping(
    results: Iterable[PollResult], alerts: Iterable[Alert], limit: int = KEPT_REPLIES
) -> frozenset[str]:
    """The miners whose raw replies the poller should keep for the page next cycle: those
    with a firing alert, then pending, then those that were down (kept when they answer
    again), at most ``limit``; ``Poller.keep_replies`` is ``name in`` this set."""
    order = {AlertState.FIRING: 0, AlertState.PENDING: 1}
    alerting = sorted((order[a.state], a.miner) for a in alerts if a.state in order and a.miner)
    wanted = dict.fromkeys(
        [*(name for _, name in alerting), *(r.name for r in results if not r.up)]
    )
    return frozenset(list(wanted)[:limit])
