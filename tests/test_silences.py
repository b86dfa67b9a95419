"""Silences, maintenance and acknowledgements as logic (cgwatchdog/silences.py, the
acknowledgement in alerts.py, the maintenance stage of the planner): built objects and a
moved clock, no sockets. The cluster's side is in tests/test_silences_e2e.py."""

from __future__ import annotations

from typing import Any

import pytest

from cgwatchdog.actions import PlanContext, hold_maintenance
from cgwatchdog.actions.planner import Candidate
from cgwatchdog.alerts import (
    AlertEngine,
    AlertState,
    Dispatcher,
    Evaluation,
    Route,
    Signal,
)
from cgwatchdog.config import ActionsConfig
from cgwatchdog.errors import NotifyError
from cgwatchdog.silences import (
    EXPIRED_RETENTION_S,
    MAINTENANCE_TAG,
    Matcher,
    Silence,
    SilenceBook,
    SilenceState,
)

T0 = 1_800_000_000.0
HOUR = 3600.0


def ids() -> Any:
    counter = iter(range(1, 1000))
    return lambda: f"aaaaaaaa-{next(counter):04d}-4000-8000-000000000000"


def book(**kwargs: Any) -> SilenceBook:
    return SilenceBook(new_id=ids(), **kwargs)


def add(b: SilenceBook, *matchers: str, hours: float = 2.0, maintenance: bool = False) -> Silence:
    return b.add(
        [Matcher.parse(m) for m in matchers],
        T0 + hours * HOUR,
        "board swap",
        "alice",
        maintenance,
        T0,
    )


# --- matchers ------------------------------------------------------------------------


def test_matchers_parse_match_and_anchor_regexes_like_alertmanager() -> None:
    labels = {"miner": "sim-001", "alertname": "DeviceDead"}
    assert Matcher.parse("miner=sim-001").matches(labels)
    assert Matcher.parse('miner="sim-001"').matches(labels)
    assert Matcher.parse("alertname=~Device.*").matches(labels)
    # Anchored at both ends: "Dead" alone is not a match of "DeviceDead".
    assert not Matcher.parse("alertname=~Dead").matches(labels)
    assert not Matcher.parse("alertname=~Device").matches(labels)
    # A missing label matches as "".
    assert Matcher.parse("site=").matches(labels)
    assert Matcher.parse("site=~|north").matches(labels)
    assert not Matcher("site", "north").matches(labels)
    # Negative matchers come only from Alertmanager, and match as it does.
    assert not Matcher.parse("miner!=sim-001").matches(labels)
    assert Matcher.parse("miner!~sim-00[2-9]").matches(labels)
    assert str(Matcher.parse('alertname=~"Dev.*"')) == 'alertname=~"Dev.*"'
    for bad, why in (
        ("miner", "not a matcher"),
        ("1miner=x", "not a matcher"),
        ("alertname=~(", "invalid regex"),
    ):
        with pytest.raises(ValueError, match=why):
            Matcher.parse(bad)
    with pytest.raises(ValueError, match="not a label name"):
        Matcher("bad-name", "x")


# --- the book --------------------------------------------------------------------------


def test_a_silence_mutes_what_it_matches_from_now_until_its_end() -> None:
    b = book()
    silence = add(b, "miner=sim-001")
    assert silence.source == "local" and silence.id.startswith("aaaaaaaa-0001")
    assert silence.state(T0) is SilenceState.ACTIVE
    assert b.silenced({"miner": "sim-001", "alertname": "DeviceDead"}, T0)
    assert not b.silenced({"miner": "sim-002"}, T0)
    assert b.silenced({"miner": "sim-001"}, T0 + 2 * HOUR - 1)
    assert not b.silenced({"miner": "sim-001"}, T0 + 2 * HOUR)  # end exclusive
    assert [s.id for s in b.active(T0)] == [silence.id]
    assert not b.in_maintenance({"miner": "sim-001"}, T0)  # a plain silence


@pytest.mark.parametrize(
    ("matchers", "ends_at", "comment", "by", "why"),
    [
        ([], T0 + HOUR, "c", "a", "at least one matcher"),
        ([Matcher("miner", ".*", regex=True)], T0 + HOUR, "c", "a", "mute every alert"),
        ([Matcher("site", "")], T0 + HOUR, "c", "a", "mute every alert"),
        ([Matcher("miner", "m1")], T0 - 1, "c", "a", "not in the future"),
        ([Matcher("miner", "m1")], float("inf"), "c", "a", "finite"),
        ([Matcher("miner", "m1")], T0 + HOUR, "  ", "a", "say why"),
        ([Matcher("miner", "m1")], T0 + HOUR, "c", "", "who makes"),
    ],
)
def test_bad_silences_are_refused_with_a_reason(
    matchers: list[Matcher], ends_at: float, comment: str, by: str, why: str
) -> None:
    b = book()
    with pytest.raises(ValueError, match=why):
        b.add(matchers, ends_at, comment, by, False, T0)
    assert b.list(T0) == []


def test_expire_by_id_or_prefix_and_what_cannot_be_expired() -> None:
    b = book()
    first = add(b, "miner=sim-001")
    add(b, "miner=sim-002")
    with pytest.raises(KeyError, match="at least its first 8"):
        b.expire("aaaa", T0)
    with pytest.raises(KeyError, match="starts 2 silence ids"):
        b.expire("aaaaaaaa", T0)
    with pytest.raises(KeyError, match="no silence"):
        b.expire("ffffffff", T0)
    ended = b.expire("aaaaaaaa-0001", T0 + 60)
    assert ended.id == first.id and ended.ends_at == T0 + 60
    assert not b.silenced({"miner": "sim-001"}, T0 + 61)
    assert b.expire(first.id, T0 + 120) == ended  # expiring twice changes nothing
    assert [s.state(T0 + 61) for s in b.list(T0 + 61)] == [
        SilenceState.ACTIVE,
        SilenceState.EXPIRED,
    ]
    # Expired ones are listed for a day, then forgotten.
    assert len(b.list(T0 + 60 + EXPIRED_RETENTION_S)) == 2
    b.sync(T0 + 61 + EXPIRED_RETENTION_S)
    assert first.id not in [s.id for s in b.list(T0 + 61 + EXPIRED_RETENTION_S)]
    assert len(b.to_json()["silences"]) == 1

    configured = Silence("config-1", (Matcher("miner", "m9"),), 0.0, T0 + HOUR, "x", "cfg")
    b.set_config([configured])
    assert b.get("config-1").source == "config"
    with pytest.raises(ValueError, match="config file"):
        b.expire("config-1", T0)


def test_maintenance_holds_by_miner_or_alert_labels() -> None:
    b = book()
    add(b, "miner=sim-001", maintenance=True, hours=1)
    later = add(b, "miner=~sim-00[12]", maintenance=True, hours=3)
    assert b.in_maintenance({"miner": "sim-001", "site": "north"}, T0)
    assert not b.in_maintenance({"miner": "sim-003"}, T0)
    found = b.maintenance_of({"miner": "sim-001", "alertname": "DeviceDead"}, T0)
    assert found is not None and found.id == later.id  # the one ending last
    check = b.maintenance_check(T0)
    reason = check({"miner": "sim-002", "alertname": "DeviceDead"})
    assert reason is not None and "maintenance" in reason and "board swap" in reason
    assert check({"miner": "sim-003"}) is None
    assert b.maintenance_check(T0 + 4 * HOUR)({"miner": "sim-001"}) is None


def test_the_book_saves_at_each_change_and_restores() -> None:
    saved: list[dict[str, Any]] = []
    b = book(persist=saved.append)
    silence = add(b, "miner=sim-001", "alertname=~Device.*", maintenance=True)
    assert len(saved) == 1
    b.expire(add(b, "miner=sim-002").id, T0 + 5)
    assert len(saved) == 3
    again = book()
    again.restore(saved[-1])
    assert again.get(silence.id) == silence
    assert again.in_maintenance({"miner": "sim-001", "alertname": "DeviceDead"}, T0)
    assert not again.silenced({"miner": "sim-002"}, T0 + 6)
    with pytest.raises(ValueError):
        again.restore({"version": 99})


def test_alertmanager_documents_carry_maintenance_in_the_comment() -> None:
    silence = Silence(
        "x", (Matcher("miner", "m1"), Matcher("alertname", "Dev.*", regex=True)),
        T0, T0 + HOUR, "board swap", "alice", maintenance=True,
    )  # fmt: skip
    document = silence.to_alertmanager()
    assert document["comment"] == f"{MAINTENANCE_TAG} board swap"
    assert document["matchers"][1] == {
        "name": "alertname", "value": "Dev.*", "isRegex": True, "isEqual": True,
    }  # fmt: skip
    back = Silence.from_alertmanager({**document, "id": "x", "status": {"state": "active"}})
    assert back.maintenance and back.comment == "board swap" and back.source == "alertmanager"
    assert back.matchers == silence.matchers and back.ends_at == silence.ends_at


class Cluster:
    """What the cluster's Alertmanager does, in memory, for the book's bookkeeping
    (the real one is in test_silences_e2e); ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.silences: dict[str, dict[str, Any]] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise NotifyError("connection refused by 127.0.0.1:9093", recoverable=True)

    def get_silences(self) -> list[dict[str, Any]]:
        self._check()
        return list(self.silences.values())

    def post_silence(self, document: Any) -> str:
        self._check()
        silence_id = f"am-{len(self.silences):05d}-0000"
        self.silences[silence_id] = {**document, "id": silence_id}
        return silence_id

    def delete_silence(self, silence_id: str) -> None:
        self._check()
        self.silences[silence_id]["endsAt"] = "2020-01-01T00:00:00Z"


def test_with_a_cluster_the_last_known_silences_hold_when_it_cannot_be_read() -> None:
    cluster = Cluster()
    b = book(remote=cluster)
    made = add(b, "miner=sim-001", maintenance=True)
    assert made.source == "alertmanager" and made.id in cluster.silences
    other = book(remote=cluster)
    assert other.sync(T0) and other.in_maintenance({"miner": "sim-001"}, T0)
    cluster.down = True
    assert not other.sync(T0 + 60)
    assert other.remote_error is not None and "refused" in other.remote_error
    assert other.in_maintenance({"miner": "sim-001"}, T0 + 60)  # last known
    with pytest.raises(NotifyError):
        add(other, "miner=sim-002")
    assert not other.silenced({"miner": "sim-002"}, T0)  # nothing half-made
    cluster.down = False
    b.expire(made.id, T0 + 120)
    assert other.sync(T0 + 130) and other.remote_error is None
    assert not other.in_maintenance({"miner": "sim-001"}, T0 + 130)


# --- acknowledgements ---------------------------------------------------------------------


LABELS = {"alertname": "DeviceDead", "miner": "m1", "severity": "critical"}


def fire(engine: AlertEngine, now: float, *, true: bool = True) -> None:
    signals = [Signal(LABELS, {"summary": "dead"}, "1")] if true else []
    engine.update(Evaluation(signals, {("DeviceDead", "m1")}), now)


def test_an_acknowledged_alert_stops_repeating_but_its_resolution_notifies() -> None:
    engine = AlertEngine()
    dispatcher = Dispatcher(Route("chat", ("alertname",), 0.0, 300.0, 3600.0))
    sent: list[tuple[float, str]] = []

    def cycle(now: float, *, true: bool = True) -> None:
        fire(engine, now, true=true)
        for n in dispatcher.tick(engine.alerts(), [], now):
            sent.append((now, n.status))

    cycle(T0)
    (alert,) = engine.firing()
    with pytest.raises(KeyError, match="no alert"):
        engine.acknowledge("0123456789abcdef", "alice", T0)
    with pytest.raises(ValueError, match="who"):
        engine.acknowledge(alert.fingerprint, " ", T0)
    acked = engine.acknowledge(alert.fingerprint, "alice", T0 + 60)
    assert acked.acknowledged_by == "alice" and acked.acknowledged_at == T0 + 60
    for step in range(1, 13):  # three hours of cycles: no repeat after the hour
        cycle(T0 + step * 900)
    assert sent == [(T0, "firing")]
    # Acknowledgements are saved with the engine's state.
    restored = AlertEngine.from_dict(engine.to_dict())
    assert restored.firing()[0].acknowledged_by == "alice"
    cycle(T0 + 13 * 900, true=False)
    cycle(T0 + 14 * 900, true=False)
    assert sent[-1] == (T0 + 13 * 900, "resolved")
    (resolved,) = engine.alerts()
    with pytest.raises(ValueError, match="resolved"):
        engine.acknowledge(resolved.fingerprint, "alice", T0 + 14 * 900)
    # Firing again after it resolved is a new alert, not acknowledged: it repeats.
    start = T0 + 15 * 900
    cycle(start)
    assert engine.firing()[0].acknowledged_by is None
    cycle(start + 300)
    cycle(start + 3600)
    assert [s for _, s in sent] == ["firing", "resolved", "firing", "firing"]


def test_an_unacknowledged_alert_in_the_group_still_repeats() -> None:
    engine = AlertEngine()
    dispatcher = Dispatcher(Route("chat", ("alertname",), 0.0, 300.0, 3600.0))
    other = {**LABELS, "miner": "m2"}
    evaluated = {("DeviceDead", "m1"), ("DeviceDead", "m2")}
    signals = [Signal(LABELS, {}, "1"), Signal(other, {}, "1")]
    engine.update(Evaluation(signals, evaluated), T0)
    assert len(dispatcher.tick(engine.alerts(), [], T0)) == 1
    engine.acknowledge(engine.firing()[0].fingerprint, "alice", T0)
    engine.update(Evaluation(signals, evaluated), T0 + 3600)
    (repeat,) = dispatcher.tick(engine.alerts(), [], T0 + 3600)
    assert len(repeat.firing) == 2  # m2 is not acknowledged: both are shown again
    for alert in engine.firing():
        engine.acknowledge(alert.fingerprint, "bob", T0 + 3600)
    engine.update(Evaluation(signals, evaluated), T0 + 7200)
    assert dispatcher.tick(engine.alerts(), [], T0 + 7200) == []
    assert {a.state for a in engine.alerts()} == {AlertState.FIRING}


# --- the maintenance stage ------------------------------------------------------------------


def test_the_maintenance_stage_holds_a_step_with_the_silence_named() -> None:
    b = book()
    add(b, "miner=m1", maintenance=True)
    step = Candidate(
        miner="m1", alertname="DeviceDead", fingerprint="f", step=0, do="restart",
        escalation=False, dry_run=False, condition_seen=True, labels=LABELS,
    )  # fmt: skip
    ctx = PlanContext(now=T0, settings=ActionsConfig(), maintenance=b.maintenance_check(T0))
    hold = hold_maintenance(step, ctx)
    assert hold is not None and hold.kind == "maintenance"
    assert "by alice" in hold.reason and "board swap" in hold.reason
    assert hold_maintenance(step, PlanContext(now=T0, settings=ActionsConfig())) is None
    later = b.maintenance_check(T0 + 3 * HOUR)
    assert (
        hold_maintenance(step, PlanContext(now=T0, settings=ActionsConfig(), maintenance=later))
        is None
    )
