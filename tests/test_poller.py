"""The poller over real sockets: field captures replayed, the simulator, dead miners."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from cgwatchdog.poller import Poller
from cgwatchdog.simulator import FakeClock, Fleet, serve
from cgwatchdog.snapshot import Snapshot, Unreachable
from tests.conftest import Capture, fixture_files, require_fixtures


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int


def _close(actual: float | None, expected: float) -> bool:
    return actual is not None and abs(actual - expected) <= 0.02 * expected


@pytest.mark.parametrize("path", fixture_files() or [None], ids=lambda p: p.stem if p else "none")
async def test_field_capture_polls_up_with_expected_figures(
    path: Any, replay_server: Callable[[Capture], Any]
) -> None:
    if path is None:
        require_fixtures()
    capture = Capture.load(path)
    port = await replay_server(capture)
    poller = Poller([Target(capture.name, "127.0.0.1", port)], timeout=2.0)
    (result,) = await poller.poll()
    assert isinstance(result, Snapshot), result
    expect = capture.expect
    also = expect.get("also", {})
    rates = [expect["hashrate_hs"], *also.get("hashrate_hs", [])]
    assert any(_close(result.hashrate_hs, rate) for rate in rates), (result.hashrate_hs, rates)
    if expect["devices"] is not None:
        assert len(result.devices) in [expect["devices"], *also.get("devices", [])]
    assert len(result.pools) in [expect["pools"], *also.get("pools", [])]
    if expect["fans_rpm"] is not None:
        assert list(result.fans_rpm) == expect["fans_rpm"]
    if expect.get("temperature_max_c") is not None:
        assert result.temperature_max_c == pytest.approx(expect["temperature_max_c"])


async def test_multi_command_refused_falls_back_and_is_remembered(
    replay_server: Callable[[Capture], Any],
) -> None:
    # A firmware that answers Code 14 to "a+b" (old API) is asked one command at a time.
    capture = Capture(
        name="old-api",
        expect={},
        reply_bytes={
            "summary": b'{"STATUS":[{"STATUS":"S","When":10,"Code":11,"Msg":"Summary",'
            b'"Description":"cgminer 3.1.1"}],"SUMMARY":[{"Elapsed":100,"MHS 5s":1000.0}],"id":1}',
        },
    )
    original = capture.answer
    capture.answer = lambda command: (  # type: ignore[method-assign]
        capture._one("nope") if "+" in command else original(command)
    )
    port = await replay_server(capture)
    poller = Poller([Target("old", "127.0.0.1", port)], timeout=2.0)
    (first,) = await poller.poll()
    assert isinstance(first, Snapshot) and first.hashrate_hs == pytest.approx(1e9)
    capture.requests.clear()
    await poller.poll()
    assert all("+" not in command for command in capture.requests), capture.requests


async def test_fleet_of_mixed_flavours_and_a_dead_address() -> None:
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet.build(30, clock=clock, listen="127.0.31.1", base_port=0)
    with socket.socket() as probe:  # a port with nothing listening on it
        probe.bind(("127.0.31.1", 0))
        dead_port = probe.getsockname()[1]
    async with serve(fleet):
        targets = [Target(m.name, m.address[0], m.address[1]) for m in fleet.members]
        targets.append(Target("ghost", "127.0.31.1", dead_port))
        poller = Poller(targets, timeout=2.0, connect_timeout=0.5, concurrency=8, clock=clock)
        results = await poller.poll()
        assert [r.name for r in results] == [t.name for t in targets]
        snapshots = [r for r in results if isinstance(r, Snapshot)]
        assert len(snapshots) == 30
        assert all(s.hashrate_hs and s.hashrate_hs > 0 and s.devices for s in snapshots)
        ghost = results[-1]
        assert isinstance(ghost, Unreachable) and "refused" in ghost.error
        # Every miner was asked with one connection in the first cycle.
        assert all(m.connections == 1 for m in fleet.members)
        # What the first contacts taught: one object per identity, not one per miner.
        learned = [poller._states[s.name].learned for s in snapshots]
        assert len({id(x) for x in learned}) == len(set(learned)) < len(learned)
        assert {x.family for x in learned} >= {"cgminer", "antminer"}


async def test_raw_replies_are_kept_only_for_the_miners_asked_for() -> None:
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet.build(3, clock=clock, listen="127.0.31.20", base_port=0)
    async with serve(fleet):
        targets = [Target(m.name, m.address[0], m.address[1]) for m in fleet.members]
        poller = Poller(targets, timeout=2.0, connect_timeout=0.5, clock=clock)
        await poller.poll()
        assert all(poller.last_replies(t.name) is None for t in targets)  # none by default
        watched = {"sim-002"}
        poller.keep_replies = watched.__contains__
        await poller.poll()
        kept = poller.last_replies("sim-002")
        assert kept is not None and kept[0] == clock() and "summary" in kept[1]
        assert poller.last_replies("sim-001") is None
        # Down: the replies it gave before stay; once it is no longer watched they go.
        await fleet.down("sim-002")
        await poller.poll()
        assert poller.last_replies("sim-002") == kept
        await fleet.up("sim-002")
        watched.clear()
        await poller.poll()
        assert poller.last_replies("sim-002") is None


@pytest.mark.parametrize("plan_ahead", [True, False])
async def test_one_shot_first_contact_skips_planning_and_reads_the_same(plan_ahead: bool) -> None:
    # A one-shot poll has no later cycle: it does not rebuild answers without `stats`
    # to plan one, and what it reads is the same as a planning poller's first cycle.
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet.build(12, clock=clock, listen="127.0.31.40", base_port=0)
    async with serve(fleet):
        targets = [Target(m.name, m.address[0], m.address[1]) for m in fleet.members]
        planning = Poller(targets, timeout=2.0, connect_timeout=0.5, clock=clock)
        one_shot = Poller(targets, timeout=2.0, connect_timeout=0.5, clock=clock)
        one_shot.plan_ahead = plan_ahead
        assert await one_shot.poll() == await planning.poll()
        for m in fleet.members:
            m.commands.clear()
        await one_shot.poll()
        asked_stats = [m.name for m in fleet.members if m.commands.get("stats")]
        if plan_ahead:
            # cgminer and bfgminer say all in summary+devs+pools; bmminer needs stats.
            assert asked_stats == ["sim-002", "sim-005", "sim-008", "sim-011"]
        else:
            assert asked_stats == [m.name for m in fleet.members]  # kept: never compared
