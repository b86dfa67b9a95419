"""The alert lifecycle and notification grouping, pure and clock-free.

Two objects, both driven by an injected clock (``now``, epoch seconds, passed to every
method; nothing here reads the clock):

``AlertEngine``
    Turns each cycle's ``Evaluation`` (the rule engine's ``Signal`` s for conditions that
    are true now) into alerts that move INACTIVE → PENDING → FIRING → RESOLVED, the way
    Prometheus's ``rules/alerting.go`` does: ``for`` delays firing, ``keep_firing_for``
    damps flapping, a resolved alert is kept ``RESOLVED_RETENTION_S`` so the resolve
    notice goes out. The moves are data: ``TRANSITIONS[state][event] -> state``.

``Dispatcher``
    Routes FIRING and RESOLVED alerts through a ``Route`` tree into aggregation groups
    and decides, each ``tick``, which ``Notification`` s to send, the way Alertmanager's
    ``dispatch`` and ``notify`` (dedup stage, notification log) do:

    - a new group waits ``group_wait`` before its first notification, then is looked at
      again ``group_interval`` after each look (at the first tick at or after it);
    - at a flush it notifies when its content changed since the last notification (a
      firing fingerprint the receiver was not told of, or one it was told was firing
      that resolved), else re-sends after ``repeat_interval`` while anything fires that
      nobody acknowledged (``AlertEngine.acknowledge``);
    - silenced alerts are left out; a resolve is sent only for a fingerprint this route's
      receiver was told was firing (so an alert silenced all the while it fired resolves
      in silence), and withheld while the alert is silenced;
    - with ``send_resolved`` false for a receiver, resolves are forgotten, not sent, and
      are not a change (the receiver is not re-pinged with the remaining firing alerts);
    - during a fleet incident for alertname X every X alert of a route goes into one
      group labelled ``{alertname: X, fleet_incident: "true"}``. An alert moving between
      groups of one route (an incident starting or ending) takes the route's knowledge
      that it was notified with it: no second firing notice, no false resolve.

    ``tick`` returns the intent to send: delivery, retry and at-least-once are the
    outbox's business. The notification log and group timers are in ``to_dict``, so a
    restart neither forgets firing alerts nor re-sends them.

Deliberate differences from Alertmanager, each for the operator: ``repeat_interval`` is
reached at ``>=`` (Alertmanager's strict ``<`` pushes a 4h repeat to 4h05m); an alert
silenced after its firing notice is not a change (no notice listing the others); an alert
that vanishes from the input while its receiver believes it fires (engine state lost,
retention ran out while silenced) is resolved to that receiver, not forgotten; a group
whose alert started long ago does not skip ``group_wait`` (the log survives restarts, so
that Alertmanager shortcut is not needed).
"""

from __future__ import annotations

import copy
import enum
import functools
import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from cgwatchdog.errors import ConfigError, ConfigProblem
from cgwatchdog.jsonstate import check_version, opt_float, opt_str, str_dict
from cgwatchdog.statemachine import Transitions

__all__ = [
    "FLEET_INCIDENT_LABEL",
    "FLEET_INCIDENT_MIN_MINERS",
    "RESOLVED_RETENTION_S",
    "TRANSITIONS",
    "Alert",
    "AlertEngine",
    "AlertEvent",
    "AlertState",
    "AlertView",
    "Dispatcher",
    "Evaluation",
    "Judged",
    "Matcher",
    "Notification",
    "Route",
    "Signal",
    "Silence",
    "Silencer",
    "Transition",
    "fingerprint",
    "fleet_incidents",
]

# Prometheus keeps a resolved alert this long so the resolve notice goes out even when
# the next evaluation or notification is late (rules/alerting.go resolvedRetention).
RESOLVED_RETENTION_S: Final = 15 * 60.0

# Below this many distinct miners an alert is never a fleet incident, whatever the share:
# on a 2-miner fleet one failing miner is 50% of it but is not "the pool is down".
FLEET_INCIDENT_MIN_MINERS: Final = 3
FLEET_INCIDENT_LABEL: Final = "fleet_incident"

_T = TypeVar("_T")
_STATE_VERSION: Final = 1
_GROUP_BY_ALL: Final = "..."
_FIRING: Final = "firing"
_RESOLVED: Final = "resolved"


# --- fingerprints --------------------------------------------------------------------

_FNV64_OFFSET: Final = 14695981039346656037
_FNV64_PRIME: Final = 1099511628211
_U64: Final = (1 << 64) - 1
_SEPARATOR: Final = b"\xff"  # never valid in UTF-8, so names and values cannot run together


@functools.lru_cache(maxsize=16384)
def _fingerprint_of_items(items: tuple[tuple[str, str], ...]) -> str:
    data = b"".join(
        name.encode() + _SEPARATOR + value.encode() + _SEPARATOR for name, value in items
    )
    h = _FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & _U64
    return f"{h:016x}"


def fingerprint(labels: Mapping[str, str]) -> str:
    """The alert's identity: FNV-1a 64 over sorted labels, as 16 lowercase hex digits.

    Same hash as Prometheus/Alertmanager ``model.LabelSet.Fingerprint`` (each name and
    value followed by a 0xFF byte), so fingerprints agree with an Alertmanager's.
    """
    # Cached: a fleet incident re-fingerprints thousands of identical label sets a cycle.
    return _fingerprint_of_items(tuple(sorted(labels.items())))


# --- the state machine, as data ------------------------------------------------------


class AlertState(enum.Enum):
    """Where an alert is in its life. INACTIVE alerts are not kept, only reported."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertEvent(enum.Enum):
    """What can happen to an alert in one evaluation."""

    ACTIVATED = "activated"  # condition true, no active alert with this fingerprint
    FOR_ELAPSED = "for_elapsed"  # pending and true for at least ``for``
    CONDITION_FALSE = "condition_false"  # pending, evaluated, condition false
    KEEP_FIRING_ELAPSED = "keep_firing_elapsed"  # firing, false for keep_firing_for
    RETENTION_ELAPSED = "retention_elapsed"  # resolved longer than the retention
    RETIRED = "retired"  # its miner or rule left the configuration


TRANSITIONS: Final = Transitions[AlertState, AlertEvent](
    "alert",
    {
        AlertState.INACTIVE: {AlertEvent.ACTIVATED: AlertState.PENDING},
        AlertState.PENDING: {
            AlertEvent.FOR_ELAPSED: AlertState.FIRING,
            AlertEvent.CONDITION_FALSE: AlertState.INACTIVE,
            AlertEvent.RETIRED: AlertState.INACTIVE,
        },
        AlertState.FIRING: {
            AlertEvent.KEEP_FIRING_ELAPSED: AlertState.RESOLVED,
            AlertEvent.RETIRED: AlertState.RESOLVED,
        },
        AlertState.RESOLVED: {
            AlertEvent.ACTIVATED: AlertState.PENDING,  # a new alert with the same labels
            AlertEvent.RETENTION_ELAPSED: AlertState.INACTIVE,
        },
    },
)


# --- alerts --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signal:
    """A condition that is true now, as the rule engine produces it each cycle."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    value: str
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0


@dataclass(slots=True)
class Alert:
    """One alert, identified by the fingerprint of its labels; owned by the engine.

    Read it, do not change it: the engine mutates it in place between cycles (a new
    activation after RESOLVED is a new object). ``last_seen`` is the last time the
    condition was true; ``fired_at`` is None until FIRING, ``resolved_at`` until RESOLVED.
    """

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: str
    state: AlertState
    active_since: float
    fired_at: float | None
    resolved_at: float | None
    last_seen: float
    for_s: float
    keep_firing_for_s: float
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None

    @property
    def acknowledged(self) -> bool:
        """Whether someone said they are on it (no repeats while it fires)."""
        return self.acknowledged_by is not None

    @property
    def alertname(self) -> str:
        """The ``alertname`` label ("" when absent)."""
        return self.labels.get("alertname", "")

    @property
    def miner(self) -> str:
        """The ``miner`` label ("" for alerts about no single miner)."""
        return self.labels.get("miner", "")

    def copy(self) -> Alert:
        """A snapshot that later engine updates do not change."""
        return copy.copy(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, for the store."""
        return {
            "fingerprint": self.fingerprint,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "value": self.value,
            "state": self.state.value,
            "active_since": self.active_since,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "last_seen": self.last_seen,
            "for_s": self.for_s,
            "keep_firing_for_s": self.keep_firing_for_s,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """Inverse of ``to_dict``; ValueError on a malformed record."""
        try:
            labels = str_dict(data["labels"])
            alert = cls(
                fingerprint=str(data.get("fingerprint") or fingerprint(labels)),
                labels=labels,
                annotations=str_dict(data.get("annotations", {})),
                value=str(data.get("value", "")),
                state=AlertState(data["state"]),
                active_since=float(data["active_since"]),
                fired_at=opt_float(data.get("fired_at")),
                resolved_at=opt_float(data.get("resolved_at")),
                last_seen=float(data["last_seen"]),
                for_s=float(data.get("for_s", 0.0)),
                keep_firing_for_s=float(data.get("keep_firing_for_s", 0.0)),
                acknowledged_by=opt_str(data.get("acknowledged_by")),
                acknowledged_at=opt_float(data.get("acknowledged_at")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed alert record: {exc!r}") from None
        if alert.state is AlertState.INACTIVE:
            raise ValueError("malformed alert record: an inactive alert is never stored")
        if alert.state is AlertState.FIRING and alert.fired_at is None:
            alert.fired_at = alert.active_since
        if alert.state is AlertState.RESOLVED and alert.resolved_at is None:
            alert.resolved_at = alert.last_seen
        return alert


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert changed state in one update; ``alert`` is a snapshot after the change."""

    fingerprint: str
    old: AlertState
    new: AlertState
    alert: Alert


class Judged(AbstractSet[tuple[str, str]]):
    """The ``(alertname, miner)`` conditions judged in one cycle, as a set of pairs.

    Held as the alertnames judged for each miner (a tuple the rule engine shares between
    the miners whose rules are the same), and alertnames judged for every miner of a
    collection: no tuple and no set entry a pair, which at 10,000 miners and seven rules
    would be 70,000 of each, made and dropped every cycle.
    """

    __slots__ = ("_by_miner", "_everywhere")

    def __init__(
        self,
        by_miner: Mapping[str, Collection[str]] | None = None,
        everywhere: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        self._by_miner: Mapping[str, Collection[str]] = {} if by_miner is None else by_miner
        self._everywhere: Mapping[str, Collection[str]] = {} if everywhere is None else everywhere

    def also(self, alertnames: Iterable[str], miners: Collection[str]) -> Judged:
        """These pairs and every ``(alertname, miner)`` of ``alertnames`` x ``miners``."""
        everywhere = dict(self._everywhere)
        for alertname in alertnames:
            earlier = everywhere.get(alertname)
            everywhere[alertname] = miners if earlier is None else {*earlier, *miners}
        return Judged(self._by_miner, everywhere)

    def __contains__(self, pair: object) -> bool:
        if not isinstance(pair, tuple) or len(pair) != 2:
            return False
        alertname, miner = pair
        names = self._by_miner.get(miner)
        if names is not None and alertname in names:
            return True
        miners = self._everywhere.get(alertname)
        return miners is not None and miner in miners

    def __iter__(self) -> Iterator[tuple[str, str]]:
        by_miner = self._by_miner
        for miner, names in by_miner.items():
            for alertname in dict.fromkeys(names):
                yield alertname, miner
        for alertname, miners in self._everywhere.items():
            for miner in miners:
                if alertname not in by_miner.get(miner, ()):
                    yield alertname, miner

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"Judged({set(self)!r})"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one cycle evaluated.

    ``evaluated`` holds the (alertname, miner) pairs whose condition was evaluated (the
    rule engine gives a :class:`Judged`; any collection of pairs will do): an alert whose
    pair is in it and has no signal now has a false condition; an alert whose pair is not
    (its miner was unreachable, so its device rules could not run) keeps its state.
    ``held_miners`` are in restart grace (their alerts hold their state).
    """

    signals: Sequence[Signal]
    evaluated: Collection[tuple[str, str]]
    held_miners: Collection[str] = ()


class AlertEngine:
    """The alert state machine over all miners; see the module docstring.

    Restart grace (``Evaluation.held_miners``): a held miner's FIRING alerts do not
    resolve and its PENDING alerts do not fire, however long ``for`` has run (they fire
    at the first evaluation after the grace if still true and ``for`` has elapsed). A new
    condition on a held miner may start PENDING, and a PENDING alert whose condition is
    false is dropped as usual: neither is ever notified, and dropping it keeps ``for``
    meaning "true continuously", so a warm-up blip cannot fire at the end of the grace.
    """

    __slots__ = ("_alerts",)

    def __init__(self) -> None:
        self._alerts: dict[str, Alert] = {}

    def update(self, evaluation: Evaluation, now: float) -> list[Transition]:
        """Apply one cycle's evaluation; return the alerts that changed state."""
        alerts = self._alerts
        held = _as_set(evaluation.held_miners)
        evaluated = _as_set(evaluation.evaluated)
        transitions: list[Transition] = []
        seen: set[str] = set()

        for signal in evaluation.signals:
            fp = fingerprint(signal.labels)
            if fp in seen:  # the same labels twice in one cycle: the first one counts
                continue
            seen.add(fp)
            alert = alerts.get(fp)
            if alert is None or alert.state is AlertState.RESOLVED:
                old = AlertState.INACTIVE if alert is None else alert.state
                alert = _activate(fp, signal, TRANSITIONS.next(old, AlertEvent.ACTIVATED), now)
                alerts[fp] = alert
            else:
                old = alert.state
                _refresh(alert, signal, now)
            if (
                alert.state is AlertState.PENDING
                and now - alert.active_since >= alert.for_s
                and signal.labels.get("miner", "") not in held
            ):
                alert.state = TRANSITIONS.next(alert.state, AlertEvent.FOR_ELAPSED)
                alert.fired_at = now
            if alert.state is not old:
                transitions.append(Transition(fp, old, alert.state, alert.copy()))

        dropped: list[str] = []
        for fp, alert in alerts.items():
            if fp in seen:
                continue
            state = alert.state
            if state is AlertState.RESOLVED:
                resolved_at = alert.last_seen if alert.resolved_at is None else alert.resolved_at
                if now - resolved_at > RESOLVED_RETENTION_S:
                    new = TRANSITIONS.next(state, AlertEvent.RETENTION_ELAPSED)
                    transitions.append(_dropped(alert, new))
                    dropped.append(fp)
                continue
            miner = alert.labels.get("miner", "")
            if (alert.labels.get("alertname", ""), miner) not in evaluated:
                continue
            if state is AlertState.PENDING:
                new = TRANSITIONS.next(state, AlertEvent.CONDITION_FALSE)
                transitions.append(_dropped(alert, new))
                dropped.append(fp)
            elif miner not in held and now - alert.last_seen >= alert.keep_firing_for_s:
                alert.state = TRANSITIONS.next(state, AlertEvent.KEEP_FIRING_ELAPSED)
                alert.resolved_at = now
                transitions.append(Transition(fp, state, alert.state, alert.copy()))
        for fp in dropped:
            del alerts[fp]
        return transitions

    def retire(self, predicate: Callable[[Alert], bool], now: float) -> list[Transition]:
        """End the alerts ``predicate`` selects, e.g. of miners or rules removed on reload.

        PENDING ones are dropped; FIRING ones resolve now (``keep_firing_for`` does not
        apply: nothing will evaluate them again); RESOLVED ones age out as usual.
        """
        transitions: list[Transition] = []
        dropped: list[str] = []
        for fp, alert in self._alerts.items():
            if alert.state is AlertState.RESOLVED or not predicate(alert):
                continue
            old = alert.state
            new = TRANSITIONS.next(old, AlertEvent.RETIRED)
            if new is AlertState.INACTIVE:
                dropped.append(fp)
                transitions.append(_dropped(alert, new))
            else:
                alert.state = new
                alert.resolved_at = now
                transitions.append(Transition(fp, old, new, alert.copy()))
        for fp in dropped:
            del self._alerts[fp]
        return transitions

    def acknowledge(self, alert_id: str, by: str, now: float) -> Alert:
        """Mark the alert whose fingerprint is ``alert_id`` as acknowledged by ``by``.

        An acknowledged alert is not repeated (``repeat_interval``) while it fires; its
        resolution is still notified, and a new firing after it resolved is a new,
        unacknowledged alert. Returns a snapshot. KeyError for an unknown id; ValueError
        for an alert already resolved, or without ``by``.
        """
        alert = self._alerts.get(alert_id)
        if alert is None:
            raise KeyError(
                f"no alert {alert_id!r}: not pending or firing now "
                "(an alert's id is its 16-digit fingerprint, as notifications show it)"
            )
        who = " ".join(by.split())
        if not who:
            raise ValueError("say who acknowledges the alert")
        if alert.state is AlertState.RESOLVED:
            raise ValueError(
                f"alert {alert_id} ({alert.alertname} on {alert.miner or 'the fleet'}) "
                "has resolved: nothing to acknowledge"
            )
        alert.acknowledged_by = who
        alert.acknowledged_at = now
        return alert.copy()

    def get(self, fp: str) -> Alert | None:
        """The alert with this fingerprint, if pending, firing or recently resolved."""
        return self._alerts.get(fp)

    def alerts(self) -> list[Alert]:
        """Pending, firing and recently resolved alerts (live records: read only)."""
        return list(self._alerts.values())

    def firing(self) -> list[Alert]:
        """The FIRING alerts (live records: read only)."""
        return [a for a in self._alerts.values() if a.state is AlertState.FIRING]

    def to_dict(self) -> dict[str, Any]:
        """The whole state, JSON-safe; ``from_dict`` restores it after a restart."""
        return {
            "version": _STATE_VERSION,
            "alerts": [alert.to_dict() for alert in self._alerts.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertEngine:
        """Restore ``to_dict``'s output; ValueError if it is malformed."""
        check_version(data, _STATE_VERSION)
        engine = cls()
        records = data.get("alerts", [])
        if not isinstance(records, list):
            raise ValueError("malformed alert state: 'alerts' is not a list")
        for record in records:
            alert = Alert.from_dict(record)
            engine._alerts[alert.fingerprint] = alert
        return engine


def _dropped(alert: Alert, new: AlertState) -> Transition:
    """The transition of an alert the engine stops keeping; its snapshot says INACTIVE."""
    snapshot = alert.copy()
    snapshot.state = new
    return Transition(alert.fingerprint, alert.state, new, snapshot)


def _activate(fp: str, signal: Signal, state: AlertState, now: float) -> Alert:
    return Alert(
        fingerprint=fp,
        labels=dict(signal.labels),
        annotations=dict(signal.annotations),
        value=signal.value,
        state=state,
        active_since=now,
        fired_at=None,
        resolved_at=None,
        last_seen=now,
        for_s=signal.for_s,
        keep_firing_for_s=signal.keep_firing_for_s,
    )


def _refresh(alert: Alert, signal: Signal, now: float) -> None:
    # Replace, never mutate, the annotations: notifications may hold the old dict.
    if alert.annotations != signal.annotations:
        alert.annotations = dict(signal.annotations)
    alert.value = signal.value
    alert.last_seen = now
    alert.for_s = signal.for_s
    alert.keep_firing_for_s = signal.keep_firing_for_s


def fleet_incidents(
    alerts: Iterable[Alert],
    fleet_size: int,
    share: float,
    *,
    min_miners: int = FLEET_INCIDENT_MIN_MINERS,
) -> set[str]:
    """The alertnames pending or firing on at least ``share`` of the fleet's miners.

    Counted on distinct ``miner`` labels, and never below ``min_miners`` (3 by default),
    so a small fleet's single failure is not a "fleet incident". ``share`` (0..1) of 0 or
    less, or an empty fleet, disables detection.
    """
    if share <= 0 or fleet_size <= 0:
        return set()
    # The epsilon keeps 0.3 * 10 (3.0000000000000004 in floats) at 3 miners, not 4.
    threshold = max(min_miners, math.ceil(share * fleet_size - 1e-9))
    miners_by_alertname: dict[str, set[str]] = {}
    for alert in alerts:
        if alert.state is AlertState.PENDING or alert.state is AlertState.FIRING:
            miner = alert.labels.get("miner")
            if miner:
                miners_by_alertname.setdefault(alert.alertname, set()).add(miner)
    return {name for name, miners in miners_by_alertname.items() if len(miners) >= threshold}


# --- routing and silences ------------------------------------------------------------


def _problem(what: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(what, None, message)])


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label condition; a missing label matches as "" (as in Alertmanager).

    A regex is anchored at both ends (``fullmatch``), as Alertmanager anchors match_re.
    """

    name: str
    value: str
    regex: bool = False
    _pattern: re.Pattern[str] | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if self.regex:
            try:
                pattern = re.compile(self.value)
            except re.error as exc:
                raise _problem(
                    "<matcher>", f"{self.name}=~{self.value!r}: invalid regex: {exc}"
                ) from None
            object.__setattr__(self, "_pattern", pattern)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this matcher."""
        value = labels.get(self.name, "")
        if self._pattern is not None:
            return self._pattern.fullmatch(value) is not None
        return value == self.value

    def __str__(self) -> str:
        return f"{self.name}{'=~' if self.regex else '='}{json.dumps(self.value)}"


def _matchers_str(matchers: Sequence[Matcher]) -> str:
    return "{" + ",".join(sorted(str(m) for m in matchers)) + "}"


@dataclass(frozen=True, slots=True)
class Route:
    """A node of the routing tree, fully specified (config.py does the inheritance).

    ``group_by == ("...",)`` groups by all labels; ``()`` puts all alerts of the route in
    one group. ``continue_`` lets an alert that matched this route try later siblings.
    """

    receiver: str
    group_by: tuple[str, ...]
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    matchers: tuple[Matcher, ...] = ()
    continue_: bool = False
    routes: tuple[Route, ...] = ()

    def __post_init__(self) -> None:
        where = f"route to {self.receiver!r}"
        if self.group_wait_s < 0:
            raise _problem(where, "group_wait must not be negative")
        if self.group_interval_s <= 0:
            raise _problem(where, "group_interval must be positive")
        if self.repeat_interval_s <= 0:
            raise _problem(where, "repeat_interval must be positive")
        if _GROUP_BY_ALL in self.group_by and len(self.group_by) > 1:
            raise _problem(where, "group_by '...' (all labels) must be alone")

    @property
    def group_by_all(self) -> bool:
        """Whether every label is a grouping label."""
        return self.group_by == (_GROUP_BY_ALL,)

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes an alert goes to, as Alertmanager's ``Route.Match``.

        Depth first, left to right: the first matching child takes the alert unless it
        has ``continue_``; a node none of whose children match is itself the match.
        """
        return [route for _, route in _match_keyed(self, labels, _matchers_str(self.matchers))]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The grouping labels of an alert on this route (present ones only)."""
        if self.group_by_all:
            return dict(labels)
        return {name: labels[name] for name in self.group_by if name in labels}


def _match_keyed(route: Route, labels: Mapping[str, str], key: str) -> list[tuple[str, Route]]:
    # ``key`` is Alertmanager's Route.Key(): the matchers of every node on the path.
    if not all(m.matches(labels) for m in route.matchers):
        return []
    found: list[tuple[str, Route]] = []
    for child in route.routes:
        matches = _match_keyed(child, labels, key + "/" + _matchers_str(child.matchers))
        found.extend(matches)
        if matches and not child.continue_:
            break
    return found or [(key, route)]


def _walk_keyed(route: Route, key: str) -> Iterable[tuple[str, Route]]:
    yield key, route
    for child in route.routes:
        yield from _walk_keyed(child, key + "/" + _matchers_str(child.matchers))


def _route_index(root: Route) -> dict[tuple[str, str], Route]:
    """Every node of the tree by (receiver, route key)."""
    return {(r.receiver, key): r for key, r in _walk_keyed(root, _matchers_str(root.matchers))}


class Silencer(Protocol):
    """What the dispatcher asks of a silence (this module's :class:`Silence`, or the
    silences of :mod:`cgwatchdog.silences`)."""

    def active(self, now: float) -> bool:
        """Whether it is in force at ``now``."""
        ...

    def silences(self, labels: Mapping[str, str], now: float) -> bool:
        """Whether it mutes an alert with ``labels`` at ``now``."""
        ...


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes the alerts all of whose matchers match, from ``starts_at`` until ``ends_at``."""

    matchers: tuple[Matcher, ...]
    ends_at: float
    starts_at: float | None = None
    comment: str = ""

    def __post_init__(self) -> None:
        if not self.matchers:
            raise _problem("<silence>", "a silence needs at least one matcher")

    def active(self, now: float) -> bool:
        """Whether the silence is in force at ``now`` (start inclusive, end exclusive)."""
        return (self.starts_at is None or self.starts_at <= now) and now < self.ends_at

    def silences(self, labels: Mapping[str, str], now: float) -> bool:
        """Whether this silence mutes an alert with ``labels`` at ``now``."""
        return self.active(now) and all(m.matches(labels) for m in self.matchers)


# --- notifications -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertView:
    """One alert as a notification shows it (Alertmanager webhook ``alerts[]``)."""

    fingerprint: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    value: str
    status: str  # "firing" or "resolved"
    starts_at: float
    ends_at: float | None  # None while firing

    @classmethod
    def of(cls, alert: Alert) -> AlertView:
        """The view of an alert as it is now."""
        firing = alert.state is AlertState.FIRING
        return cls(
            fingerprint=alert.fingerprint,
            labels=alert.labels,
            annotations=alert.annotations,
            value=alert.value,
            status=_FIRING if firing else _RESOLVED,
            starts_at=alert.active_since if alert.fired_at is None else alert.fired_at,
            ends_at=None if firing else alert.resolved_at,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, for the outbox."""
        return {
            "fingerprint": self.fingerprint,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "value": self.value,
            "status": self.status,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertView:
        """Inverse of ``to_dict``; ValueError on a malformed record."""
        try:
            return cls(
                fingerprint=str(data["fingerprint"]),
                labels=str_dict(data["labels"]),
                annotations=str_dict(data.get("annotations", {})),
                value=str(data.get("value", "")),
                status=str(data["status"]),
                starts_at=float(data["starts_at"]),
                ends_at=opt_float(data.get("ends_at")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed alert view: {exc!r}") from None


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first, *rest = maps
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one receiver about one group: what ``Dispatcher.tick`` decided."""

    receiver: str
    group_key: str
    group_labels: Mapping[str, str]
    status: str  # "firing" if any alert in it fires, else "resolved"
    alerts: tuple[AlertView, ...]

    @property
    def firing(self) -> tuple[AlertView, ...]:
        """The firing alerts."""
        return tuple(a for a in self.alerts if a.status == _FIRING)

    @property
    def resolved(self) -> tuple[AlertView, ...]:
        """The resolved alerts."""
        return tuple(a for a in self.alerts if a.status == _RESOLVED)

    @property
    def common_labels(self) -> dict[str, str]:
        """Labels every alert has with the same value (webhook ``commonLabels``)."""
        return _common([a.labels for a in self.alerts])

    @property
    def common_annotations(self) -> dict[str, str]:
        """Annotations every alert has with the same value."""
        return _common([a.annotations for a in self.alerts])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, for the outbox."""
        return {
            "receiver": self.receiver,
            "group_key": self.group_key,
            "group_labels": dict(self.group_labels),
            "status": self.status,
            "alerts": [a.to_dict() for a in self.alerts],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        """Inverse of ``to_dict``; ValueError on a malformed record."""
        try:
            return cls(
                receiver=str(data["receiver"]),
                group_key=str(data["group_key"]),
                group_labels=str_dict(data["group_labels"]),
                status=str(data["status"]),
                alerts=tuple(AlertView.from_dict(a) for a in data["alerts"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed notification: {exc!r}") from None


# --- the dispatcher ------------------------------------------------------------------

_StateKey = tuple[str, str]  # (receiver, route key): one notification log per pair


@dataclass(slots=True)
class _Group:
    """An aggregation group with its timers and notification-log entry."""

    key: str
    labels: dict[str, str]
    next_flush_at: float
    has_flushed: bool = False
    last_notified_at: float | None = None
    members: dict[str, Alert] = field(default_factory=dict)
    notified_firing: set[str] = field(default_factory=set)  # fps the receiver believes fire


@dataclass(slots=True)
class _RouteState:
    route: Route
    route_key: str
    groups: dict[str, _Group] = field(default_factory=dict)
    member_of: dict[str, str] = field(default_factory=dict)  # fingerprint → group key


@dataclass(frozen=True, slots=True)
class _Target:
    state_key: _StateKey
    route: Route
    route_key: str
    group_key: str
    group_labels: dict[str, str]


def _labels_str(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={json.dumps(labels[k])}" for k in sorted(labels)) + "}"


@functools.lru_cache(maxsize=1024)
def _incident_group(route_key: str, alertname: str) -> tuple[str, dict[str, str]]:
    """Group key and labels of a fleet incident's one group on a route (never mutated)."""
    labels = {"alertname": alertname, FLEET_INCIDENT_LABEL: "true"}
    return f"{route_key}:{_labels_str(labels)}", labels


class Dispatcher:
    """Groups FIRING/RESOLVED alerts per route and decides notifications; see module doc.

    ``send_resolved`` maps receiver names to whether they want resolve notices (default
    True for receivers not listed).
    """

    __slots__ = ("_route", "_route_cache", "_send_resolved", "_states")

    def __init__(self, route: Route, *, send_resolved: Mapping[str, bool] | None = None) -> None:
        self._route = route
        self._send_resolved: dict[str, bool] = dict(send_resolved or {})
        self._states: dict[_StateKey, _RouteState] = {}
        self._route_cache: dict[str, tuple[_Target, ...]] = {}

    @property
    def route(self) -> Route:
        """The routing tree in use."""
        return self._route

    def set_route(self, route: Route, *, send_resolved: Mapping[str, bool] | None = None) -> None:
        """Swap in a reloaded routing tree, keeping groups and the notification log.

        State of routes still in the tree (same receiver and matcher path) carries on
        with the new timers; that of routes gone from it is dropped, as Alertmanager
        drops it on reload (their receivers get no resolve for what they were told).
        """
        self._route = route
        if send_resolved is not None:
            self._send_resolved = dict(send_resolved)
        self._route_cache = {}
        keyed = _route_index(route)
        for state_key in list(self._states):
            new_route = keyed.get(state_key)
            if new_route is None:
                del self._states[state_key]
            else:
                self._states[state_key].route = new_route

    def tick(
        self,
        alerts: Sequence[Alert],
        silences: Sequence[Silencer],
        now: float,
        *,
        fleet_incidents: Collection[str] = (),
    ) -> list[Notification]:
        """Take the current alerts, return the notifications to send now.

        Call it every cycle with every alert the engine holds (PENDING ones are ignored)
        and the configured silences. The result is the intent to send, sorted by receiver
        and group key; the notification log counts it as sent.
        """
        current: dict[str, Alert] = {
            a.fingerprint: a
            for a in alerts
            if a.state is AlertState.FIRING or a.state is AlertState.RESOLVED
        }
        incidents = _as_set(fleet_incidents)
        active = [s for s in silences if s.active(now)]

        cache = self._route_cache
        new_cache: dict[str, tuple[_Target, ...]] = {}
        placed: dict[_StateKey, set[str]] = {}
        for fp, alert in current.items():
            targets = cache.get(fp)
            if targets is None:
                targets = self._targets(alert.labels)
            new_cache[fp] = targets
            for target in targets:
                state = self._states.get(target.state_key)
                if state is None:
                    state = _RouteState(target.route, target.route_key)
                    self._states[target.state_key] = state
                if self._place(state, target, alert, incidents, now):
                    placed.setdefault(target.state_key, set()).add(fp)
        self._route_cache = new_cache

        notifications: list[Notification] = []
        for state_key, state in list(self._states.items()):
            _sweep(state, placed.get(state_key, set()), current, now)
            for group in list(state.groups.values()):
                if now >= group.next_flush_at:
                    notification = self._flush(state, group, active, now)
                    if notification is not None:
                        notifications.append(notification)
                if not group.members:
                    del state.groups[group.key]
            if not state.groups:
                del self._states[state_key]
        notifications.sort(key=lambda n: (n.receiver, n.group_key))
        return notifications

    def renotify(self, now: float) -> int:
        """Make every group that has told its receiver of firing alerts repeat them at the
        next tick, as if ``repeat_interval`` had passed; the number of such groups.

        A replica taking over from a dead leader calls it: what the leader last sent is
        unknown, so firing alerts are sent once more (at-least-once) rather than maybe
        never until the repeat interval.
        """
        count = 0
        for state in self._states.values():
            for group in state.groups.values():
                if group.last_notified_at is None or not group.notified_firing:
                    continue  # never told: the normal flush tells it
                group.last_notified_at = min(
                    group.last_notified_at, now - state.route.repeat_interval_s
                )
                group.next_flush_at = min(group.next_flush_at, now)
                count += 1
        return count

    def _targets(self, labels: Mapping[str, str]) -> tuple[_Target, ...]:
        root = self._route
        return tuple(
            _Target(
                (route.receiver, key),
                route,
                key,
                f"{key}:{_labels_str(group_labels)}",
                group_labels,
            )
            for key, route in _match_keyed(root, labels, _matchers_str(root.matchers))
            for group_labels in (route.group_labels(labels),)
        )

    def _place(
        self,
        state: _RouteState,
        target: _Target,
        alert: Alert,
        incidents: Collection[str],
        now: float,
    ) -> bool:
        """Put the alert in its group; False if this route has nothing to do with it."""
        fp = alert.fingerprint
        previous_key = state.member_of.get(fp)
        if alert.state is AlertState.RESOLVED:
            # A resolved alert stays in the group that announced it; one never announced
            # (resolved within group_wait, or silenced all along) owes nobody a notice.
            if previous_key is None:
                return False
            previous = state.groups[previous_key]
            if fp not in previous.notified_firing:
                _remove(state, previous, fp)
                return False
            previous.members[fp] = alert
            return True

        group_key, group_labels = target.group_key, target.group_labels
        if incidents:
            alertname = alert.labels.get("alertname", "")
            if alertname in incidents:
                group_key, group_labels = _incident_group(target.route_key, alertname)
        if previous_key == group_key:
            state.groups[group_key].members[fp] = alert
            return True
        group = state.groups.get(group_key)
        if group is None:
            group = _Group(group_key, dict(group_labels), now + state.route.group_wait_s)
            state.groups[group_key] = group
        if previous_key is not None:
            _transfer(state.groups[previous_key], group, fp)
        group.members[fp] = alert
        state.member_of[fp] = group_key
        return True

    def _flush(
        self, state: _RouteState, group: _Group, silences: Sequence[Silencer], now: float
    ) -> Notification | None:
        route = state.route
        send_resolved = self._send_resolved.get(route.receiver, True)
        firing: list[Alert] = []
        resolved: list[Alert] = []
        changed = False
        for fp, alert in group.members.items():
            if silences and any(s.silences(alert.labels, now) for s in silences):
                continue
            if alert.state is AlertState.FIRING:
                firing.append(alert)
                changed = changed or fp not in group.notified_firing
            elif fp in group.notified_firing:
                resolved.append(alert)

        # From now, not from when it was due: a late tick must not bring the next one
        # closer than group_interval (Alertmanager resets its timer the same way).
        group.next_flush_at = now + route.group_interval_s
        group.has_flushed = True

        # Acknowledged alerts are not repeated: someone said they are on it.
        repeat_due = (
            any(not alert.acknowledged for alert in firing)
            and group.last_notified_at is not None
            and now - group.last_notified_at >= route.repeat_interval_s
        )
        send = changed or (send_resolved and bool(resolved)) or repeat_due
        for alert in resolved:  # told, or not wanted by this receiver: forget either way
            _remove(state, group, alert.fingerprint)
        if not send:
            return None
        group.notified_firing.update(a.fingerprint for a in firing)
        group.last_notified_at = now
        shown = firing + resolved if send_resolved else firing
        shown.sort(key=lambda a: sorted(a.labels.items()))
        return Notification(
            receiver=route.receiver,
            group_key=group.key,
            group_labels=dict(group.labels),
            status=_FIRING if firing else _RESOLVED,
            alerts=tuple(AlertView.of(a) for a in shown),
        )

    def to_dict(self) -> dict[str, Any]:
        """Groups, timers and the notification log, JSON-safe, for the store."""
        return {
            "version": _STATE_VERSION,
            "routes": [
                {
                    "receiver": receiver,
                    "route_key": route_key,
                    "groups": [
                        {
                            "key": g.key,
                            "labels": dict(g.labels),
                            "next_flush_at": g.next_flush_at,
                            "has_flushed": g.has_flushed,
                            "last_notified_at": g.last_notified_at,
                            "notified_firing": sorted(g.notified_firing),
                            "members": [a.to_dict() for a in g.members.values()],
                        }
                        for g in state.groups.values()
                    ],
                }
                for (receiver, route_key), state in self._states.items()
            ],
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        route: Route,
        *,
        send_resolved: Mapping[str, bool] | None = None,
    ) -> Dispatcher:
        """Restore ``to_dict``'s output under (possibly reloaded) ``route``.

        ValueError if the data is malformed; state of routes no longer in the tree is
        dropped, as in ``set_route``.
        """
        check_version(data, _STATE_VERSION)
        dispatcher = cls(route, send_resolved=send_resolved)
        keyed = _route_index(route)
        try:
            for record in data.get("routes", []):
                state_key = (str(record["receiver"]), str(record["route_key"]))
                node = keyed.get(state_key)
                if node is None:
                    continue
                state = _RouteState(node, state_key[1])
                for g in record["groups"]:
                    group = _Group(
                        key=str(g["key"]),
                        labels=str_dict(g["labels"]),
                        next_flush_at=float(g["next_flush_at"]),
                        has_flushed=bool(g["has_flushed"]),
                        last_notified_at=opt_float(g.get("last_notified_at")),
                        notified_firing={str(fp) for fp in g["notified_firing"]},
                    )
                    for member in g["members"]:
                        alert = Alert.from_dict(member)
                        group.members[alert.fingerprint] = alert
                        state.member_of[alert.fingerprint] = group.key
                    group.notified_firing &= group.members.keys()
                    if group.members:
                        state.groups[group.key] = group
                if state.groups:
                    dispatcher._states[state_key] = state
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed dispatcher state: {exc!r}") from None
        return dispatcher


def _remove(state: _RouteState, group: _Group, fp: str) -> None:
    del group.members[fp]
    group.notified_firing.discard(fp)
    del state.member_of[fp]


def _transfer(source: _Group, target: _Group, fp: str) -> None:
    """Move a firing alert between groups of one route with what its receiver was told."""
    del source.members[fp]
    if fp in source.notified_firing:
        source.notified_firing.discard(fp)
        target.notified_firing.add(fp)
        # The receiver last heard of it then: repeat from the earliest such time.
        if source.last_notified_at is not None and (
            target.last_notified_at is None or source.last_notified_at < target.last_notified_at
        ):
            target.last_notified_at = source.last_notified_at


def _sweep(state: _RouteState, placed: set[str], current: Mapping[str, Alert], now: float) -> None:
    """Deal with members this tick did not route here."""
    if len(placed) == len(state.member_of):  # placed ⊆ members: nothing went missing
        return
    for fp, group_key in list(state.member_of.items()):
        if fp in placed:
            continue
        group = state.groups[group_key]
        alert = current.get(fp)
        if alert is not None and alert.state is AlertState.FIRING:
            _remove(state, group, fp)  # still firing, routed elsewhere now: no resolve
        elif fp not in group.notified_firing:
            _remove(state, group, fp)
        elif alert is not None:
            group.members[fp] = alert  # resolved, no longer routed here: still owed
        else:
            # Gone from the engine (retention ran out, restarted, pending again): it
            # stopped firing, and the receiver is owed the resolve.
            member = group.members[fp]
            if member.state is not AlertState.RESOLVED:
                gone = member.copy()
                gone.state = AlertState.RESOLVED
                gone.resolved_at = now
                group.members[fp] = gone


# --- helpers -------------------------------------------------------------------------


def _as_set(items: Collection[_T]) -> Collection[_T]:
    return items if isinstance(items, AbstractSet) else set(items)



