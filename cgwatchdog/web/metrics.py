"""/metrics: the daemon's own series and the fleet's, in Prometheus' formats.

Two parts, one scrape:

- :class:`Metrics` holds the daemon's counters and gauges (cycles, actions,
  notifications, ...) in an injected ``CollectorRegistry``; rendered at each scrape
  by prometheus-client, a few dozen lines, without ``*_created`` series.
- The fleet's series (``SERIES``: per miner, per device, per pool, per alert) are
  rendered by :func:`render_fleet` straight to bytes, a few thousand lines at a time,
  once per cycle and only when scraped. :meth:`Metrics.exposition` keeps them per format
  until the next cycle as a gzip stream (:class:`FleetBody`), each chunk compressed as soon
  as it is rendered: at 10,000 miners the 13.6 MB text is kept as about 0.9 MB and never
  exists whole. A scraper that takes gzip (Prometheus does) gets those bytes as they
  are; any other gets them inflated one piece at a time as they are written
  (``benchmarks/scrape.py`` measures both).

The fleet's figures come from :meth:`Metrics.observe_cycle`, which takes each cycle's
results, the miners' configuration (their labels join through ``cgwatchdog_miner_info``)
and the alerts, copied: the engine changes its alerts in place after the call. While
the next cycle polls, :meth:`Metrics.take_result` puts each miner's new result in place
of its last, so only one cycle's snapshots are kept at a time: a scrape or a page
between a cycle's start and its end shows each miner as it last answered.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Final, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _text_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as _openmetrics_latest
from prometheus_client.registry import Collector

from cgwatchdog import __version__
from cgwatchdog.alerts import Alert, AlertState
from cgwatchdog.config import MinerConfig
from cgwatchdog.notify.outbox import ReceiverCounters
from cgwatchdog.snapshot import Device, PollResult, Snapshot
from cgwatchdog.web.fleetview import AlertRow, FleetView
from cgwatchdog.web.status import ROLES

__all__ = [
    "OPENMETRICS",
    "SERIES",
    "TEXT",
    "AlertRow",
    "Body",
    "Chunks",
    "FleetBody",
    "FleetView",
    "Metrics",
    "Series",
    "fleet_families",
    "render_fleet",
    "series_budget",
]

TEXT: Final = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_CYCLE_BUCKETS_S: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# The labels cgwatchdog_miner_info carries of its own; a miner's configured label of the
# same name wins (the operator knows the model better than a misreporting firmware).
INFO_LABELS: Final = ("host", "family", "model", "firmware_version", "fork")

Chunks = tuple[bytes, ...]
"""An exposition in pieces, in order: ``b"".join(chunks)`` is the whole text."""

GZIP_LEVEL: Final = 1
"""zlib's fastest level: at 10,000 miners it turns the fleet's 13.6 MB into 0.90 MB for
0.02 s of CPU; level 6 would make it 0.77 MB for 0.05 s (``benchmarks/scrape.py``)."""
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS  # a gzip header and trailer, not zlib's
LINES_A_CHUNK: Final = 2048
"""Sample lines rendered into one chunk (about 200 KB of text): a render holds one
chunk's lines at a time, never a whole family's (30,000 lines for the largest at 10,000
miners)."""


@dataclass(frozen=True, slots=True, eq=False)
class FleetBody:
    """The fleet's families of one cycle in one format, as the start of a gzip stream.

    ``pieces`` are what the compressor gave out so far; the stream is left open in
    ``compressor`` so that each scrape can end a copy of it with the daemon's own
    families (which change between cycles) and every answer is one gzip member. The view
    is named by its serial, not held: its snapshots go when the next cycle's replace it."""

    serial: int  # the view's (see FleetView.serial)
    per_device: bool
    pieces: Chunks
    text_bytes: int  # the fleet's families as text, uncompressed
    compressor: zlib._Compress

    def finish(self, tail: bytes) -> bytes:
        """The rest of the gzip stream when ``tail`` is the text that follows the fleet's."""
        ending = self.compressor.copy()  # copy() takes the compressor's own lock
        return ending.compress(tail) + ending.flush()


@dataclass(frozen=True, slots=True)
class Body:
    """A whole /metrics answer: its bytes in order (gzip-encoded when ``compressed``) and
    their number, known before the first is written. Iterating gives the bytes; plain
    text is inflated one piece at a time as it is asked for, never whole."""

    compressed: bool
    length: int
    gzip_pieces: Chunks

    def __iter__(self) -> Iterator[bytes]:
        if self.compressed:
            yield from self.gzip_pieces
            return
        inflate = zlib.decompressobj(_GZIP_WBITS)
        for piece in self.gzip_pieces:
            text = inflate.decompress(piece)
            if text:
                yield text
        rest = inflate.flush()
        if rest:
            yield rest


@dataclass(frozen=True, slots=True)
class Series:
    """One fleet metric family: what it is, and how many series a miner adds."""

    name: str
    kind: str  # "gauge" or "counter" (a counter's samples end in _total)
    labels: tuple[str, ...]
    help: str
    count: str  # how many series, in words (for the docs)
    typical: int  # series for a typical miner: 3 devices, 3 pools, 4 fans, no alert
    per_device: bool = False  # only with http.per_device_metrics

    @property
    def sample(self) -> str:
        """The sample name: a counter's ends in ``_total``."""
        return f"{self.name}_total" if self.kind == "counter" else self.name


SERIES: Final = (
    Series("cgwatchdog_miner_up", "gauge", ("miner",),
           "1 if the miner answered the last poll", "1", 1),
    Series("cgwatchdog_miner_info", "gauge", ("miner", *INFO_LABELS, "<the miner's labels>"),
           "1 per miner, to join on: its address, firmware as recognised, and its configured labels",
           "1", 1),
    Series("cgwatchdog_miner_hashrate_hashes_per_second", "gauge", ("miner",),
           "Hashrate the miner reports (its shortest window), H/s", "1", 1),
    Series("cgwatchdog_miner_hardware_error_ratio", "gauge", ("miner",),
           "Hardware errors among work done since the miner started, 0..1", "1", 1),
    Series("cgwatchdog_miner_temperature_max_celsius", "gauge", ("miner",),
           "Hottest temperature the miner reports", "1", 1),
    Series("cgwatchdog_miner_uptime_seconds", "gauge", ("miner",),
           "Seconds since the mining process started (cgminer Elapsed)", "1", 1),
    Series("cgwatchdog_miner_fan_speed_min_rpm", "gauge", ("miner",),
           "Speed of the slowest fan the miner reports", "1 if it reports fans", 1),
    Series("cgwatchdog_pool_shares", "counter", ("miner", "pool", "result"),
           "Shares of the active pool by result (accepted, rejected, stale), as the miner counts them",
           "3 (the active pool only)", 3),
    Series("cgwatchdog_pool_status", "gauge", ("miner", "pool", "status"),
           "1 for the status each pool reports", "1 per pool", 3),
    Series("cgwatchdog_pool_active", "gauge", ("miner", "pool"),
           "1 for the pool the miner mines on", "1 per pool", 3),
    Series("cgwatchdog_device_status", "gauge", ("miner", "device", "status"),
           "1 for the status each device (or board) reports", "1 per device", 3),
    Series("cgwatchdog_device_hashrate_hashes_per_second", "gauge", ("miner", "device"),
           "Hashrate of each device (or board), H/s", "1 per device", 3, per_device=True),
    Series("cgwatchdog_device_temperature_celsius", "gauge", ("miner", "device"),
           "Temperature of each device (or board)", "1 per device", 3, per_device=True),
    Series("cgwatchdog_fan_speed_rpm", "gauge", ("miner", "fan"),
           "Speed of each fan", "1 per fan", 4, per_device=True),
    Series("cgwatchdog_alert", "gauge",
           ("alertname", "alertstate", "severity", "miner", "device", "pool"),
           "1 per pending or firing alert, like Prometheus' ALERTS", "1 per alert", 0),
)  # fmt: skip
"""The fleet's metric families, in the order they are exposed."""

# -- rendering the fleet's families -----------------------------------------------------------


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _head(series: Series, openmetrics: bool) -> str:
    shown = series.name if openmetrics else series.sample
    return f"# HELP {shown} {series.help}\n# TYPE {shown} {series.kind}\n"


_NO_LABELS: Final[Mapping[str, str]] = {}
_UNKNOWN: Final = ("", "")

_InfoKey = tuple[str, str, str, str, tuple[tuple[str, str], ...]]
InfoCache = dict[_InfoKey, str]
"""The text of ``cgwatchdog_miner_info`` after ``host`` (family, model, firmware and
fork as shown, then the configured labels), by what it is made of: most miners share
one (a rack's, a model's), so the cache holds a few texts rather than one a miner."""


def _info_line(
    m: str, result: PollResult, miner: MinerConfig | None, known: tuple[str, str],
    cache: InfoCache, fresh: InfoCache,
) -> str:  # fmt: skip
    """The miner's info line: its ``miner="..."`` text ``m``, its host, and the rest of
    the labels from the text it shares with miners alike (``fresh`` gets what it used)."""
    model, fork = known
    if isinstance(result, Snapshot):
        model, fork = result.model or model, result.fork or fork
    family = result.family or ""
    firmware = result.firmware_version or ""
    labels = _NO_LABELS if miner is None else miner.labels
    key = (family, firmware, model, fork, tuple(labels.items()))
    text = fresh.get(key) or cache.get(key)
    if text is None:
        shown = {"family": family, "model": model, "firmware_version": firmware, "fork": fork}
        for label, value in labels.items():
            if label != "host" and not label.startswith("__"):  # "__": Prometheus'
                shown[label] = value
        text = "".join(f',{label}="{_escape(value)}"' for label, value in shown.items())
    fresh[key] = text
    host = labels.get("host", result.host)  # a configured host label wins
    return f'cgwatchdog_miner_info{{{m},host="{_escape(host)}"{text}}} 1\n'


class _Fleet(NamedTuple):
    """What one render writes from: the miners' results and label texts, the answered
    ones, the info lines and the alerts."""

    results: Sequence[PollResult]
    texts: list[str]  # each result's ``miner="..."``
    answered: list[tuple[str, Snapshot]]
    info: Iterable[str]  # made as the info family is written
    alerts: Sequence[AlertRow]


def _up(f: _Fleet) -> Iterator[str]:
    for result, m in zip(f.results, f.texts, strict=True):
        yield f"cgwatchdog_miner_up{{{m}}} {1 if isinstance(result, Snapshot) else 0}\n"


def _miner_gauge(
    sample: str, read: Callable[[Snapshot], float | None]
) -> Callable[[_Fleet], Iterator[str]]:
    """A family of one sample a miner: what ``read`` gives, where known and finite."""

    def lines(f: _Fleet) -> Iterator[str]:
        for m, s in f.answered:
            value = read(s)
            if value is not None and math.isfinite(value):
                yield f"{sample}{{{m}}} {value!r}\n"

    return lines


def _device_gauge(
    sample: str, read: Callable[[Device], float | None]
) -> Callable[[_Fleet], Iterator[str]]:
    """A family of one sample a device: what ``read`` gives, where known and finite."""

    def lines(f: _Fleet) -> Iterator[str]:
        for m, s in f.answered:
            for d in s.devices:
                value = read(d)
                if value is not None and math.isfinite(value):
                    yield f'{sample}{{{m},device="{d.id}"}} {float(value)!r}\n'

    return lines


def _as_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _fan_min(f: _Fleet) -> Iterator[str]:
    for m, s in f.answered:
        if s.fans_rpm:
            yield f"cgwatchdog_miner_fan_speed_min_rpm{{{m}}} {min(s.fans_rpm)}\n"


def _pool_shares(f: _Fleet) -> Iterator[str]:
    for m, s in f.answered:
        for p in s.pools:
            if p.active:
                pool = f'{m},pool="{p.id}"'
                yield (
                    f'cgwatchdog_pool_shares_total{{{pool},result="accepted"}} {p.accepted}\n'
                    f'cgwatchdog_pool_shares_total{{{pool},result="rejected"}} {p.rejected}\n'
                    f'cgwatchdog_pool_shares_total{{{pool},result="stale"}} {p.stale}\n'
                )


def _pool_status(f: _Fleet) -> Iterator[str]:
    for m, s in f.answered:
        for p in s.pools:
            yield f'cgwatchdog_pool_status{{{m},pool="{p.id}",status="{_escape(p.status)}"}} 1\n'


def _pool_active(f: _Fleet) -> Iterator[str]:
    for m, s in f.answered:
        for p in s.pools:
            yield f'cgwatchdog_pool_active{{{m},pool="{p.id}"}} {1 if p.active else 0}\n'


def _device_status(f: _Fleet) -> Iterator[str]:
    for m, s in f.answered:
        for d in s.devices:
            yield f'cgwatchdog_device_status{{{m},device="{d.id}",status="{_escape(d.status)}"}} 1\n'


def _fans(f: _Fleet) -> Iterator[str]:
    for m, s in f.answered:
        for index, rpm in enumerate(s.fans_rpm):
            yield f'cgwatchdog_fan_speed_rpm{{{m},fan="{index}"}} {rpm}\n'


def _alerts(f: _Fleet) -> Iterator[str]:
    for a in f.alerts:
        yield (
            f'cgwatchdog_alert{{alertname="{_escape(a.alertname)}",alertstate="{a.state}",'
            f'severity="{_escape(a.severity)}",miner="{_escape(a.miner)}",'
            f'device="{_escape(a.device)}",pool="{_escape(a.pool)}"}} 1\n'
        )


_WRITERS: Final[dict[str, Callable[[_Fleet], Iterable[str]]]] = {
    "cgwatchdog_miner_up": _up,
    "cgwatchdog_miner_info": lambda f: f.info,
    "cgwatchdog_miner_hashrate_hashes_per_second": _miner_gauge(
        "cgwatchdog_miner_hashrate_hashes_per_second", lambda s: s.hashrate_hs
    ),
    "cgwatchdog_miner_hardware_error_ratio": _miner_gauge(
        "cgwatchdog_miner_hardware_error_ratio", lambda s: _as_float(s.hardware_error_ratio)
    ),
    "cgwatchdog_miner_temperature_max_celsius": _miner_gauge(
        "cgwatchdog_miner_temperature_max_celsius", lambda s: s.temperature_max_c
    ),
    "cgwatchdog_miner_uptime_seconds": _miner_gauge(
        "cgwatchdog_miner_uptime_seconds", lambda s: s.elapsed_s
    ),
    "cgwatchdog_miner_fan_speed_min_rpm": _fan_min,
    "cgwatchdog_pool_shares": _pool_shares,
    "cgwatchdog_pool_status": _pool_status,
    "cgwatchdog_pool_active": _pool_active,
    "cgwatchdog_device_status": _device_status,
    "cgwatchdog_device_hashrate_hashes_per_second": _device_gauge(
        "cgwatchdog_device_hashrate_hashes_per_second", lambda d: d.hashrate_hs
    ),
    "cgwatchdog_device_temperature_celsius": _device_gauge(
        "cgwatchdog_device_temperature_celsius", lambda d: d.temperature_c
    ),
    "cgwatchdog_fan_speed_rpm": _fans,
    "cgwatchdog_alert": _alerts,
}
"""Each family's sample lines, by family name (one for each of ``SERIES``)."""


def render_fleet(
    view: FleetView, *, openmetrics: bool, per_device: bool, cache: InfoCache | None = None
) -> Chunks:
    """The fleet's families as exposition text (without OpenMetrics' ``# EOF``), in
    ``SERIES`` order, as :func:`fleet_families` cuts it into chunks."""
    return tuple(
        fleet_families(view, openmetrics=openmetrics, per_device=per_device, cache=cache)
    )


def fleet_families(
    view: FleetView, *, openmetrics: bool, per_device: bool, cache: InfoCache | None = None
) -> Iterator[bytes]:
    """The fleet's families as exposition text in ``SERIES`` order, in bytes chunks of
    at most ``LINES_A_CHUNK`` sample lines (a family's header starts its first chunk),
    each made when the one before has been taken.

    Only one chunk's lines exist at a time, a few thousand small strings rather than a
    family's tens of thousands at 10,000 miners (or the fleet's 190,000): the render
    raises the process's peak by little, and fewer of them are left scattered among
    long-lived objects, which would keep the allocator's memory from being reused
    (``benchmarks/RESULTS.md``).

    ``cache`` carries the info lines' shared texts from the last render; once the
    render is whole it holds this render's (those no miner uses any more leave it)."""
    old: InfoCache = {} if cache is None else cache
    fresh: InfoCache = {}
    results = tuple(view.results)  # the next cycle may replace some as this goes on
    texts = [f'miner="{_escape(result.name)}"' for result in results]
    answered = [
        (m, result)
        for result, m in zip(results, texts, strict=True)
        if isinstance(result, Snapshot)
    ]
    identity, miners = view.identity, view.miners
    info = (
        _info_line(m, result, miners.get(result.name), identity.get(result.name, _UNKNOWN),
                   old, fresh)
        for result, m in zip(results, texts, strict=True)
    )  # fmt: skip
    fleet = _Fleet(results, texts, answered, info, view.alerts)
    for series in SERIES:
        if per_device or not series.per_device:
            lines = iter(_WRITERS[series.name](fleet))
            chunk = [_head(series, openmetrics), *islice(lines, LINES_A_CHUNK)]
            while chunk:
                text = "".join(chunk).encode()
                del chunk
                yield text
                chunk = list(islice(lines, LINES_A_CHUNK))
    if cache is not None:
        cache.clear()
        cache.update(fresh)


# -- the daemon's own metrics -------------------------------------------------------------------


_ALERT_STATES: Final = (AlertState.PENDING, AlertState.FIRING, AlertState.RESOLVED)


@dataclass(frozen=True, slots=True)
class _Totals:
    """The small figures rendered at every scrape; replaced wholesale."""

    alerts_by_state: Mapping[str, int] = field(default_factory=dict)
    alerts_by_name: Mapping[tuple[str, str], int] = field(default_factory=dict)
    notifications: Mapping[str, ReceiverCounters] = field(default_factory=dict)
    failing: frozenset[str] = frozenset()


class _TotalsCollector(Collector):
    """Alerts by state and name, notifications and failing receivers."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        totals = self._metrics._totals
        by_state = GaugeMetricFamily("cgwatchdog_alerts", "Alerts by state", labels=["state"])
        for state in _ALERT_STATES:
            by_state.add_metric((state.value,), float(totals.alerts_by_state.get(state.value, 0)))
        yield by_state
        by_name = GaugeMetricFamily(
            "cgwatchdog_alerts_by_alertname",
            "Alerts by alert name and state",
            labels=["alertname", "state"],
        )
        for (alertname, state_name), count in sorted(totals.alerts_by_name.items()):
            by_name.add_metric((alertname, state_name), float(count))
        yield by_name
        notifications = CounterMetricFamily(
            "cgwatchdog_notifications",
            "Notification attempts by receiver: sent, failed (an attempt), dropped (given up)",
            labels=["receiver", "outcome"],
        )
        failing = GaugeMetricFamily(
            "cgwatchdog_receiver_failing",
            "1 while a receiver's last delivery attempt failed",
            labels=["receiver"],
        )
        for receiver, counts in sorted(totals.notifications.items()):
            notifications.add_metric((receiver, "sent"), float(counts.sent))
            notifications.add_metric((receiver, "failed"), float(counts.failed))
            notifications.add_metric((receiver, "dropped"), float(counts.dropped))
        for receiver in sorted(set(totals.notifications) | totals.failing):
            failing.add_metric((receiver,), 1.0 if receiver in totals.failing else 0.0)
        yield notifications
        yield failing


class _WithoutCreated(Collector):
    """A registry's families without the ``*_created`` samples (clutter nobody graphs)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


class Metrics:
    """The daemon's metrics: its own in ``registry``, the fleet's from the last cycle.

    The daemon calls :meth:`observe_cycle` after each cycle and the ``record_*`` and
    ``observe_*`` methods as things happen; /metrics is :meth:`exposition`.
    """

    def __init__(self, registry: CollectorRegistry, *, per_device: bool = False) -> None:
        self.registry = registry
        self.per_device = per_device
        self.view = FleetView()
        self._latest: list[PollResult] = []
        """The view's ``results``, which :meth:`take_result` updates."""
        self._positions: dict[str, int] = {}
        """Where each miner's result is in ``_latest``."""
        self._totals = _Totals()
        self._cache: dict[bool, FleetBody] = {}
        self._info: InfoCache = {}
        self._render_lock = threading.Lock()
        registry.register(_TotalsCollector(self))
        self._without_created = _WithoutCreated(registry)
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
        self.poll_interval = Gauge(
            "cgwatchdog_poll_interval_seconds",
            "The poll interval (a cycle is late after three: /healthz's rule)",
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
        self.heartbeat_last_ok = Gauge(
            "cgwatchdog_heartbeat_last_success_timestamp_seconds",
            "When the dead man's switch last took a ping (0: never; absent: no heartbeat.url)",
            registry=None,
        )
        self._heartbeat_registered = False
        self.build = Gauge(
            "cgwatchdog_build_info", "The running version", ["version"], registry=registry
        )
        self.build.labels(version=__version__).set(1)
        self.store_healthy.set(1)
        self.reload_ok.set(1)

    # -- the fleet ---------------------------------------------------------------------------

    def observe_cycle(
        self,
        results: Sequence[PollResult],
        alerts: Iterable[Alert],
        *,
        duration_s: float,
        finished_at: float,
        interval_s: float,
        miners: Iterable[MinerConfig] = (),
    ) -> None:
        """Take one completed cycle's figures (``miners``: the configuration, for labels)."""
        by_state: dict[str, int] = {}
        by_name: dict[tuple[str, str], int] = {}
        rows: list[AlertRow] = []
        for alert in alerts:
            state = alert.state.value
            by_state[state] = by_state.get(state, 0) + 1
            key = (alert.alertname, state)
            by_name[key] = by_name.get(key, 0) + 1
            if alert.state in (AlertState.PENDING, AlertState.FIRING):
                rows.append(AlertRow.of(alert))
        errors: dict[str, int] = {}
        up = 0
        known = self.view.identity
        identity: dict[str, tuple[str, str]] = {}
        pairs: dict[tuple[str, str], tuple[str, str]] = {}  # one tuple per pair, not per miner
        for result in results:
            if isinstance(result, Snapshot):
                up += 1
                pair = (result.model or "", result.fork or "")
                identity[result.name] = pairs.setdefault(pair, pair)
            else:
                errors[result.kind.value] = errors.get(result.kind.value, 0) + 1
                if result.name in known:
                    identity[result.name] = known[result.name]
        for kind, count in errors.items():
            self.poll_errors.labels(kind=kind).inc(count)
        self._latest = latest = list(results)
        self._positions = {result.name: index for index, result in enumerate(latest)}
        self.view = FleetView(
            latest,
            {miner.name: miner for miner in miners},
            tuple(rows),
            identity,
            finished_at,
            self.view.serial + 1,
        )
        self._totals = _Totals(by_state, by_name, self._totals.notifications, self._totals.failing)
        self.cycles.inc()
        self.cycle_duration.observe(duration_s)
        if duration_s > interval_s:
            self.slow_cycles.inc()
        self.last_cycle.set(finished_at)
        self.poll_interval.set(interval_s)
        self.miners.set(len(results))
        self.miners_up.set(up)

    def take_result(self, result: PollResult) -> None:
        """A miner's result of the cycle under way: it replaces the miner's last one in
        the view (a miner new to the fleet joins when the cycle is observed)."""
        index = self._positions.get(result.name)
        if index is not None:
            self._latest[index] = result

    def observe_outbox(
        self,
        depth: int,
        counters: Mapping[str, ReceiverCounters],
        failing: Iterable[str] | None = None,
    ) -> None:
        """The outbox's depth, per-receiver totals and the receivers failing now."""
        self.outbox_depth.set(depth)
        totals = self._totals
        self._totals = _Totals(
            totals.alerts_by_state,
            totals.alerts_by_name,
            dict(counters),
            totals.failing if failing is None else frozenset(failing),
        )

    @property
    def notifications(self) -> Mapping[str, ReceiverCounters]:
        """Per-receiver delivery totals, as last observed."""
        return self._totals.notifications

    @property
    def failing_receivers(self) -> frozenset[str]:
        """The receivers whose last attempt failed, as last observed."""
        return self._totals.failing

    def fleet_exposition(self, *, openmetrics: bool) -> FleetBody:
        """The fleet's families of the last cycle, rendered and compressed once per cycle
        and format (the same :class:`FleetBody`, not a copy, until the next cycle)."""
        view, per_device = self.view, self.per_device
        cached = self._cache.get(openmetrics)
        if cached is not None and cached.serial == view.serial and cached.per_device == per_device:
            return cached
        with self._render_lock:  # two scrapes at once render once
            cached = self._cache.get(openmetrics)
            if (
                cached is not None
                and cached.serial == view.serial
                and cached.per_device == per_device
            ):
                return cached
            # What is cached belongs to an older cycle (this format's, maybe the other's).
            self._cache = {
                k: v
                for k, v in self._cache.items()
                if v.serial == view.serial and v.per_device == per_device
            }
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
            pieces: list[bytes] = []
            text_bytes = 0
            for chunk in fleet_families(
                view, openmetrics=openmetrics, per_device=per_device, cache=self._info
            ):
                text_bytes += len(chunk)
                piece = compressor.compress(chunk)
                if piece:
                    pieces.append(piece)
            body = FleetBody(view.serial, per_device, tuple(pieces), text_bytes, compressor)
            self._cache[openmetrics] = body
            return body

    def exposition(self, *, openmetrics: bool, compressed: bool = False) -> Body:
        """The whole /metrics body: the fleet's families, then the daemon's own, gzip-
        encoded when ``compressed`` (else inflated as it is read).

        Blocking (the first call after a cycle renders the fleet): run it in a thread.
        """
        fleet = self.fleet_exposition(openmetrics=openmetrics)
        own = (_openmetrics_latest if openmetrics else _text_latest)(self._without_created)
        pieces = (*fleet.pieces, fleet.finish(own))
        if compressed:
            return Body(True, sum(len(piece) for piece in pieces), pieces)
        return Body(False, fleet.text_bytes + len(own), pieces)

    # -- events --------------------------------------------------------------------------------

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
        """One ping of the dead man's switch (its gauges appear with the first ping)."""
        if not self._heartbeat_registered:
            self.registry.register(self.heartbeat_last_ok)
            self._heartbeat_registered = True
        self.heartbeat_pings.labels(result="ok" if ok else "failed").inc()
        if ok:
            self.heartbeat_last_ok.set_to_current_time()

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


def series_budget(*, per_device: bool) -> int:
    """Series a typical miner adds (3 devices, 3 pools, 4 fans, no alert)."""
    return sum(s.typical for s in SERIES if per_device or not s.per_device)
