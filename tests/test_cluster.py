"""Heartbeats and leadership through Alertmanager (cgwatchdog/cluster.py).

The alert documents are checked against Debian's real ``prometheus-alertmanager`` on
127.0.0.1: POSTed as two replicas would, read back with ``GET /api/v2/alerts``, and fed
to ``elect``. The rest are pure tests with an injected ``now``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from cgwatchdog.cluster import (
    HEARTBEAT_ALERTNAME,
    LEADERSHIP,
    WATCHDOG_ALERTNAME,
    Leadership,
    LeadershipEvent,
    Role,
    Standing,
    elect,
    heartbeat_alerts,
    heartbeat_matchers,
    leadership,
)
from cgwatchdog.config import Shard
from cgwatchdog.errors import NotifyError
from cgwatchdog.units import parse_rfc3339
from tests.test_notify_alertmanager import eventually, free_port, integration, running_alertmanager

NOW = 1_790_000_000.0
SHARD = Shard(1, 2)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A lone Alertmanager whose only receiver does nothing; yields its base URL."""
    with running_alertmanager(
        tmp_path, "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"
    ) as url:
        yield url


def post(url: str, documents: list[dict[str, object]]) -> None:
    response = requests.post(f"{url}/api/v2/alerts", json=documents, timeout=5)
    assert response.status_code == 200, response.text


def heartbeat(
    replica: str | None, ends_at: str, shard: str = "1/2", **extra: Any
) -> dict[str, Any]:
    """A heartbeat as GET /api/v2/alerts returns it."""
    labels = {"alertname": HEARTBEAT_ALERTNAME, "shard": shard, "severity": "none"}
    if replica is not None:
        labels["replica"] = replica
    return {
        "labels": labels,
        "annotations": {},
        "startsAt": "2026-09-21T14:00:00.000Z",
        "endsAt": ends_at,
        "updatedAt": "2026-09-21T14:13:20.000Z",
        "fingerprint": "0123456789abcdef",
        "receivers": [{"name": "blackhole"}],
        "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
        **extra,
    }


LATER = "2026-09-21T14:16:20.000Z"  # NOW + 180 s
EARLIER = "2026-09-21T14:13:19.000Z"  # NOW - 1 s


# --- the documents --------------------------------------------------------------------


def test_heartbeat_and_watchdog_documents() -> None:
    beat, watchdog = heartbeat_alerts(Shard(1, 4), "a", NOW, 30.0)
    assert beat == {
        "labels": {
            "alertname": "CgwatchdogHeartbeat",
            "shard": "1/4",
            "replica": "a",
            "severity": "none",
            "service": "cgwatchdog",
        },
        "annotations": beat["annotations"],
        "startsAt": "2026-09-21T14:13:20Z",
        "endsAt": "2026-09-21T14:14:50Z",  # three 30 s intervals ahead
    }
    assert watchdog["labels"] == {
        "alertname": "Watchdog",
        "shard": "1/4",
        "severity": "none",
        "service": "cgwatchdog",
    }
    assert watchdog["endsAt"] == beat["endsAt"]
    notes = watchdog["annotations"]
    assert isinstance(notes, dict)
    assert notes["summary"] == "cgwatchdog shard 1/4 is alive"
    assert "dead man's switch" in notes["description"]
    assert "absence means" in notes["description"]
    assert parse_rfc3339(beat["endsAt"]) == NOW + 90.0


def test_without_replicas_the_heartbeat_has_no_replica_label() -> None:
    beat, watchdog = heartbeat_alerts(SHARD, None, NOW, 60.0, lifetime_intervals=2.0)
    assert isinstance(beat["labels"], dict) and isinstance(watchdog["labels"], dict)
    assert "replica" not in beat["labels"]
    assert "replica" not in watchdog["labels"]
    assert parse_rfc3339(beat["endsAt"]) == NOW + 120.0


def test_replicas_of_a_shard_send_the_same_watchdog() -> None:
    _, from_a = heartbeat_alerts(SHARD, "a", NOW, 30.0)
    _, from_b = heartbeat_alerts(SHARD, "b", NOW, 30.0)
    _, other_shard = heartbeat_alerts(Shard(2, 2), "a", NOW, 30.0)
    assert from_a["labels"] == from_b["labels"] != other_shard["labels"]


def test_generator_url_and_bad_intervals() -> None:
    for document in heartbeat_alerts(SHARD, "a", NOW, 30.0, generator_url="http://h:9841/"):
        assert document["generatorURL"] == "http://h:9841/"
    with pytest.raises(ValueError):
        heartbeat_alerts(SHARD, "a", NOW, 0.0)
    with pytest.raises(ValueError):
        heartbeat_alerts(SHARD, "a", NOW, 30.0, lifetime_intervals=0.0)


# --- against a real Alertmanager -----------------------------------------------------


def test_two_replicas_through_a_real_alertmanager(alertmanager: str) -> None:
    now = time.time()
    # b pushed just now; a pushed 100 s ago with a 60 s interval: live until now + 80.
    post(alertmanager, heartbeat_alerts(SHARD, "b", now, 60.0))
    post(alertmanager, heartbeat_alerts(SHARD, "a", now - 100.0, 60.0))
    # Another shard's replica with a lower name must not matter to shard 1/2.
    post(alertmanager, heartbeat_alerts(Shard(2, 2), "0", now, 60.0))

    def all_five() -> list[dict[str, Any]] | None:
        found = requests.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        assert isinstance(found, list)
        return found if len(found) == 5 else None

    found = eventually(all_five, "list the five alerts")
    names = sorted(
        (a["labels"]["alertname"], a["labels"]["shard"], a["labels"].get("replica", "-"))
        for a in found
    )
    # Three heartbeats; the two replicas' Watchdogs of shard 1/2 were merged into one.
    assert names == [
        (HEARTBEAT_ALERTNAME, "1/2", "a"),
        (HEARTBEAT_ALERTNAME, "1/2", "b"),
        (HEARTBEAT_ALERTNAME, "2/2", "0"),
        (WATCHDOG_ALERTNAME, "1/2", "-"),
        (WATCHDOG_ALERTNAME, "2/2", "-"),
    ]
    for alert in found:
        assert alert["status"]["state"] in ("active", "unprocessed", "suppressed")
        assert alert["annotations"]["summary"].startswith("cgwatchdog shard ")
        assert parse_rfc3339(alert["endsAt"]) is not None
    (merged,) = [
        a
        for a in found
        if a["labels"]["alertname"] == WATCHDOG_ALERTNAME and a["labels"]["shard"] == "1/2"
    ]
    # b's push came first and ends later; a's refresh must not cut it short.
    merged_ends_at = parse_rfc3339(merged["endsAt"])
    assert merged_ends_at is not None
    assert abs(merged_ends_at - (now + 180.0)) < 1.0

    assert elect(found, SHARD, "a", now) is Role.LEADER
    assert elect(found, SHARD, "b", now) is Role.FOLLOWER
    assert elect(found, Shard(2, 2), "1", now) is Role.FOLLOWER  # "0" leads shard 2/2
    # 90 s on, a's heartbeat has expired (a stopped pushing): b takes over.
    assert elect(found, SHARD, "b", now + 90.0) is Role.LEADER

    # The daemon's path: the integration's filtered read, then the election.
    am = integration(alertmanager)
    try:
        listed = am.alerts(heartbeat_matchers(SHARD))
        assert sorted(a["labels"]["replica"] for a in listed) == ["a", "b"]
        assert leadership(lambda: am.alerts(heartbeat_matchers(SHARD)), SHARD, "a", now) is (
            Role.LEADER
        )
        assert leadership(lambda: am.alerts(heartbeat_matchers(SHARD)), SHARD, "b", now) is (
            Role.FOLLOWER
        )
    finally:
        am.close()


def test_heartbeats_are_read_from_every_peer_that_answers(alertmanager: str) -> None:
    """Peers do not gossip alerts: a replica seen by one peer only still counts."""
    now = time.time()
    post(alertmanager, heartbeat_alerts(SHARD, "a", now, 60.0))
    dead = f"http://127.0.0.1:{free_port()}"
    am = integration(dead, alertmanager)
    try:
        eventually(lambda: am.alerts(heartbeat_matchers(SHARD), every_peer=True), "list a")
        listed = am.alerts(heartbeat_matchers(SHARD), every_peer=True)
        assert [a["labels"]["replica"] for a in listed] == ["a"]
        assert elect(listed, SHARD, "b", now) is Role.FOLLOWER
    finally:
        am.close()
    both = integration(alertmanager, alertmanager)  # the union keeps each peer's copy
    try:
        assert len(both.alerts(heartbeat_matchers(SHARD), every_peer=True)) == 2
    finally:
        both.close()
    blind = integration(dead)
    try:
        with pytest.raises(NotifyError, match="no Alertmanager peer answered"):
            blind.alerts(heartbeat_matchers(SHARD), every_peer=True)
    finally:
        blind.close()


def test_a_replica_that_cannot_read_alertmanager_is_isolated() -> None:
    am = integration(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        role = leadership(lambda: am.alerts(heartbeat_matchers(SHARD)), SHARD, "a", NOW)
    finally:
        am.close()
    assert role is Role.ISOLATED
    assert not role.acts


# --- elect, pure ---------------------------------------------------------------------


def test_lowest_live_replica_leads() -> None:
    seen = [heartbeat("a", LATER), heartbeat("b", LATER), heartbeat("c", LATER)]
    assert elect(seen, SHARD, "a", NOW) is Role.LEADER
    assert elect(seen, SHARD, "b", NOW) is Role.FOLLOWER
    assert elect(seen, SHARD, "c", NOW) is Role.FOLLOWER
    assert Role.LEADER.acts and not Role.FOLLOWER.acts
    assert [role.value for role in Role] == ["leader", "follower", "isolated"]


def test_my_own_heartbeat_need_not_be_visible_yet() -> None:
    assert elect([], SHARD, "b", NOW) is Role.LEADER
    assert elect([heartbeat("c", LATER)], SHARD, "b", NOW) is Role.LEADER
    assert elect([heartbeat("a", LATER)], SHARD, "b", NOW) is Role.FOLLOWER
    # Even my own heartbeat shown expired: I am alive, so I count.
    seen = [heartbeat("b", EARLIER), heartbeat("c", LATER)]
    assert elect(seen, SHARD, "b", NOW) is Role.LEADER


def test_expired_heartbeats_do_not_count() -> None:
    seen = [heartbeat("a", EARLIER), heartbeat("b", LATER)]
    assert elect(seen, SHARD, "b", NOW) is Role.LEADER
    # endsAt exactly now is over.
    assert elect([heartbeat("a", "2026-09-21T14:13:20Z")], SHARD, "b", NOW) is Role.LEADER
    just_after = heartbeat("a", "2026-09-21T14:13:20.001Z")
    assert elect([just_after], SHARD, "b", NOW) is Role.FOLLOWER


def test_other_shards_and_other_alerts_do_not_count() -> None:
    seen = [
        heartbeat("a", LATER, shard="2/2"),
        heartbeat("a", LATER, shard="1/3"),
        {**heartbeat("a", LATER), "labels": {"alertname": "Watchdog", "shard": "1/2"}},
        {**heartbeat("a", LATER), "labels": {"alertname": "DeviceDead", "replica": "a"}},
    ]
    assert elect(seen, SHARD, "b", NOW) is Role.LEADER
    # The systemd instance form of the same shard is the same shard.
    assert elect([heartbeat("a", LATER, shard="1-of-2")], SHARD, "b", NOW) is Role.FOLLOWER


def test_malformed_entries_are_skipped() -> None:
    malformed: list[Any] = [
        "not an alert",
        None,
        {},
        {"labels": "alertname=CgwatchdogHeartbeat"},
        {"labels": {"alertname": HEARTBEAT_ALERTNAME, "replica": "a"}, "endsAt": LATER},
        heartbeat("a", LATER, shard="one of two"),
        {**heartbeat("a", LATER), "labels": {**heartbeat("a", LATER)["labels"], "shard": 1}},
        {**heartbeat("a", LATER), "labels": {**heartbeat("a", LATER)["labels"], "replica": 7}},
        heartbeat("a", "tomorrow"),
        heartbeat("a", "2026-09-21 13:36:20"),  # no zone: not RFC 3339
        heartbeat("a", "2026-13-45T99:00:00Z"),
        {**heartbeat("a", LATER), "endsAt": NOW + 180.0},  # a number, not a time
        {key: value for key, value in heartbeat("a", LATER).items() if key != "endsAt"},
    ]
    assert elect(malformed, SHARD, "b", NOW) is Role.LEADER
    assert elect([*malformed, heartbeat("a", LATER)], SHARD, "b", NOW) is Role.FOLLOWER


def test_plain_string_order() -> None:
    # Code point order: capitals before lower case, "a10" before "a2".
    assert elect([heartbeat("B", LATER)], SHARD, "a", NOW) is Role.FOLLOWER
    assert elect([heartbeat("a2", LATER)], SHARD, "a10", NOW) is Role.LEADER


def test_silenced_heartbeats_still_count() -> None:
    status = {"state": "suppressed", "silencedBy": ["f00"], "inhibitedBy": []}
    assert elect([heartbeat("a", LATER, status=status)], SHARD, "b", NOW) is Role.FOLLOWER


def test_an_instance_without_replicas_is_deferred_to() -> None:
    # It acts regardless; the replicas stand back rather than act twice.
    assert elect([heartbeat(None, LATER)], SHARD, "a", NOW) is Role.FOLLOWER
    assert elect([heartbeat(None, EARLIER)], SHARD, "a", NOW) is Role.LEADER


def test_without_replicas_always_leader() -> None:
    assert elect([heartbeat("a", LATER)], SHARD, None, NOW) is Role.LEADER

    def unreachable() -> list[Mapping[str, Any]]:
        raise AssertionError("a replica-less instance reads nothing")

    assert leadership(unreachable, SHARD, None, NOW) is Role.LEADER


def test_leadership_is_isolated_when_blind_or_unseen() -> None:
    def fails() -> list[Mapping[str, Any]]:
        raise NotifyError("no Alertmanager peer answered", recoverable=True)

    assert leadership(fails, SHARD, "a", NOW) is Role.ISOLATED
    assert leadership(lambda: [heartbeat("b", LATER)], SHARD, "a", NOW) is Role.LEADER
    # My heartbeat reached no peer: the others think I am gone and one of them leads.
    assert leadership(lambda: [], SHARD, "a", NOW, pushed=False) is Role.ISOLATED


@settings(max_examples=100, deadline=None)
@given(
    live=st.sets(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,11}", fullmatch=True), min_size=1),
    dead=st.sets(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,11}", fullmatch=True)),
)
def test_exactly_one_live_replica_leads(live: set[str], dead: set[str]) -> None:
    dead -= live
    seen = [heartbeat(name, LATER) for name in live] + [heartbeat(n, EARLIER) for n in dead]
    leaders = [name for name in live if elect(seen, SHARD, name, NOW) is Role.LEADER]
    assert leaders == [min(live)]


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2026-09-21T14:13:20Z", NOW),
        ("2026-09-21T14:13:20.000Z", NOW),
        ("2026-09-21T14:13:20.5z", NOW + 0.5),
        ("2026-09-21T14:13:20.123456789Z", NOW + 0.123456789),
        ("2026-09-21T16:13:20+02:00", NOW),
        ("2026-09-21T08:43:20.25-05:30", NOW + 0.25),
        ("2026-09-21 14:13:20Z", NOW),
        ("0001-01-01T00:00:00Z", -62135596800.0),  # Go's zero time
    ],
)
def test_rfc3339_forms(text: str, epoch: float) -> None:
    assert parse_rfc3339(text) == pytest.approx(epoch, abs=1e-6)


@pytest.mark.parametrize(
    "text", ["", "2026-09-21", "2026-09-21T14:13:20", "2026-02-30T00:00:00Z", "20260921T133320Z"]
)
def test_rfc3339_rejects(text: str) -> None:
    assert parse_rfc3339(text) is None


def test_fleets_sharing_alertmanager_elect_apart() -> None:
    """Shard 1/2 of site-a and shard 1/2 of site-b are different shards."""
    now = NOW
    site_a = heartbeat_alerts(SHARD, "b", now, 60.0, fleet="site-a")
    site_b = heartbeat_alerts(SHARD, "a", now, 60.0, fleet="site-b")
    unnamed = heartbeat_alerts(SHARD, "0", now, 60.0)
    for documents, fleet in ((site_a, "site-a"), (site_b, "site-b")):
        assert all(d["labels"]["cluster"] == fleet for d in documents)  # type: ignore[index]
        assert fleet in str(documents[1]["annotations"])
    assert all("cluster" not in d["labels"] for d in unnamed)  # type: ignore[operator]
    listed = [*site_a, *site_b, *unnamed]
    # site-b's "a" and the unnamed fleet's "0" do not outrank site-a's "b".
    assert elect(listed, SHARD, "b", now, fleet="site-a") is Role.LEADER
    assert elect(listed, SHARD, "c", now, fleet="site-a") is Role.FOLLOWER
    assert elect(listed, SHARD, "b", now, fleet="site-b") is Role.FOLLOWER
    assert elect(listed, SHARD, "1", now) is Role.FOLLOWER  # the unnamed fleet: "0" leads
    assert heartbeat_matchers(SHARD, "site-a")["cluster"] == "site-a"
    assert heartbeat_matchers(SHARD)["cluster"] == ""


# --- leadership over time: the state machine ----------------------------------------------

LIFETIME_S = 60.0
LEADER, FOLLOWER, ISOLATED = Role.LEADER, Role.FOLLOWER, Role.ISOLATED


def test_leadership_table_isolates_on_every_loss_and_leads_only_when_settled() -> None:
    losses = (LeadershipEvent.UNSEEN, LeadershipEvent.BLIND, LeadershipEvent.EXPIRED)
    for standing in Standing:
        for event in losses:
            assert LEADERSHIP.next(standing, event) is Standing.ISOLATED
    leading = {
        (state, event)
        for state, moves in LEADERSHIP.items()
        for event, target in moves.items()
        if target is Standing.LEADER
    }
    assert {event for _, event in leading} == {LeadershipEvent.SETTLED}
    assert not LEADERSHIP.allows(Standing.LEADER, LeadershipEvent.LOWEST)
    with pytest.raises(ValueError, match="no leadership transition from leader on lowest"):
        LEADERSHIP.next(Standing.LEADER, LeadershipEvent.LOWEST)
    assert Standing.JOINING.role is FOLLOWER and Standing.LEADER.role is LEADER


def test_a_replica_that_has_just_become_visible_waits_a_lifetime_before_leading() -> None:
    replica = Leadership("a", LIFETIME_S)
    assert replica.role_at(NOW).role is ISOLATED  # nothing heard yet: never acts
    assert replica.heard(LEADER, pushed=True, at=NOW) is Standing.JOINING
    assert replica.role_at(NOW + 1).role is FOLLOWER
    assert replica.heard(LEADER, pushed=True, at=NOW + 30) is Standing.JOINING
    assert replica.heard(LEADER, pushed=True, at=NOW + 60) is Standing.LEADER
    change = replica.role_at(NOW + 61)
    assert change.role is LEADER and change.previous is FOLLOWER and change.changed
    assert not replica.role_at(NOW + 62).changed


def test_a_leader_whose_heartbeat_expires_unrefreshed_steps_down_and_joins_again() -> None:
    replica = Leadership("a", LIFETIME_S)
    for at in (NOW, NOW + 30, NOW + 60):
        replica.heard(LEADER, pushed=True, at=at)
    assert replica.role_at(NOW + 61).role is LEADER
    assert replica.role_at(NOW + 120).role is LEADER  # its last heartbeat lives to +120
    assert replica.role_at(NOW + 121).role is ISOLATED  # expired: the others stop seeing it
    # Seen again: it is new to the others, so it waits a lifetime once more.
    assert replica.heard(LEADER, pushed=True, at=NOW + 150) is Standing.JOINING
    assert replica.heard(LEADER, pushed=True, at=NOW + 210) is Standing.LEADER


def test_a_failed_push_isolates_at_once() -> None:
    replica = Leadership("a", LIFETIME_S)
    for at in (NOW, NOW + 60):
        replica.heard(LEADER, pushed=True, at=at)
    assert replica.heard(LEADER, pushed=False, at=NOW + 90) is Standing.ISOLATED
    assert replica.last_push_at is None and replica.role_at(NOW + 91).role is ISOLATED
    assert replica.heard(LEADER, pushed=True, at=NOW + 120) is Standing.JOINING


def test_a_replica_blind_to_alertmanager_does_not_act_but_stays_visible() -> None:
    replica = Leadership("a", LIFETIME_S)
    for at in (NOW, NOW + 60):
        replica.heard(LEADER, pushed=True, at=at)
    # Its push was accepted, the read failed: it cannot know who leads, so it does not act.
    assert replica.heard(ISOLATED, pushed=True, at=NOW + 90) is Standing.ISOLATED
    assert replica.last_push_at == NOW + 90
    # The others saw it all along: once it can read again it leads at once.
    assert replica.heard(LEADER, pushed=True, at=NOW + 120) is Standing.LEADER


def test_a_lower_replica_outranks_a_leader() -> None:
    replica = Leadership("b", LIFETIME_S)
    for at in (NOW, NOW + 60):
        replica.heard(LEADER, pushed=True, at=at)
    assert replica.heard(FOLLOWER, pushed=True, at=NOW + 90) is Standing.FOLLOWER
    assert replica.role_at(NOW + 91).role is FOLLOWER
    # The lower one dies; b has been visible for long: it takes over at once.
    assert replica.heard(LEADER, pushed=True, at=NOW + 180) is Standing.LEADER


def test_without_replicas_leadership_is_always_leader() -> None:
    alone = Leadership(None, LIFETIME_S)
    assert alone.heard(ISOLATED, pushed=False, at=NOW) is Standing.LEADER
    assert alone.role_at(NOW + 1e9).role is LEADER


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 100.0), st.booleans(), st.sampled_from([LEADER, FOLLOWER, ISOLATED])
        ),
        max_size=40,
    )
)
def test_a_replica_leads_only_while_seen_for_a_lifetime_and_its_heartbeat_lives(
    steps: list[tuple[float, bool, Role]],
) -> None:
    """Against a reference: a cycle runs as leader only when the last read said lowest,
    the last push was accepted and has not expired, and the replica has been visible
    (accepted pushes, none failed, never expired) for a lifetime."""
    replica = Leadership("a", LIFETIME_S)
    at = NOW
    visible_since: float | None = None
    last_ok: float | None = None
    last_read: Role | None = None
    for delay, pushed, read in steps:
        at += delay
        # The cycle starting now: expiry first.
        if last_ok is not None and at > last_ok + LIFETIME_S:
            visible_since = last_ok = None
        role = replica.role_at(at).role
        should_lead = (
            last_read is LEADER
            and last_ok is not None
            and visible_since is not None
            and at <= last_ok + LIFETIME_S
        )
        assert (role is LEADER) == (should_lead and replica.standing is Standing.LEADER)
        if role is LEADER:
            assert visible_since is not None and last_ok - visible_since >= LIFETIME_S
        # Then this cycle's push and read.
        if pushed:
            visible_since = at if visible_since is None else visible_since
            last_ok = at
            last_read = read
        else:
            visible_since = last_ok = None
            last_read = None
        replica.heard(read, pushed=pushed, at=at)
