"""The alert lifecycle and notification grouping (cgwatchdog/alerts.py).

Time is injected: each test drives ``now`` by hand, one evaluation cycle per step.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cgwatchdog.alerts import (
    FLEET_INCIDENT_MIN_MINERS,
    RESOLVED_RETENTION_S,
    TRANSITIONS,
    Alert,
    AlertEngine,
    AlertEvent,
    AlertState,
    AlertView,
    Dispatcher,
    Evaluation,
    Judged,
    Matcher,
    Notification,
    Route,
    Signal,
    Silence,
    Transition,
    fingerprint,
    fleet_incidents,
)
from cgwatchdog.errors import ConfigError

INACTIVE, PENDING, FIRING, RESOLVED = (
    AlertState.INACTIVE,
    AlertState.PENDING,
    AlertState.FIRING,
    AlertState.RESOLVED,
)


def sig(
    alertname: str,
    miner: str,
    *,
    for_s: float = 0.0,
    keep_s: float = 0.0,
    value: str = "v",
    summary: str = "",
    extra: Mapping[str, str] | None = None,
    **labels: str,
) -> Signal:
    return Signal(
        labels={"alertname": alertname, "miner": miner, **(extra or {}), **labels},
        annotations={"summary": summary or f"{alertname} on {miner}"},
        value=value,
        for_s=for_s,
        keep_firing_for_s=keep_s,
    )


def evaluation(
    *signals: Signal,
    evaluated: Iterable[tuple[str, str]] = (),
    held: Collection[str] = (),
) -> Evaluation:
    pairs = {(s.labels["alertname"], s.labels["miner"]) for s in signals} | set(evaluated)
    return Evaluation(signals=signals, evaluated=pairs, held_miners=held)


def states(engine: AlertEngine) -> dict[str, AlertState]:
    return {a.miner + "/" + a.alertname: a.state for a in engine.alerts()}


def moves(transitions: Sequence[Transition]) -> list[tuple[AlertState, AlertState]]:
    return [(t.old, t.new) for t in transitions]


# --- fingerprints and the transition table ------------------------------------------


def test_fingerprint_matches_prometheus_label_set_fingerprint() -> None:
    # Vectors from prometheus/common model (signature_test.go, 0xFF separator).
    assert fingerprint({}) == "cbf29ce484222325"
    assert (
        fingerprint({"name": "garland, briggs", "fear": "love is not enough"})
        == f"{5799056148416392346:016x}"
        == "507a62d79ee76c9a"
    )
    assert fingerprint({"a": "b", "c": "d"}) == fingerprint({"c": "d", "a": "b"})
    assert fingerprint({"ab": "c"}) != fingerprint({"a": "bc"})
    assert fingerprint({"miner": "é"}) != fingerprint({"miner": "e"})


def test_transition_table_never_goes_pending_to_resolved() -> None:
    assert AlertState.RESOLVED not in TRANSITIONS[PENDING].values()
    assert TRANSITIONS.next(INACTIVE, AlertEvent.ACTIVATED) is PENDING
    assert TRANSITIONS.next(RESOLVED, AlertEvent.ACTIVATED) is PENDING
    with pytest.raises(ValueError, match="no alert transition from pending"):
        TRANSITIONS.next(PENDING, AlertEvent.KEEP_FIRING_ELAPSED)


# --- the lifecycle -------------------------------------------------------------------


def test_pending_fires_exactly_when_for_has_elapsed() -> None:
    engine = AlertEngine()
    s = sig("DeviceDead", "m1", for_s=120)
    assert moves(engine.update(evaluation(s), 1000.0)) == [(INACTIVE, PENDING)]
    assert moves(engine.update(evaluation(s), 1119.999)) == []
    (alert,) = engine.alerts()
    assert alert.state is PENDING and alert.active_since == 1000.0
    (t,) = engine.update(evaluation(s), 1120.0)
    assert (t.old, t.new) == (PENDING, FIRING)
    assert t.alert.fired_at == 1120.0 and t.alert.active_since == 1000.0
    assert engine.firing()[0].fingerprint == fingerprint(s.labels) == t.fingerprint


def test_zero_for_fires_at_once() -> None:
    engine = AlertEngine()
    (t,) = engine.update(evaluation(sig("PoolStale", "m1")), 5.0)
    assert (t.old, t.new) == (INACTIVE, FIRING)
    assert t.alert.fired_at == t.alert.active_since == 5.0


def test_pending_that_turns_false_is_dropped_unnotified() -> None:
    engine = AlertEngine()
    s = sig("DeviceDead", "m1", for_s=120)
    engine.update(evaluation(s), 0.0)
    (t,) = engine.update(evaluation(evaluated=[("DeviceDead", "m1")]), 60.0)
    assert (t.old, t.new) == (PENDING, INACTIVE)
    assert engine.alerts() == []
    # A new activation starts the `for` clock again.
    engine.update(evaluation(s), 100.0)
    assert engine.update(evaluation(s), 219.0) == []
    assert moves(engine.update(evaluation(s), 220.0)) == [(PENDING, FIRING)]


def test_keep_firing_for_counts_from_last_seen_and_absorbs_flaps() -> None:
    engine = AlertEngine()
    s = sig("HashrateDrop", "m1", keep_s=30)
    false = evaluation(evaluated=[("HashrateDrop", "m1")])
    engine.update(evaluation(s), 0.0)
    engine.update(evaluation(s), 10.0)  # last seen true at 10
    assert engine.update(false, 20.0) == []
    assert engine.update(evaluation(s), 30.0) == []  # flap: never left FIRING
    assert engine.update(false, 59.999) == []
    (alert,) = engine.firing()
    assert alert.active_since == 0.0 and alert.fired_at == 0.0 and alert.last_seen == 30.0
    (t,) = engine.update(false, 60.0)
    assert (t.old, t.new) == (FIRING, RESOLVED) and t.alert.resolved_at == 60.0


def test_zero_keep_firing_for_resolves_on_first_false_evaluation() -> None:
    engine = AlertEngine()
    engine.update(evaluation(sig("PoolStale", "m1")), 0.0)
    (t,) = engine.update(evaluation(evaluated=[("PoolStale", "m1")]), 30.0)
    assert (t.old, t.new) == (FIRING, RESOLVED)


def test_resolved_alert_is_kept_for_the_retention_then_dropped() -> None:
    engine = AlertEngine()
    engine.update(evaluation(sig("PoolStale", "m1")), 0.0)
    engine.update(evaluation(evaluated=[("PoolStale", "m1")]), 100.0)
    # Retention runs whether or not the pair is evaluated (the miner may be gone).
    assert engine.update(evaluation(), 100.0 + RESOLVED_RETENTION_S) == []
    assert states(engine) == {"m1/PoolStale": RESOLVED}
    (t,) = engine.update(evaluation(), 100.0 + RESOLVED_RETENTION_S + 0.001)
    assert (t.old, t.new) == (RESOLVED, INACTIVE)
    assert engine.alerts() == []


def test_true_again_after_resolve_is_a_new_alert() -> None:
    engine = AlertEngine()
    s = sig("DeviceDead", "m1", for_s=60)
    engine.update(evaluation(s), 0.0)
    engine.update(evaluation(s), 60.0)
    (resolved,) = engine.update(evaluation(evaluated=[("DeviceDead", "m1")]), 90.0)
    (t,) = engine.update(evaluation(s), 120.0)
    assert (t.old, t.new) == (RESOLVED, PENDING)
    assert t.alert.active_since == 120.0 and t.alert.fired_at is None
    assert t.alert.resolved_at is None
    assert resolved.alert.state is RESOLVED and resolved.alert.resolved_at == 90.0  # snapshot
    # With for 0 the new alert fires at once.
    engine.update(evaluation(evaluated=[("DeviceDead", "m1")]), 130.0)
    engine.update(evaluation(sig("PoolStale", "m1")), 130.0)
    engine.update(evaluation(evaluated=[("PoolStale", "m1")]), 140.0)
    assert moves(engine.update(evaluation(sig("PoolStale", "m1")), 150.0)) == [(RESOLVED, FIRING)]


def test_annotations_and_value_refresh_while_active() -> None:
    engine = AlertEngine()
    engine.update(evaluation(sig("HashrateDrop", "m1", value="9 TH/s", summary="a")), 0.0)
    (alert,) = engine.alerts()
    old_annotations = alert.annotations
    engine.update(evaluation(sig("HashrateDrop", "m1", value="8 TH/s", summary="b")), 30.0)
    assert alert.value == "8 TH/s" and alert.annotations == {"summary": "b"}
    assert old_annotations == {"summary": "a"}  # replaced, not mutated
    assert alert.last_seen == 30.0 and alert.active_since == 0.0


def test_alerts_whose_pair_was_not_evaluated_keep_their_state() -> None:
    engine = AlertEngine()
    dead = sig("DeviceDead", "m1", for_s=60)
    stale = sig("PoolStale", "m1")
    engine.update(evaluation(dead, stale), 0.0)
    # m1 unreachable: its device and pool rules could not run. Nothing moves, not even
    # past `for` (firing needs a true condition) or past keep_firing_for.
    other = [("DeviceDead", "m2"), ("PoolStale", "m2")]
    for now in (100.0, 1000.0, 5000.0):
        assert engine.update(evaluation(evaluated=other), now) == []
    assert states(engine) == {"m1/DeviceDead": PENDING, "m1/PoolStale": FIRING}
    # Evaluated again: false resolves/drops, true fires.
    result = engine.update(evaluation(dead, evaluated=[("PoolStale", "m1")]), 5030.0)
    assert sorted(moves(result), key=str) == [(FIRING, RESOLVED), (PENDING, FIRING)]


def test_held_miner_neither_resolves_nor_fires_during_grace() -> None:
    engine = AlertEngine()
    firing = sig("DeviceDead", "m1")
    pending = sig("HashrateDrop", "m1", for_s=60)
    engine.update(evaluation(firing), 0.0)
    engine.update(evaluation(pending), 10.0)
    assert states(engine) == {"m1/DeviceDead": FIRING, "m1/HashrateDrop": PENDING}
    held = {"m1"}
    # Restart at 20: DeviceDead false, HashrateDrop true past its `for`, a new condition.
    during = evaluation(
        pending,
        sig("PoolStale", "m1"),
        evaluated=[("DeviceDead", "m1")],
        held=held,
    )
    assert moves(engine.update(during, 100.0)) == [(INACTIVE, PENDING)]
    assert moves(engine.update(during, 300.0)) == []
    assert states(engine) == {
        "m1/DeviceDead": FIRING,
        "m1/HashrateDrop": PENDING,
        "m1/PoolStale": PENDING,  # for 0, but may not fire while held
    }
    # Grace over: DeviceDead still false resolves now, the others fire now.
    after = evaluation(pending, sig("PoolStale", "m1"), evaluated=[("DeviceDead", "m1")])
    result = {t.alert.alertname: (t.old, t.new) for t in engine.update(after, 330.0)}
    assert result == {
        "DeviceDead": (FIRING, RESOLVED),
        "HashrateDrop": (PENDING, FIRING),
        "PoolStale": (PENDING, FIRING),
    }


def test_held_miner_pending_alert_that_turns_false_is_dropped() -> None:
    engine = AlertEngine()
    engine.update(evaluation(sig("HashrateDrop", "m1", for_s=600)), 0.0)
    result = engine.update(evaluation(evaluated=[("HashrateDrop", "m1")], held={"m1"}), 30.0)
    assert moves(result) == [(PENDING, INACTIVE)]


def test_retire_resolves_firing_and_drops_pending() -> None:
    engine = AlertEngine()
    engine.update(evaluation(sig("A", "gone"), sig("B", "gone", for_s=60), sig("A", "kept")), 0.0)
    result = engine.retire(lambda a: a.miner == "gone", 10.0)
    assert sorted(moves(result), key=str) == [(FIRING, RESOLVED), (PENDING, INACTIVE)]
    assert states(engine) == {"gone/A": RESOLVED, "kept/A": FIRING}
    assert engine.get(fingerprint({"alertname": "A", "miner": "gone"})) is not None


def test_engine_state_round_trips_through_json() -> None:
    engine = AlertEngine()
    engine.update(evaluation(sig("A", "m1"), sig("B", "m1", for_s=60, keep_s=30)), 0.0)
    engine.update(evaluation(sig("B", "m1", for_s=60, keep_s=30), evaluated=[("A", "m1")]), 60.0)
    restored = AlertEngine.from_dict(json.loads(json.dumps(engine.to_dict())))
    assert [a.to_dict() for a in restored.alerts()] == [a.to_dict() for a in engine.alerts()]
    step = evaluation(evaluated=[("B", "m1")])
    assert moves(restored.update(step, 95.0)) == moves(engine.update(step, 95.0))


def test_malformed_state_raises_value_error() -> None:
    with pytest.raises(ValueError):
        AlertEngine.from_dict({"version": 99, "alerts": []})
    with pytest.raises(ValueError):
        AlertEngine.from_dict({"version": 1, "alerts": [{"labels": {}}]})
    with pytest.raises(ValueError):
        Alert.from_dict({"labels": {}, "state": "inactive", "active_since": 0, "last_seen": 0})
    with pytest.raises(ValueError):
        Dispatcher.from_dict({"version": 1, "routes": [{"receiver": "x"}]}, ROOT)


# --- fleet incidents -----------------------------------------------------------------


def engine_with(alerts: dict[str, list[str]], *, for_s: float = 0.0) -> AlertEngine:
    engine = AlertEngine()
    signals = [sig(name, m, for_s=for_s) for name, miners in alerts.items() for m in miners]
    engine.update(evaluation(*signals), 0.0)
    return engine


def test_fleet_incident_share_and_minimum() -> None:
    miners = [f"m{i}" for i in range(100)]
    engine = engine_with({"PoolStale": miners[:30], "DeviceDead": miners[:29]}, for_s=60)
    assert fleet_incidents(engine.alerts(), 100, 0.3) == {"PoolStale"}  # pending counts
    # 0.3 * 10 is 3.0000000000000004 in floats: still 3 miners.
    assert fleet_incidents(engine_with({"X": miners[:3]}).alerts(), 10, 0.3) == {"X"}
    # Never below FLEET_INCIDENT_MIN_MINERS distinct miners, whatever the share.
    assert FLEET_INCIDENT_MIN_MINERS == 3
    assert fleet_incidents(engine_with({"X": ["a", "b"]}).alerts(), 2, 0.3) == set()
    assert fleet_incidents(engine_with({"X": ["a", "b"]}).alerts(), 2, 0.3, min_miners=2) == {"X"}
    assert fleet_incidents(engine.alerts(), 100, 0.0) == set()  # disabled
    assert fleet_incidents(engine.alerts(), 0, 0.3) == set()


def test_fleet_incident_counts_distinct_miners_and_ignores_resolved() -> None:
    engine = AlertEngine()
    devices = [sig("DeviceDead", "m1", device=str(d)) for d in range(5)]
    engine.update(evaluation(*devices), 0.0)
    assert fleet_incidents(engine.alerts(), 5, 0.3) == set()  # five devices, one miner
    engine.update(evaluation(*(sig("PoolStale", f"m{i}") for i in range(5))), 0.0)
    assert fleet_incidents(engine.alerts(), 5, 0.5) == {"PoolStale"}
    engine.update(evaluation(evaluated=[("PoolStale", f"m{i}") for i in range(5)]), 10.0)
    assert fleet_incidents(engine.alerts(), 5, 0.5) == set()


# --- routing and silences ------------------------------------------------------------


def route(
    receiver: str,
    *matchers: Matcher,
    group_by: tuple[str, ...] = ("alertname",),
    wait: float = 30.0,
    interval: float = 300.0,
    repeat: float = 3600.0,
    continue_: bool = False,
    routes: tuple[Route, ...] = (),
) -> Route:
    return Route(
        receiver=receiver,
        group_by=group_by,
        group_wait_s=wait,
        group_interval_s=interval,
        repeat_interval_s=repeat,
        matchers=matchers,
        continue_=continue_,
        routes=routes,
    )


ROOT = route("chat")

TREE = route(
    "chat",
    group_by=("alertname", "site"),
    routes=(
        route("pager", Matcher("severity", "critical"), continue_=True),
        route(
            "rack1",
            Matcher("miner", "rack1-.*", regex=True),
            routes=(route("facilities", Matcher("alertname", "TooHot|FanFailed", regex=True)),),
        ),
        route("south", Matcher("site", "south")),
        route("never", Matcher("site", "south")),  # shadowed by "south" (no continue)
    ),
)


def receivers(labels: dict[str, str], tree: Route = TREE) -> list[str]:
    return [r.receiver for r in tree.match(labels)]


def test_routing_depth_first_with_continue_and_match_re() -> None:
    crit_south = {"alertname": "PoolStale", "miner": "s-1", "severity": "critical", "site": "south"}
    assert receivers(crit_south) == ["pager", "south"]
    hot = {"alertname": "TooHot", "miner": "rack1-07", "severity": "critical"}
    assert receivers(hot) == ["pager", "facilities"]
    assert receivers({"alertname": "DeviceDead", "miner": "rack1-07"}) == ["rack1"]
    # match_re is anchored at both ends, like Alertmanager's.
    assert receivers({"alertname": "DeviceDead", "miner": "xrack1-07"}) == ["chat"]
    assert receivers({"alertname": "TooHotter", "miner": "rack1-1"}) == ["rack1"]
    assert receivers({"alertname": "DeviceDead", "site": "north"}) == ["chat"]


def test_route_matchers_treat_missing_labels_as_empty() -> None:
    tree = route(
        "chat",
        routes=(
            route("no-device", Matcher("device", "")),
            route("anything", Matcher("pool", ".*", regex=True)),
        ),
    )
    assert receivers({"alertname": "A"}, tree) == ["no-device"]
    assert receivers({"alertname": "A", "device": "0"}, tree) == ["anything"]
    assert route("x", Matcher("site", "north")).match({"site": "south"}) == []


def test_group_labels_and_group_by_all() -> None:
    labels = {"alertname": "A", "miner": "m1", "site": "north"}
    assert route("x", group_by=("alertname", "site", "pool")).group_labels(labels) == {
        "alertname": "A",
        "site": "north",
    }
    assert route("x", group_by=("...",)).group_labels(labels) == labels
    assert route("x", group_by=()).group_labels(labels) == {}


def test_invalid_routes_matchers_and_silences_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid regex"):
        Matcher("miner", "(", regex=True)
    with pytest.raises(ConfigError, match="group_interval"):
        route("x", interval=0)
    with pytest.raises(ConfigError, match="alone"):
        route("x", group_by=("...", "site"))
    with pytest.raises(ConfigError, match="at least one matcher"):
        Silence(matchers=(), ends_at=10.0)


def test_silence_window_is_start_inclusive_end_exclusive() -> None:
    silence = Silence((Matcher("miner", "m1"),), ends_at=200.0, starts_at=100.0, comment="swap")
    labels = {"alertname": "A", "miner": "m1"}
    assert not silence.silences(labels, 99.9)
    assert silence.silences(labels, 100.0)
    assert silence.silences(labels, 199.9)
    assert not silence.silences(labels, 200.0)
    assert not silence.silences({"miner": "m2"}, 150.0)
    assert Silence((Matcher("miner", "m.*", regex=True),), ends_at=1.0).silences(labels, 0.0)


# --- the dispatcher ------------------------------------------------------------------


@dataclass
class Farm:
    """An engine and a dispatcher driven the way the daemon drives them."""

    route: Route
    send_resolved: dict[str, bool] = field(default_factory=dict)
    fleet_size: int = 0
    share: float = 0.3
    engine: AlertEngine = field(default_factory=AlertEngine)
    dispatcher: Dispatcher = field(init=False)
    sent: list[tuple[float, Notification]] = field(default_factory=list)
    transitions: list[tuple[float, Transition]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dispatcher = Dispatcher(self.route, send_resolved=self.send_resolved)

    def cycle(
        self,
        now: float,
        signals: Sequence[Signal],
        evaluated: Iterable[tuple[str, str]] = (),
        silences: Sequence[Silence] = (),
        held: Collection[str] = (),
    ) -> list[Notification]:
        self.transitions += [
            (now, t)
            for t in self.engine.update(evaluation(*signals, evaluated=evaluated, held=held), now)
        ]
        incidents = (
            fleet_incidents(self.engine.alerts(), self.fleet_size, self.share)
            if self.fleet_size
            else set()
        )
        sent = self.dispatcher.tick(self.engine.alerts(), silences, now, fleet_incidents=incidents)
        self.sent += [(now, n) for n in sent]
        return sent

    def restart(self) -> None:
        """What a daemon restart does: state through the store (JSON), new objects."""
        engine_state = json.loads(json.dumps(self.engine.to_dict()))
        dispatcher_state = json.loads(json.dumps(self.dispatcher.to_dict()))
        self.engine = AlertEngine.from_dict(engine_state)
        self.dispatcher = Dispatcher.from_dict(
            dispatcher_state, self.route, send_resolved=self.send_resolved
        )


Scenario = Callable[[float], tuple[list[Signal], list[Silence]]]


def run(
    farm: Farm,
    scenario: Scenario,
    until: float,
    *,
    step: float = 10.0,
    universe: Iterable[tuple[str, str]] = (),
    restart_at: float | None = None,
) -> list[tuple[float, str, str, list[tuple[str, str]]]]:
    """Cycle every ``step`` seconds; return (time, receiver, status, [(miner, status)])."""
    pairs = list(universe)
    now = 0.0
    while now <= until:
        if restart_at is not None and now == restart_at:
            farm.restart()
        signals, silences = scenario(now)
        farm.cycle(now, signals, pairs, silences)
        now += step
    return [
        (t, n.receiver, n.status, [(a.labels["miner"], a.status) for a in n.alerts])
        for t, n in farm.sent
    ]


def firing_between(*spans: tuple[str, float, float], **labels: str) -> Scenario:
    """Scenario: alert A on each miner is true from start (inclusive) to end (exclusive)."""

    def scenario(now: float) -> tuple[list[Signal], list[Silence]]:
        return [sig("A", m, extra=labels) for m, start, end in spans if start <= now < end], []

    return scenario


UNIVERSE = [("A", f"m{i}") for i in range(4)]


def test_group_wait_group_interval_and_repeat_interval_timing() -> None:
    farm = Farm(route("chat", wait=30, interval=300, repeat=3600))
    scenario = firing_between(("m1", 0, 4000), ("m2", 100, 4300), ("m3", 5000, 9e9))
    sent = run(farm, scenario, 6000, universe=UNIVERSE)
    assert sent == [
        (30, "chat", "firing", [("m1", "firing")]),  # group_wait after the first alert
        (330, "chat", "firing", [("m1", "firing"), ("m2", "firing")]),  # next group_interval
        (3930, "chat", "firing", [("m1", "firing"), ("m2", "firing")]),  # repeat_interval
        (4230, "chat", "firing", [("m1", "resolved"), ("m2", "firing")]),
        (4530, "chat", "resolved", [("m2", "resolved")]),  # the group then empties, dropped
        (5030, "chat", "firing", [("m3", "firing")]),  # a new group waits group_wait again
    ]
    resolved = farm.sent[3][1].alerts[0]
    assert resolved.ends_at == 4000.0 and resolved.starts_at == 0.0
    assert farm.sent[0][1].alerts[0].ends_at is None


def test_renotify_repeats_notified_firing_groups_once_at_the_next_tick() -> None:
    """A replica taking over sends what it holds firing once more (at-least-once)."""
    farm = Farm(route("chat", wait=30, interval=300, repeat=3600))
    scenario = firing_between(("m1", 0, 9e9), ("m2", 0, 9e9))
    run(farm, scenario, 600, universe=UNIVERSE)
    assert [(t, n.status) for t, n in farm.sent] == [(30, "firing")]
    farm.sent.clear()
    assert farm.dispatcher.renotify(610) == 1
    sent = farm.cycle(610, scenario(610)[0], UNIVERSE)
    assert [[(a.labels["miner"], a.status) for a in n.alerts] for n in sent] == [
        [("m1", "firing"), ("m2", "firing")]
    ]
    for now in (620, 910, 1210):  # once, not every tick; group_interval with no change
        assert farm.cycle(now, scenario(now)[0], UNIVERSE) == []
    assert [t for t, _ in farm.sent] == [610]


def test_renotify_leaves_groups_never_notified_to_their_group_wait() -> None:
    farm = Farm(route("chat", wait=30, interval=300, repeat=3600))
    farm.cycle(0, [sig("A", "m1")], UNIVERSE)
    assert farm.dispatcher.renotify(5) == 0
    assert farm.cycle(10, [sig("A", "m1")], UNIVERSE) == []
    assert len(farm.cycle(30, [sig("A", "m1")], UNIVERSE)) == 1


def test_alert_resolved_within_group_wait_is_never_notified() -> None:
    farm = Farm(route("chat", wait=60))
    assert run(farm, firing_between(("m1", 0, 30)), 2000, universe=UNIVERSE) == []


def test_pending_alerts_are_never_notified() -> None:
    farm = Farm(route("chat", wait=0))

    def scenario(now: float) -> tuple[list[Signal], list[Silence]]:
        return [sig("A", "m1", for_s=300)] if now < 600 else [], []

    sent = run(farm, scenario, 2000, universe=UNIVERSE)
    assert [(t, status) for t, _, status, _ in sent] == [(300, "firing"), (600, "resolved")]


def test_flap_within_keep_firing_for_sends_nothing_new() -> None:
    farm = Farm(route("chat", wait=30, interval=300, repeat=3600))

    def scenario(now: float) -> tuple[list[Signal], list[Silence]]:
        flapping = now < 400 or 500 <= now < 600 or now >= 700
        return ([sig("A", "m1", keep_s=120)] if flapping else []), []

    sent = run(farm, scenario, 3000, universe=UNIVERSE)
    assert sent == [(30, "chat", "firing", [("m1", "firing")])]
    assert [(t.old, t.new) for _, t in farm.transitions] == [(INACTIVE, FIRING)]


def test_resolve_and_refire_between_flushes_is_absorbed_like_alertmanager() -> None:
    farm = Farm(route("chat", wait=30, interval=300, repeat=3600))
    sent = run(farm, firing_between(("m1", 0, 100), ("m1", 200, 9e9)), 1000, universe=UNIVERSE)
    assert sent == [(30, "chat", "firing", [("m1", "firing")])]


def test_silence_expiry_notifies_at_next_flush_if_still_firing() -> None:
    farm = Farm(route("chat", wait=30, interval=300))
    silence = Silence((Matcher("miner", "m1"),), ends_at=1000.0)

    def scenario(now: float) -> tuple[list[Signal], list[Silence]]:
        return [sig("A", "m1")], [silence]

    sent = run(farm, scenario, 2000, universe=UNIVERSE)
    # Flushes at 30, 330, 630, 930 find only a silenced alert; 1230 is the first after.
    assert sent == [(1230, "chat", "firing", [("m1", "firing")])]


def test_silenced_whole_time_then_resolved_sends_no_resolve_notice() -> None:
    farm = Farm(route("chat", wait=30, interval=300))
    silence = Silence((Matcher("miner", "m1"),), ends_at=1000.0)

    def scenario(now: float) -> tuple[list[Signal], list[Silence]]:
        signals = [sig("A", "m2")] + ([sig("A", "m1")] if now < 500 else [])
        return signals, [silence]

    sent = run(farm, scenario, 3000, universe=UNIVERSE)
    assert sent == [(30, "chat", "firing", [("m2", "firing")])]


def test_resolve_of_a_notified_alert_waits_for_its_silence_to_end() -> None:
    farm = Farm(route("chat", wait=30, interval=300, repeat=3600))
    silence = Silence((Matcher("miner", "m1"),), starts_at=100.0, ends_at=2000.0)

    def scenario(now: float) -> tuple[list[Signal], list[Silence]]:
        return ([sig("A", "m1")] if now < 200 else []), [silence]

    sent = run(farm, scenario, 3000, universe=UNIVERSE)
    # Silencing is not news; the resolve is withheld while silenced, then owed.
    assert sent == [
        (30, "chat", "firing", [("m1", "firing")]),
        (2130, "chat", "resolved", [("m1", "resolved")]),
    ]


def test_receiver_without_send_resolved_is_not_repinged_by_resolves() -> None:
    farm = Farm(route("mail", wait=30, interval=300, repeat=3600), send_resolved={"mail": False})
    scenario = firing_between(("m1", 0, 1000), ("m2", 0, 9e9))
    sent = run(farm, scenario, 4000, universe=UNIVERSE)
    assert sent == [
        (30, "mail", "firing", [("m1", "firing"), ("m2", "firing")]),
        (3630, "mail", "firing", [("m2", "firing")]),  # the repeat: m1 long forgotten
    ]


def test_each_matching_route_notifies_its_own_receiver() -> None:
    farm = Farm(TREE)
    labels = {"severity": "critical", "site": "south"}
    run(farm, firing_between(("m1", 0, 9e9), **labels), 100, universe=UNIVERSE)
    assert [(t, n.receiver, n.group_key) for t, n in farm.sent] == [
        (30, "pager", '{}/{severity="critical"}:{alertname="A"}'),
        (30, "south", '{}/{site="south"}:{alertname="A"}'),
    ]
    assert farm.sent[0][1].group_labels == {"alertname": "A"}


def test_fleet_incident_sends_one_grouped_notification() -> None:
    per_miner = route("chat", group_by=("alertname", "miner"))
    miners = [f"m{i}" for i in range(100)]

    def scenario(now: float) -> tuple[list[Signal], list[Silence]]:
        return ([sig("PoolStale", m, severity="critical") for m in miners] if now < 600 else []), []

    universe = [("PoolStale", m) for m in miners]
    incident = Farm(per_miner, fleet_size=100, share=0.3)
    sent = run(incident, scenario, 1000, universe=universe)
    assert [(t, status, len(alerts)) for t, _, status, alerts in sent] == [
        (30, "firing", 100),
        (630, "resolved", 100),
    ]
    (_, first), _ = incident.sent
    assert first.group_labels == {"alertname": "PoolStale", "fleet_incident": "true"}
    assert first.common_labels == {"alertname": "PoolStale", "severity": "critical"}
    # The same fleet without incident detection: one notification per miner.
    plain = Farm(per_miner)
    assert len([n for n in run(plain, scenario, 100, universe=universe)]) == 100


def test_fleet_incident_regrouping_neither_repeats_nor_falsely_resolves() -> None:
    per_miner = route("chat", group_by=("alertname", "miner"), wait=30, interval=300)
    miners = [f"m{i}" for i in range(100)]

    def scenario(now: float) -> tuple[list[Signal], list[Silence]]:
        early = miners[:2] if now < 500 else []
        wave = miners[2:32] if 100 <= now < 200 else []
        return [sig("A", m) for m in early + wave], []

    farm = Farm(per_miner, fleet_size=100, share=0.3)
    sent = run(farm, scenario, 1200, universe=[("A", m) for m in miners])
    summary = [(t, status, len(a), sum(s == "firing" for _, s in a)) for t, _, status, a in sent]
    assert summary == [
        (30, "firing", 1, 1),  # m0 alone in its group
        (30, "firing", 1, 1),  # m1 alone in its group
        (130, "firing", 32, 32),  # incident: m0, m1 moved in (no resolve from old groups)
        (430, "resolved", 30, 0),  # the wave resolved; m0, m1 went back without a repeat
        (530, "resolved", 1, 0),  # m0's resolve from its own group again
        (530, "resolved", 1, 0),  # m1's
    ]
    assert [alerts[0][0] for _, _, _, alerts in sent[-2:]] == ["m0", "m1"]


def test_restart_in_the_middle_neither_forgets_nor_resends() -> None:
    scenario = firing_between(("m1", 0, 5000), ("m2", 100, 9e9), ("m3", 2000, 2400))

    def sequence(restart_at: float | None) -> list[tuple[float, str, str, list[tuple[str, str]]]]:
        farm = Farm(route("chat", wait=30, interval=300, repeat=3600))
        return run(farm, scenario, 8000, universe=UNIVERSE, restart_at=restart_at)

    baseline = sequence(None)
    assert [(t, alerts) for t, _, _, alerts in baseline] == [
        (30, [("m1", "firing")]),
        (330, [("m1", "firing"), ("m2", "firing")]),
        (2130, [("m1", "firing"), ("m2", "firing"), ("m3", "firing")]),
        (2430, [("m1", "firing"), ("m2", "firing"), ("m3", "resolved")]),
        (5130, [("m1", "resolved"), ("m2", "firing")]),
    ]
    for restart_at in (40.0, 330.0, 2110.0, 2130.0, 2400.0, 5000.0, 5120.0, 7000.0):
        assert sequence(restart_at) == baseline, restart_at


def test_reload_keeps_groups_and_notification_log() -> None:
    farm = Farm(route("chat", wait=30, interval=300, repeat=3600))
    run(farm, firing_between(("m1", 0, 9e9)), 100, universe=UNIVERSE)
    assert len(farm.sent) == 1
    farm.dispatcher.set_route(route("chat", wait=30, interval=300, repeat=600))
    for now in range(110, 700, 10):
        farm.cycle(float(now), [sig("A", "m1")], UNIVERSE)
    assert [t for t, _ in farm.sent] == [30, 630]  # new repeat interval, no re-announce
    # A route that disappears takes its state with it (Alertmanager does the same).
    farm.dispatcher.set_route(route("other", wait=0))
    assert farm.cycle(700.0, [sig("A", "m1")], UNIVERSE)[0].receiver == "other"
    assert "chat" not in json.dumps(farm.dispatcher.to_dict())


def test_alert_that_vanishes_from_the_engine_still_gets_its_resolve() -> None:
    farm = Farm(route("chat", wait=30, interval=300))
    run(farm, firing_between(("m1", 0, 9e9)), 100, universe=UNIVERSE)
    farm.engine = AlertEngine()  # e.g. the engine state was lost
    sent = [n for now in range(110, 400, 10) for n in farm.cycle(float(now), [], UNIVERSE)]
    assert [(n.status, n.alerts[0].ends_at) for n in sent] == [("resolved", 110.0)]


def test_notification_serializes_for_the_outbox() -> None:
    farm = Farm(route("chat", wait=0))
    farm.cycle(0.0, [sig("A", "m1", site="n", summary="same"), sig("A", "m2", summary="same")])
    ((_, notification),) = farm.sent
    assert notification.common_labels == {"alertname": "A"}
    assert notification.common_annotations == {"summary": "same"}
    assert [a.fingerprint for a in notification.firing] == [
        fingerprint({"alertname": "A", "miner": "m1", "site": "n"}),
        fingerprint({"alertname": "A", "miner": "m2"}),
    ]
    assert notification.resolved == ()
    data = json.loads(json.dumps(notification.to_dict()))
    assert Notification.from_dict(data) == notification
    assert AlertView.from_dict(data["alerts"][0]) == notification.alerts[0]


_NAMES = st.sampled_from(["A", "B", "C"])
_WHO = st.sampled_from(["m0", "m1", "m2", "m3"])


@given(
    by_miner=st.dictionaries(_WHO, st.lists(_NAMES, max_size=4).map(tuple), max_size=4),
    everywhere=st.dictionaries(_NAMES, st.frozensets(_WHO), max_size=3),
    also=st.lists(_NAMES, max_size=2),
    also_miners=st.frozensets(_WHO),
)
def test_judged_is_the_set_of_pairs_it_stands_for(
    by_miner: dict[str, tuple[str, ...]],
    everywhere: dict[str, frozenset[str]],
    also: list[str],
    also_miners: frozenset[str],
) -> None:
    """Each miner's alertnames and the alertnames judged everywhere, as a set of pairs:
    membership, iteration (each pair once), length and equality with a plain set, before
    and after :meth:`Judged.also`."""
    pairs = {(name, miner) for miner, names in by_miner.items() for name in names}
    pairs |= {(name, miner) for name, miners in everywhere.items() for miner in miners}
    judged = Judged(by_miner, everywhere)
    more = judged.also(also, also_miners)
    wider = pairs | {(name, miner) for name in also for miner in also_miners}
    for have, want in ((judged, pairs), (more, wider)):
        assert sorted(have) == sorted(want) and len(have) == len(want)
        assert have == want and want == have
        for name in ("A", "B", "C", "D"):
            for miner in ("m0", "m1", "m2", "m3", "m9"):
                assert ((name, miner) in have) == ((name, miner) in want)
        assert "A" not in have and ("A", "m0", "x") not in have
    assert sorted(judged) == sorted(pairs)  # also() left the first as it was


def test_the_alert_engine_takes_judged_pairs_as_it_takes_a_set() -> None:
    """An alert whose pair a Judged holds resolves when its signal stops; one whose pair
    it does not hold keeps its state."""
    engine = AlertEngine()
    signals = [sig("A", "m1"), sig("A", "m2")]
    engine.update(Evaluation(signals, {("A", "m1"), ("A", "m2")}), 0.0)
    engine.update(Evaluation([], Judged({"m1": ("A",), "m2": ()})), 10.0)
    states = {a.miner: a.state for a in engine.alerts()}
    assert states == {"m1": RESOLVED, "m2": FIRING}


# --- properties over random histories -------------------------------------------------

MINERS = ("m0", "m1", "m2", "m3")
SITES = {"m0": "north", "m1": "north", "m2": "south", "m3": "south"}
RULES = {  # alertname: (for_s, keep_firing_for_s, severity)
    "A": (0.0, 0.0, "critical"),
    "B": (40.0, 60.0, "warning"),
}
PROPERTY_TREE = route(
    "chat",
    group_by=("alertname", "site"),
    wait=30,
    interval=60,
    repeat=300,
    routes=(
        route(
            "pager",
            Matcher("severity", "critical"),
            wait=0,
            interval=50,
            repeat=200,
            continue_=True,
        ),
        route(
            "lab",
            Matcher("miner", "m[01]", regex=True),
            group_by=("...",),
            wait=10,
            interval=100,
            repeat=250,
        ),
    ),
)
SEND_RESOLVED = {"lab": False}
TIMERS = {  # receiver: (group_wait, group_interval, repeat_interval)
    "chat": (30.0, 60.0, 300.0),
    "pager": (0.0, 50.0, 200.0),
    "lab": (10.0, 100.0, 250.0),
}
LEGAL_MOVES = {
    (INACTIVE, PENDING),
    (INACTIVE, FIRING),
    (PENDING, FIRING),
    (PENDING, INACTIVE),
    (FIRING, RESOLVED),
    (RESOLVED, PENDING),
    (RESOLVED, FIRING),
    (RESOLVED, INACTIVE),
}


def alert_labels(alertname: str, miner: str) -> dict[str, str]:
    return {
        "alertname": alertname,
        "miner": miner,
        "site": SITES[miner],
        "severity": RULES[alertname][2],
    }


class AlertingMachine(RuleBasedStateMachine):
    """Random conditions, reachability, restart grace, silences, restarts and time steps.

    Invariants checked after every cycle. Engine:

    E1. Every move is in LEGAL_MOVES (never PENDING → RESOLVED); a fingerprint enters
        FIRING again only after a move to RESOLVED.
    E2. → FIRING only with the condition true now, the miner not held and ``for``
        elapsed; FIRING → RESOLVED only evaluated false, not held, ``keep_firing_for``
        elapsed since last_seen; PENDING dropped only evaluated false; RESOLVED dropped
        only past the retention.
    E3. Every state agrees with the rules (a true condition is PENDING or FIRING with
        last_seen == now; PENDING only while ``for`` runs or held; ...).

    Dispatcher, where "R believes F fires" means the last notification to receiver R
    that showed fingerprint F showed it firing:

    D1. No notification shows an alert silenced at that moment, nor a PENDING one
        (firing views are FIRING in the engine, resolved views are not).
    D2. A resolved view of F goes to R only if R believes F fires, and never to a
        receiver without send_resolved.
    D3. Two notifications of one group are at least min(group_wait, group_interval)
        apart, and group_interval apart when a member fired all along in between.
    D4. A notification telling R nothing new (no resolve; every firing F already
        believed, not stopped since) comes repeat_interval after the group's previous
        one; a group's first notification tells something new. (Not with incidents.)
    D5. Liveness: F firing unsilenced for max(group_wait, group_interval) → R believes F
        fires (not with incidents); R believes F fires but F stopped and is unsilenced for
        group_interval → R has been sent the resolve.
    D6. A farm restarted at random (state through JSON) decides exactly what an
        uninterrupted twin decides.
    """

    with_incidents = False

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.true: set[tuple[str, str]] = set()
        self.unreachable: set[str] = set()
        self.held: set[str] = set()
        self.silences: list[Silence] = []
        self.farm = Farm(PROPERTY_TREE, send_resolved=SEND_RESOLVED)
        self.twin = Farm(PROPERTY_TREE, send_resolved=SEND_RESOLVED)
        # What each receiver was told: (receiver, fingerprint) → believed firing.
        self.believed: dict[tuple[str, str], bool] = {}
        self.last_sent: dict[tuple[str, str], float] = {}  # (receiver, group key) → time
        self.firing_since: dict[tuple[str, str], float] = {}  # unsilenced, firing
        self.quiet_since: dict[tuple[str, str], float] = {}  # believed, not firing, unsilenced
        self.fired: dict[str, bool] = {}  # fingerprint → last engine move was into FIRING
        self.labels_of: dict[str, dict[str, str]] = {}  # fingerprint → labels, as notified
        self.interrupted: set[tuple[str, str]] = set()  # believed firing, stopped since
        self.streak: dict[str, float] = {}  # fingerprint → firing at every cycle since
        self.last_firing: dict[tuple[str, str], set[str]] = {}  # group → its firing, last sent

    @initialize(true=st.sets(st.tuples(st.sampled_from(sorted(RULES)), st.sampled_from(MINERS))))
    def start_with(self, true: set[tuple[str, str]]) -> None:
        self.true = set(true)

    @rule(miner=st.sampled_from(MINERS), value=st.booleans())
    def set_unreachable(self, miner: str, value: bool) -> None:
        (self.unreachable.add if value else self.unreachable.discard)(miner)

    @rule(miner=st.sampled_from(MINERS), value=st.booleans())
    def set_held(self, miner: str, value: bool) -> None:
        (self.held.add if value else self.held.discard)(miner)

    @rule(
        name=st.sampled_from(["miner", "alertname", "site"]),
        value=st.sampled_from([*MINERS, *RULES, "north", "south", "m[12]"]),
        start=st.sampled_from([0.0, 20.0, 100.0]),
        length=st.sampled_from([15.0, 60.0, 300.0, 2000.0]),
    )
    def add_silence(self, name: str, value: str, start: float, length: float) -> None:
        matcher = Matcher(name, value, regex="[" in value)
        begins = self.now + start
        self.silences.append(Silence((matcher,), starts_at=begins, ends_at=begins + length))

    @rule()
    def drop_silences(self) -> None:
        self.silences.clear()

    @rule()
    def restart(self) -> None:
        self.farm.restart()

    @rule(
        dt=st.sampled_from([1.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 400.0, 1000.0]),
        changes=st.lists(
            st.tuples(st.sampled_from(sorted(RULES)), st.sampled_from(MINERS), st.booleans()),
            max_size=4,
        ),
    )
    def advance(self, dt: float, changes: list[tuple[str, str, bool]]) -> None:
        """Some conditions change, time passes, one evaluation cycle runs."""
        for alertname, miner, value in changes:
            (self.true.add if value else self.true.discard)((alertname, miner))
        self.now += dt
        now = self.now
        signals = [
            sig(
                name,
                miner,
                for_s=RULES[name][0],
                keep_s=RULES[name][1],
                extra=alert_labels(name, miner),
            )
            for name, miner in sorted(self.true)
            if miner not in self.unreachable
        ]
        evaluated = [(n, m) for n in RULES for m in MINERS if m not in self.unreachable]
        outputs = []
        for farm in (self.farm, self.twin):
            farm.fleet_size = len(MINERS) if self.with_incidents else 0
            farm.share = 0.5
            before = len(farm.transitions)
            sent = farm.cycle(now, signals, evaluated, self.silences, self.held)
            outputs.append(
                ([(t.fingerprint, t.old, t.new) for _, t in farm.transitions[before:]], sent)
            )
        assert outputs[0] == outputs[1], "a restart changed what was decided"
        _, sent = outputs[0]
        transitions = [t for t_now, t in self.farm.transitions if t_now == now]
        firing_now = {a.fingerprint for a in self.farm.engine.firing()}
        self.streak = {fp: self.streak.get(fp, now) for fp in firing_now}
        self.check_transitions(transitions, signals, now)
        self.check_notifications(sent, now)
        self.check_liveness(now)

    def silenced(self, labels: Mapping[str, str], now: float) -> bool:
        return any(s.silences(labels, now) for s in self.silences)

    def check_transitions(
        self, transitions: list[Transition], signals: list[Signal], now: float
    ) -> None:
        """The lifecycle rules, as invariants of every move and every state."""
        with_signal = {fingerprint(s.labels) for s in signals}
        for t in transitions:
            old, new, alert = t.old, t.new, t.alert
            assert (old, new) in LEGAL_MOVES, (old, new)
            reachable = alert.miner not in self.unreachable
            held = alert.miner in self.held
            if new is FIRING:
                assert not self.fired.get(t.fingerprint), "fired twice without a resolve"
                self.fired[t.fingerprint] = True
                assert not held and t.fingerprint in with_signal
                assert now - alert.active_since >= alert.for_s
            if new is RESOLVED:
                assert self.fired.get(t.fingerprint)
                self.fired[t.fingerprint] = False
                assert reachable and not held and t.fingerprint not in with_signal
                assert now - alert.last_seen >= alert.keep_firing_for_s
            if old is PENDING and new is INACTIVE:
                assert reachable and t.fingerprint not in with_signal
            if old is RESOLVED and new is INACTIVE:
                assert alert.resolved_at is not None
                assert now - alert.resolved_at > RESOLVED_RETENTION_S
        for alert in self.farm.engine.alerts():
            assert alert.state is not INACTIVE
            fp = alert.fingerprint
            free = alert.miner not in self.held
            reachable = alert.miner not in self.unreachable
            if alert.state is PENDING:
                assert fp in with_signal or not reachable
                if fp in with_signal and free:
                    assert now - alert.active_since < alert.for_s
            if alert.state is FIRING:
                assert alert.fired_at is not None and alert.fired_at >= alert.active_since
                if fp not in with_signal and reachable and free:
                    assert now - alert.last_seen < alert.keep_firing_for_s
            if alert.state is RESOLVED:
                assert alert.resolved_at is not None and fp not in with_signal
                assert now - alert.resolved_at <= RESOLVED_RETENTION_S
        for fp in with_signal:
            active = self.farm.engine.get(fp)
            assert active is not None and active.state in (PENDING, FIRING)
            assert active.last_seen == now
        # A receiver without send_resolved is never told of a resolve: note when what it
        # believes firing stopped firing, since the dispatcher may then forget it.
        for receiver, fp in self.believed_firing():
            current = self.farm.engine.get(fp)
            if current is None or current.state is not FIRING:
                self.interrupted.add((receiver, fp))

    def believed_firing(self) -> list[tuple[str, str]]:
        return [key for key, believed in self.believed.items() if believed]

    def check_notifications(self, sent: list[Notification], now: float) -> None:
        engine = self.farm.engine
        for n in sent:
            wait, interval, repeat = TIMERS[n.receiver]
            assert n.alerts
            assert n.status == ("firing" if n.firing else "resolved")
            changed = False
            for view in n.alerts:
                key = (n.receiver, view.fingerprint)
                self.labels_of[view.fingerprint] = dict(view.labels)
                assert not self.silenced(view.labels, now), "a silenced alert was sent"
                alert = engine.get(view.fingerprint)
                if view.status == "firing":
                    assert alert is not None and alert.state is FIRING  # never PENDING
                    changed = changed or not self.believed.get(key, False)
                    changed = changed or key in self.interrupted
                    self.interrupted.discard(key)
                    self.believed[key] = True
                else:
                    assert alert is None or alert.state is not FIRING
                    assert self.believed.get(key), "resolve without a firing notice first"
                    assert SEND_RESOLVED.get(n.receiver, True)
                    self.believed[key] = False
                    changed = True
            group = (n.receiver, n.group_key)
            previous = self.last_sent.get(group)
            if previous is not None:
                # group_interval within a group; group_wait for a group created anew.
                assert now > previous and now - previous >= min(wait, interval)
                # A member firing ever since the last notice kept the group alive.
                kept = any(self.streak.get(fp, now) <= previous for fp in self.last_firing[group])
                if kept and not self.with_incidents:
                    assert now - previous >= interval, "flushed before group_interval"
                if not self.with_incidents and not changed:
                    assert now - previous >= repeat, "repeated before repeat_interval"
            elif not self.with_incidents:
                assert changed, "a group's first notification must say something new"
            self.last_sent[group] = now
            self.last_firing[group] = {v.fingerprint for v in n.firing}

    def check_liveness(self, now: float) -> None:
        """Firing and unsilenced → told within max(wait, interval); resolves likewise."""
        engine = self.farm.engine
        firing = {a.fingerprint: a for a in engine.firing()}
        for fp, alert in firing.items():
            for r in PROPERTY_TREE.match(alert.labels):
                key = (r.receiver, fp)
                if self.silenced(alert.labels, now):
                    self.firing_since.pop(key, None)
                    continue
                since = self.firing_since.setdefault(key, now)
                wait, interval, _ = TIMERS[r.receiver]
                if not self.with_incidents and now - since >= max(wait, interval):
                    assert self.believed.get(key), f"{key} firing since {since}, never told"
        for key in list(self.firing_since):
            if key[1] not in firing:
                del self.firing_since[key]
        for key in list(self.quiet_since):
            if not self.believed.get(key):
                del self.quiet_since[key]
        for receiver, fp in self.believed_firing():
            key = (receiver, fp)
            quiet = fp not in firing and SEND_RESOLVED.get(receiver, True)
            if not quiet or self.silenced(self.labels_of[fp], now):
                self.quiet_since.pop(key, None)
                continue
            since = self.quiet_since.setdefault(key, now)
            assert now - since < TIMERS[receiver][1] or not self.believed[key], (
                f"{key} stopped firing at {since}, resolve never sent"
            )

    @invariant()
    def twin_states_agree(self) -> None:
        assert [a.to_dict() for a in self.farm.engine.alerts()] == [
            a.to_dict() for a in self.twin.engine.alerts()
        ]


class AlertingWithIncidents(AlertingMachine):
    with_incidents = True


_machine_settings = settings(
    max_examples=80,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAlertingProperties = AlertingMachine.TestCase
TestAlertingProperties.settings = _machine_settings
TestAlertingPropertiesWithIncidents = AlertingWithIncidents.TestCase
TestAlertingPropertiesWithIncidents.settings = _machine_settings
