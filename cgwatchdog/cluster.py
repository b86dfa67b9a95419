"""Leadership among the replicas of a shard, through the Alertmanager cluster.

No I/O here and no clock: the daemon pushes :func:`heartbeat_alerts` to every
Alertmanager peer each cycle, reads the heartbeats back (``GET /api/v2/alerts`` filtered
by :func:`heartbeat_matchers`), and :func:`elect` says what this replica is:

    Role.LEADER     the lowest live replica name of the shard: runs actions and sends
                    direct (webhook/email) notifications
    Role.FOLLOWER   another replica leads: evaluates and pushes alerts to Alertmanager
                    (which deduplicates them), but neither acts nor notifies directly
    Role.ISOLATED   no Alertmanager peer could be read (or took our heartbeat): never
                    acts, since it cannot know whether another replica does

Rules of the election:

- A heartbeat counts when its ``alertname`` is ``CgwatchdogHeartbeat``, its ``shard``
  label is this shard (``"1/4"``; ``"1-of-4"`` is read too), its ``cluster`` label is
  this fleet's ``cluster.name`` (absent when there is none) and its ``endsAt`` is after
  ``now``. Its ``status`` is not looked at: an operator silencing the always-firing
  heartbeat must not change who leads. Entries that are not shaped like that (missing
  labels, unparsable ``endsAt``, not a mapping) are skipped.
- Replica names compare as plain strings (Python ``str`` order, i.e. by code point:
  ``"B" < "a"``, ``"a10" < "a2"``); the lowest leads. Names are unique per shard.
- A heartbeat of this shard without a ``replica`` label comes from an instance run
  without replicas, which acts regardless; it counts as the name ``""``, lower than any
  real name, so the replicas defer to it rather than act twice.
- This replica always counts itself as live: its own heartbeat may not be visible yet
  (first cycle, push in flight), and it is alive by definition.
- ``replica`` None (no replicas configured) is always the leader and reads nothing.

A leader that dies stops refreshing its heartbeat; it expires ``lifetime_intervals``
(default 3) intervals after its last push and the next replica leads from then on.
Clocks of replicas and Alertmanager peers are assumed to agree to well within an
interval (NTP).

:class:`Leadership` keeps one replica's standing over time as a state machine (its
moves in :data:`LEADERSHIP`, as the alert lifecycle keeps its own): each push and read
of the heartbeats is an event, and so is the moment this replica's own last accepted
heartbeat expires::

    ISOLATED ──seen, lowest──> JOINING ──seen, lowest, visible a lifetime──> LEADER
        │  └──seen, outranked──> FOLLOWER <──outranked── (JOINING, LEADER)
        └<──unseen (the push reached no peer), blind (no peer could be read),
            or its own heartbeat expired── (every state)

JOINING acts as a follower: a replica that has just become visible (at start, or back
from isolation) leads only once every other replica has had a heartbeat lifetime to see
it and step down, so two replicas never both act.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cgwatchdog.config import Shard, parse_shard
from cgwatchdog.errors import NotifyError
from cgwatchdog.statemachine import Transitions
from cgwatchdog.units import parse_rfc3339, rfc3339

__all__ = [
    "HEARTBEAT_ALERTNAME",
    "LEADERSHIP",
    "SERVICE_LABEL",
    "WATCHDOG_ALERTNAME",
    "Leadership",
    "LeadershipEvent",
    "Role",
    "RoleChange",
    "Standing",
    "elect",
    "heartbeat_alerts",
    "heartbeat_matchers",
    "leadership",
]

HEARTBEAT_ALERTNAME: Final = "CgwatchdogHeartbeat"
WATCHDOG_ALERTNAME: Final = "Watchdog"
# On both alerts, so a team that already routes Prometheus' own Watchdog to a dead man's
# switch can route ours apart (grouped together, one live sender would hide the other).
SERVICE_LABEL: Final = ("service", "cgwatchdog")
# ``cluster.name``: the fleet (a site) the shards split, when fleets share Alertmanager.
FLEET_LABEL: Final = "cluster"

class Role(enum.Enum):
    """What a replica does this cycle."""

    LEADER = "leader"
    FOLLOWER = "follower"
    ISOLATED = "isolated"

    @property
    def acts(self) -> bool:
        """Whether this replica runs actions and sends direct notifications."""
        return self is Role.LEADER


def heartbeat_matchers(shard: Shard, fleet: str | None = None) -> dict[str, str]:
    """Label equalities selecting this shard's heartbeats in ``GET /api/v2/alerts``
    (Alertmanager reads ``cluster=""`` as "no such label")."""
    return {"alertname": HEARTBEAT_ALERTNAME, "shard": str(shard), FLEET_LABEL: fleet or ""}


def heartbeat_alerts(
    shard: Shard,
    replica: str | None,
    now: float,
    interval_s: float,
    *,
    lifetime_intervals: float = 3.0,
    generator_url: str = "",
    fleet: str | None = None,
) -> list[dict[str, object]]:
    """The two always-firing alerts to POST to ``/api/v2/alerts`` each cycle.

    ``CgwatchdogHeartbeat`` carries ``shard`` and ``replica`` (left out when None):
    one per replica, read back by :func:`elect`. ``Watchdog`` carries ``shard`` but no
    replica, so the replicas of a shard push the same alert, Alertmanager merges them,
    and it stays firing while any replica is alive: the dead man's switch. Both end
    ``lifetime_intervals`` x ``interval_s`` after ``now`` unless pushed again.
    ``generator_url`` (the daemon's own URL) is added when given; ``fleet``
    (``cluster.name``) is the ``cluster`` label of both, and named in their text.
    """
    if not interval_s > 0 or not lifetime_intervals > 0:
        raise ValueError("interval_s and lifetime_intervals must be positive")
    starts_at = rfc3339(now)
    ends_at = rfc3339(now + lifetime_intervals * interval_s)
    shard_text = str(shard)
    fleet_labels = {} if fleet is None else {FLEET_LABEL: fleet}
    heartbeat_labels = {"alertname": HEARTBEAT_ALERTNAME, "shard": shard_text, **fleet_labels}
    if replica is not None:
        heartbeat_labels["replica"] = replica
    where = "" if fleet is None else f"{fleet} "
    who = f"{where}shard {shard_text}" + ("" if replica is None else f" replica {replica}")
    heartbeat: dict[str, object] = {
        "labels": {**heartbeat_labels, "severity": "none", SERVICE_LABEL[0]: SERVICE_LABEL[1]},
        "annotations": {
            "summary": f"cgwatchdog {who} is alive",
            "description": (
                f"Always firing while cgwatchdog {who} runs and reaches Alertmanager. "
                "The replicas of a shard elect their leader from these heartbeats (the "
                "lowest live replica name runs repairs and direct notifications). "
                "Not a problem: route it to a receiver that does nothing."
            ),
        },
        "startsAt": starts_at,
        "endsAt": ends_at,
    }
    watchdog: dict[str, object] = {
        "labels": {
            "alertname": WATCHDOG_ALERTNAME,
            "shard": shard_text,
            **fleet_labels,
            "severity": "none",
            SERVICE_LABEL[0]: SERVICE_LABEL[1],
        },
        "annotations": {
            "summary": f"cgwatchdog {where}shard {shard_text} is alive",
            "description": (
                f"Always firing while any replica of cgwatchdog shard {shard_text} runs "
                "and reaches Alertmanager. Route it to a dead man's switch (a receiver "
                "that pages when this alert stops arriving). Its absence means no "
                f"cgwatchdog watches the miners of shard {shard_text}: every replica is "
                "down, stuck, or cut off from Alertmanager, and their failures go "
                "unreported."
            ),
        },
        "startsAt": starts_at,
        "endsAt": ends_at,
    }
    if generator_url:
        heartbeat["generatorURL"] = generator_url
        watchdog["generatorURL"] = generator_url
    return [heartbeat, watchdog]


def _live_replica(alert: object, shard: Shard, fleet: str | None, now: float) -> str | None:
    """The replica name of a live heartbeat of ``shard`` (``""`` if it has none), or
    None when ``alert`` is not one."""
    if not isinstance(alert, Mapping):
        return None
    labels = alert.get("labels")
    if not isinstance(labels, Mapping) or labels.get("alertname") != HEARTBEAT_ALERTNAME:
        return None
    if labels.get(FLEET_LABEL, "") != (fleet or ""):
        return None
    shard_text = labels.get("shard")
    if not isinstance(shard_text, str):
        return None
    try:
        if parse_shard(shard_text) != shard:
            return None
    except ValueError:
        return None
    ends_at = parse_rfc3339(alert.get("endsAt"))
    if ends_at is None or ends_at <= now:
        return None
    replica = labels.get("replica", "")
    return replica if isinstance(replica, str) else None


def elect(
    heartbeats: Iterable[Mapping[str, Any]],
    shard: Shard,
    replica: str | None,
    now: float,
    *,
    fleet: str | None = None,
) -> Role:
    """LEADER if ``replica`` is the lowest live replica of ``shard`` among ``heartbeats``
    (alerts as ``GET /api/v2/alerts`` returns them) and itself, else FOLLOWER."""
    if replica is None:
        return Role.LEADER
    lowest = replica
    for alert in heartbeats:
        name = _live_replica(alert, shard, fleet, now)
        if name is not None and name < lowest:
            lowest = name
    return Role.LEADER if lowest == replica else Role.FOLLOWER


def leadership(
    read: Callable[[], Iterable[Mapping[str, Any]]],
    shard: Shard,
    replica: str | None,
    now: float,
    *,
    pushed: bool = True,
    fleet: str | None = None,
) -> Role:
    """This cycle's role, calling ``read`` for the heartbeats (e.g. a bound
    ``AlertmanagerIntegration.alerts`` with :func:`heartbeat_matchers`).

    ISOLATED when ``read`` raises NotifyError, or when ``pushed`` is False (this cycle's
    heartbeat reached no peer): the others cannot see this replica, so it must not act
    even if it reads a lower name than theirs. ``replica`` None is LEADER and reads nothing.
    """
    if replica is None:
        return Role.LEADER
    if not pushed:
        return Role.ISOLATED
    try:
        heartbeats = list(read())
    except NotifyError:
        return Role.ISOLATED
    return elect(heartbeats, shard, replica, now, fleet=fleet)


# --------------------------------------------------------------------------- over time


class Standing(enum.Enum):
    """Where a replica stands in its shard, cycle to cycle."""

    ISOLATED = "isolated"  # no peer took or showed its heartbeat: never acts
    JOINING = "joining"  # visible and lowest, but not yet for a heartbeat lifetime
    FOLLOWER = "follower"  # a lower-named replica is live
    LEADER = "leader"  # the lowest live replica, visible for a lifetime at least

    @property
    def role(self) -> Role:
        """What the replica does in a cycle: a joining replica acts as a follower."""
        return Role.FOLLOWER if self is Standing.JOINING else Role(self.value)


class LeadershipEvent(enum.Enum):
    """What one push and read of the heartbeats (or the clock) says."""

    UNSEEN = "unseen"  # the push reached no peer: the others cannot see this replica
    BLIND = "blind"  # the push was accepted, but no peer could be read back
    OUTRANKED = "outranked"  # a lower-named replica's heartbeat is live
    LOWEST = "lowest"  # this replica is the lowest live one, visible for less than a lifetime
    SETTLED = "settled"  # the lowest live one, visible for a lifetime at least
    EXPIRED = "expired"  # this replica's last accepted heartbeat has expired unrefreshed


_S, _E = Standing, LeadershipEvent
LEADERSHIP: Final = Transitions[Standing, LeadershipEvent](
    "leadership",
    {
        _S.ISOLATED: {
            _E.UNSEEN: _S.ISOLATED,
            _E.BLIND: _S.ISOLATED,
            _E.EXPIRED: _S.ISOLATED,
            _E.OUTRANKED: _S.FOLLOWER,
            _E.LOWEST: _S.JOINING,
            _E.SETTLED: _S.LEADER,  # blind for a while, but seen all along
        },
        _S.JOINING: {
            _E.UNSEEN: _S.ISOLATED,
            _E.BLIND: _S.ISOLATED,
            _E.EXPIRED: _S.ISOLATED,
            _E.OUTRANKED: _S.FOLLOWER,
            _E.LOWEST: _S.JOINING,
            _E.SETTLED: _S.LEADER,
        },
        _S.FOLLOWER: {
            _E.UNSEEN: _S.ISOLATED,
            _E.BLIND: _S.ISOLATED,
            _E.EXPIRED: _S.ISOLATED,
            _E.OUTRANKED: _S.FOLLOWER,
            _E.LOWEST: _S.JOINING,
            _E.SETTLED: _S.LEADER,
        },
        _S.LEADER: {
            _E.UNSEEN: _S.ISOLATED,
            _E.BLIND: _S.ISOLATED,
            _E.EXPIRED: _S.ISOLATED,
            _E.OUTRANKED: _S.FOLLOWER,
            _E.SETTLED: _S.LEADER,
        },
    },
)
"""Where each event moves a replica. A LEADER never meets LOWEST: it has been visible
for a lifetime, and only UNSEEN and EXPIRED restart visibility (both isolate)."""
del _S, _E


@dataclass(frozen=True, slots=True)
class RoleChange:
    """The role a cycle runs as, and the one the previous cycle ran as (None: first)."""

    previous: Role | None
    role: Role

    @property
    def changed(self) -> bool:
        """Whether the role differs from the previous cycle's."""
        return self.previous is not self.role


class Leadership:
    """One replica's standing in its shard over time; no I/O, the clock an argument.

    Feed it each push-and-read outcome with :meth:`heard`; ask :meth:`role_at` at the
    start of each cycle. ``replica`` None (no replicas configured) always leads.
    ``lifetime_s`` is how long a pushed heartbeat stays live on Alertmanager.
    """

    __slots__ = ("_cycle_role", "_visible_since", "last_push_at", "lifetime_s", "replica",
                 "standing", "valid_until")  # fmt: skip

    def __init__(self, replica: str | None, lifetime_s: float) -> None:
        self.replica = replica
        self.lifetime_s = lifetime_s
        self.standing = Standing.ISOLATED if replica is not None else Standing.LEADER
        self.valid_until = -math.inf if replica is not None else math.inf
        """Until when the standing holds without a newer accepted heartbeat."""
        self.last_push_at: float | None = None
        """When the last push a peer accepted was made (None: none yet, or it failed)."""
        self._visible_since: float | None = None
        self._cycle_role: Role | None = None

    def reset(self, replica: str | None, lifetime_s: float) -> None:
        """Start afresh (the shard or replica name changed on reload)."""
        self.__init__(replica, lifetime_s)  # type: ignore[misc]

    def _move(self, event: LeadershipEvent) -> None:
        self.standing = LEADERSHIP.next(self.standing, event)
        if event in (LeadershipEvent.UNSEEN, LeadershipEvent.EXPIRED):
            self._visible_since = None  # the others stopped seeing this replica

    def heard(self, read: Role, *, pushed: bool, at: float) -> Standing:
        """Take the outcome of the push made at ``at`` and the read after it: ``pushed``
        whether a peer accepted this replica's heartbeat, ``read`` what :func:`leadership`
        found (ISOLATED: no peer could be read). Returns the new standing."""
        if self.replica is None:
            return self.standing
        if not pushed:
            self.last_push_at = None
            self.valid_until = -math.inf
            self._move(LeadershipEvent.UNSEEN)
            return self.standing
        self.last_push_at = at
        self.valid_until = at + self.lifetime_s
        if self._visible_since is None:
            self._visible_since = at
        if read is Role.ISOLATED:
            event = LeadershipEvent.BLIND
        elif read is Role.FOLLOWER:
            event = LeadershipEvent.OUTRANKED
        elif at - self._visible_since >= self.lifetime_s:
            event = LeadershipEvent.SETTLED
        else:
            event = LeadershipEvent.LOWEST
        self._move(event)
        return self.standing

    def role_at(self, now: float) -> RoleChange:
        """The role for a cycle starting at ``now`` (ISOLATED once this replica's own
        heartbeat has expired unrefreshed: the others no longer see it then)."""
        if now > self.valid_until and self.replica is not None:
            self._move(LeadershipEvent.EXPIRED)  # isolated too: visibility starts afresh
        change = RoleChange(self._cycle_role, self.standing.role)
        self._cycle_role = change.role
        return change
