"""Per-miner history (cgwatchdog/history.py): retention, medians, counter increases,
restart detection, persistence and memory. Time is injected; nothing sleeps."""

from __future__ import annotations

import json
import math
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgwatchdog.history import (
    MAX_SAMPLES,
    RESTART_SLACK_S,
    FleetHistory,
    MinerHistory,
)
from cgwatchdog.snapshot import build_snapshot

T0 = 1_700_000_000.0
TH = 1e12


def status(msg: str, code: int, when: float, letter: str = "S") -> list[dict[str, Any]]:
    return [
        {"STATUS": letter, "When": when, "Code": code, "Msg": msg, "Description": "cgminer 4.11.1"}
    ]


def replies(
    at: float,
    *,
    elapsed: float,
    ghs: float = 13500.0,
    hw: int = 0,
    diff1: float | None = None,
    difficulty_accepted: float | None = None,
    pools: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """cgminer 4.11 summary (+ pools) replies, as protocol.py decodes them."""
    summary: dict[str, Any] = {
        "Elapsed": elapsed,
        "MHS av": ghs * 1000,
        "MHS 5s": ghs * 1000,
        "Accepted": 100,
        "Rejected": 1,
        "Hardware Errors": hw,
        "Stale": 0,
    }
    if diff1 is not None:
        summary["Diff1 Work"] = diff1
    if difficulty_accepted is not None:
        summary["Difficulty Accepted"] = difficulty_accepted
    out: dict[str, Any] = {
        "summary": {"STATUS": status("Summary", 11, at), "SUMMARY": [summary], "id": 1}
    }
    if pools is not None:
        out["pools"] = {"STATUS": status(f"{len(pools)} Pool(s)", 7, at), "POOLS": pools, "id": 1}
    return out


def pool_entry(number: int, *, active: bool) -> dict[str, Any]:
    return {
        "POOL": number,
        "URL": f"stratum+tcp://pool{number}.example.org:3333",
        "Status": "Alive",
        "Priority": number,
        "Accepted": 10,
        "Rejected": 0,
        "Stale": 0,
        "Last Share Time": 0,
        "Stratum Active": active,
    }


def filled(
    count: int, *, step: float = 30.0, start_elapsed: float = 7200.0, retention_s: float = 3600.0
) -> MinerHistory:
    """A miner polled ``count`` times, ``step`` apart, running fine."""
    history = MinerHistory(retention_s)
    for i in range(count):
        history.record(
            T0 + i * step,
            elapsed_s=start_elapsed + i * step,
            hashrate_hs=13.5 * TH,
            hardware_errors=i,
            work=1000.0 * i,
        )
    return history


# --------------------------------------------------------------------------- retention


def test_retention_keeps_the_window_plus_one_anchor_sample() -> None:
    history = filled(200, retention_s=3600.0)
    times = [s.at for s in history.samples()]
    last = T0 + 199 * 30
    assert times[-1] == last
    assert times[0] <= last - 3600 < times[1]  # the anchor, then the window
    assert len(history) == 3600 // 30 + 1


def test_shorter_retention_on_reload_trims_at_once() -> None:
    history = filled(150)
    history.retention_s = 900.0
    assert len(history) == 900 // 30 + 1
    assert history.retention_s == 900.0


def test_an_older_sample_than_the_newest_is_ignored() -> None:
    history = filled(3)
    assert history.record(T0, elapsed_s=1.0, hashrate_hs=1.0) is False
    assert len(history) == 3
    assert history.last_restart_at == T0 - 7200.0


def test_fast_polls_are_bounded_by_max_samples_and_keep_counting() -> None:
    history = MinerHistory(3600.0)
    for i in range(7200):  # one poll a second for two hours
        history.record(
            T0 + i, elapsed_s=7200.0 + i, hashrate_hs=TH, hardware_errors=i, work=10.0 * i
        )
    assert len(history) <= MAX_SAMPLES + 2
    now = T0 + 7199
    increase = history.increase("hardware_errors", now, 900.0)
    assert increase is not None
    # Coalesced samples still add up: the increase covers the whole span it reports.
    assert increase.amount == pytest.approx(increase.span_s, abs=1.0)
    assert increase.span_s == pytest.approx(900.0, abs=3600.0 / MAX_SAMPLES + 1)


# --------------------------------------------------------------------------- medians


def test_hashrates_are_the_known_ones_between_two_times_inclusive() -> None:
    h = MinerHistory(retention_s=3600)
    for step, rate in enumerate([10.0, None, 30.0, 40.0, 50.0]):
        h.record(T0 + 30 * step, hashrate_hs=rate)
    assert h.hashrates(T0 + 30, T0 + 90) == [(T0 + 60, 30.0), (T0 + 90, 40.0)]
    assert h.hashrates(T0, T0 + 120) == [
        (T0, 10.0), (T0 + 60, 30.0), (T0 + 90, 40.0), (T0 + 120, 50.0)
    ]  # fmt: skip
    assert h.hashrates(T0 + 121, T0 + 999) == [] and MinerHistory().hashrates(T0, T0 + 60) == []


def test_median_ignores_one_bad_sample() -> None:
    history = MinerHistory()
    for i in range(31):
        rate = 0.5 * TH if i == 15 else 13.5 * TH
        history.record(T0 + i * 30, elapsed_s=7200.0 + i * 30, hashrate_hs=rate)
    median = history.median_hashrate(T0 + 900, 3600.0)
    assert median is not None
    assert median.value == pytest.approx(13.5 * TH, rel=1e-6)
    assert median.samples == 31
    assert median.span_s == 900.0


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    history = MinerHistory()
    for i, rate in enumerate((1.0, 2.0, 3.0, 10.0)):
        history.record(T0 + i * 30, elapsed_s=1000.0 + i * 30, hashrate_hs=rate * TH)
    median = history.median_hashrate(T0 + 90, 600.0)
    assert median is not None and median.value == pytest.approx(2.5 * TH)


def restarted_history(elapsed_kept_s: float | None = None, samples: int = 120) -> MinerHistory:
    """Running for hours at 10 TH/s, restarted at T0 + 300: 10 minutes of warm-up samples
    reading low, then 14 TH/s; ``samples`` every 30 s."""
    history = MinerHistory(3600.0, elapsed_kept_s=elapsed_kept_s)
    for i in range(10):
        history.record(T0 + i * 30, elapsed_s=50_000.0 + i * 30, hashrate_hs=10 * TH)
    for i in range(10, samples):
        elapsed = (i - 10) * 30.0 + 5
        rate = 2 * TH if elapsed < 600 else 14 * TH
        history.record(T0 + i * 30, elapsed_s=elapsed, hashrate_hs=rate)
    return history


def test_median_leaves_out_startup_grace_and_unknown_hashrates() -> None:
    history = restarted_history(samples=40)
    history.record(T0 + 40 * 30, elapsed_s=1205.0, hashrate_hs=None)
    now = T0 + 40 * 30
    with_grace = history.median_hashrate(now, 3600.0, startup_grace_s=600.0)
    assert with_grace is not None
    assert with_grace.samples == 10 + 10  # 20 warm-up samples and the unknown one left out
    assert with_grace.value == pytest.approx(12 * TH)
    assert with_grace.span_s == 39 * 30 - 0  # first kept sample T0 to last kept T0+1170
    without = history.median_hashrate(now, 3600.0)
    assert without is not None and without.samples == 40
    assert without.value == pytest.approx(6 * TH)


def test_only_the_elapsed_a_startup_grace_needs_is_kept() -> None:
    history = restarted_history(600.0)
    # The 20 samples of the ramp-up keep their Elapsed (5 to 575 s); the others do not.
    elapsed = [s.elapsed_s for s in history.samples()]
    assert elapsed[10:30] == [(i - 10) * 30.0 + 5 for i in range(10, 30)]
    assert all(math.isnan(e) for e in elapsed[:10] + elapsed[30:])
    now = T0 + 119 * 30
    median = history.median_hashrate(now, 3600.0, startup_grace_s=600.0)
    assert median is not None and median.samples == 100
    assert median.value == pytest.approx(14 * TH, rel=1e-6)
    # A shorter grace leaves out fewer; a longer one is served only as far as the kept 600 s.
    shorter = history.median_hashrate(now, 3600.0, startup_grace_s=300.0)
    assert shorter is not None and shorter.samples == 110
    longer = history.median_hashrate(now, 3600.0, startup_grace_s=900.0)
    assert longer == median
    # Saved and loaded, the kept Elapsed and the setting come back.
    back = MinerHistory.from_dict(json.loads(json.dumps(history.to_dict())))
    assert back.elapsed_kept_s == 600.0
    assert [s.elapsed_s for s in back.samples()][10:30] == elapsed[10:30]
    assert back.median_hashrate(now, 3600.0, startup_grace_s=600.0) == median


def test_elapsed_kept_goes_with_its_samples_and_with_a_lower_setting() -> None:
    history = restarted_history(600.0)
    history.elapsed_kept_s = 300.0  # a reload: the grace is now 5 minutes
    assert [s.elapsed_s for s in history.samples()][10:20] == [5.0 + 30 * i for i in range(10)]
    assert all(math.isnan(s.elapsed_s) for s in history.samples()[20:])
    assert history._young is not None
    for i in range(120, 145):  # the ramp-up's samples leave the hour
        history.record(T0 + i * 30, elapsed_s=(i - 10) * 30.0 + 5, hashrate_hs=14 * TH)
    assert all(math.isnan(s.elapsed_s) for s in history.samples())
    assert history._young is None  # nothing is kept for a miner that runs on


def test_elapsed_is_kept_below_the_retention_unless_told() -> None:
    history = restarted_history(None)
    assert history.elapsed_kept_s is None
    elapsed = [s.elapsed_s for s in history.samples()]
    assert all(e < 3600.0 for e in elapsed[10:]) and all(math.isnan(e) for e in elapsed[:10])
    history.elapsed_kept_s = 0.0  # no rule leaves a grace out: nothing is kept
    assert all(math.isnan(s.elapsed_s) for s in history.samples())
    median = history.median_hashrate(T0 + 119 * 30, 3600.0, startup_grace_s=600.0)
    assert median is not None and median.samples == 120


def test_median_of_nothing_is_none() -> None:
    assert MinerHistory().median_hashrate(T0, 3600.0) is None
    history = filled(5)
    assert history.median_hashrate(T0 + 10_000, 60.0) is None  # all older than the window


def test_unknown_elapsed_keeps_samples_in_the_median() -> None:
    history = MinerHistory()
    for i in range(5):
        history.record(T0 + i * 30, elapsed_s=None, hashrate_hs=(i + 1) * TH)
    median = history.median_hashrate(T0 + 120, 3600.0, startup_grace_s=600.0)
    assert median is not None and median.samples == 5 and median.value == pytest.approx(3 * TH)


# --------------------------------------------------------------------------- counters


def test_increase_over_a_window_from_the_anchor_sample() -> None:
    history = filled(61)  # hardware_errors = i, work = 1000 i
    now = T0 + 60 * 30
    hw = history.increase("hardware_errors", now, 900.0)
    work = history.increase("work", now, 900.0)
    assert hw == (30.0, 900.0)
    assert work == (30_000.0, 900.0)
    # A window longer than the history: from the oldest sample kept.
    assert history.increase("hardware_errors", now, 10 * 3600.0) == (60.0, 1800.0)


def test_counter_that_goes_down_counts_from_the_new_low() -> None:
    history = MinerHistory()
    values = [100, 110, 120, 5, 15, 25]  # a board left the sum after the third sample
    for i, value in enumerate(values):
        history.record(T0 + i * 30, elapsed_s=5000.0 + i * 30, hardware_errors=value)
    increase = history.increase("hardware_errors", T0 + 150, 3600.0)
    assert increase == (20.0 + 20.0, 150.0)


def test_restart_resets_counters_even_when_they_end_up_higher() -> None:
    history = MinerHistory(7200.0)
    history.record(T0, elapsed_s=5000.0, work=1000.0)
    history.record(T0 + 30, elapsed_s=5030.0, work=1100.0)
    # Away for an hour, restarted meanwhile: the counter grew past its old value.
    assert history.record(T0 + 3630, elapsed_s=1200.0, work=5000.0) is True
    history.record(T0 + 3660, elapsed_s=1230.0, work=5100.0)
    increase = history.increase("work", T0 + 3660, 7200.0)
    assert increase == (100.0 + 100.0, 3660.0)


def test_unknown_counter_values_are_skipped_not_zeroed() -> None:
    history = MinerHistory()
    for i, value in enumerate([10.0, None, None, 40.0, 50.0]):
        history.record(T0 + i * 30, elapsed_s=5000.0 + i * 30, hardware_errors=value)
    assert history.increase("hardware_errors", T0 + 120, 3600.0) == (40.0, 120.0)
    # Only the anchor before the window is known, then nothing: no figure.
    history2 = MinerHistory()
    history2.record(T0, elapsed_s=1000.0, hardware_errors=1.0)
    history2.record(T0 + 30, elapsed_s=1030.0, hardware_errors=None)
    assert history2.increase("hardware_errors", T0 + 30, 3600.0) is None
    assert MinerHistory().increase("work", T0, 60.0) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
            st.booleans(),  # restart before this sample
        ),
        min_size=2,
        max_size=40,
    )
)
def test_increase_is_never_negative_and_never_more_than_the_climbs(
    steps: list[tuple[int | None, bool]],
) -> None:
    history = MinerHistory(10**6)
    elapsed = 10_000.0
    climbs = 0.0
    previous: int | None = None
    for i, (value, restart) in enumerate(steps):
        elapsed = 10.0 if restart else elapsed + 30
        history.record(T0 + i * 30, elapsed_s=elapsed, hardware_errors=value)
        if value is not None:
            if previous is not None and value > previous:
                climbs += value - previous
            previous = value
    increase = history.increase("hardware_errors", T0 + len(steps) * 30, 10**6)
    if increase is not None:
        assert 0 <= increase.amount <= climbs


# --------------------------------------------------------------------------- restarts


def test_elapsed_going_down_is_a_restart() -> None:
    history = filled(10)
    assert history.last_restart_at == T0 - 7200.0  # from the first sample ever seen
    at = T0 + 10 * 30
    assert history.record(at, elapsed_s=12.0, hashrate_hs=0.0) is True
    assert history.last_restart_at == at - 12.0
    assert history.record(at + 30, elapsed_s=42.0) is False
    assert history.last_restart_at == at - 12.0


def test_coming_back_with_less_elapsed_than_the_time_away_is_a_restart() -> None:
    history = filled(2)  # last: T0+30, Elapsed 7230
    history.mark_unreachable(T0 + 60)
    history.mark_unreachable(T0 + 90)
    assert history.unreachable_since == T0 + 60
    back = T0 + 630
    # Elapsed still grew (7230 -> 7400) but by less than the 600 s away: it restarted.
    assert history.record(back, elapsed_s=7400.0) is True
    assert history.unreachable_since is None
    assert history.last_restart_at == back - 7400.0


def test_poll_jitter_is_not_a_restart() -> None:
    history = MinerHistory()
    history.record(T0, elapsed_s=1000.0)
    # The previous reply came 5 s late (Elapsed read high), this one on time.
    assert history.record(T0 + 30, elapsed_s=1025.0) is False
    assert history.record(T0 + 60, elapsed_s=1055.0 - RESTART_SLACK_S + 1) is False
    # The watchdog itself was down an hour; the miner kept running.
    assert history.record(T0 + 3660, elapsed_s=4655.0) is False


def test_elapsed_unknown_means_no_restart_known() -> None:
    history = MinerHistory()
    history.record(T0, hashrate_hs=TH)
    history.record(T0 + 30, hashrate_hs=TH)
    assert history.last_restart_at is None
    assert history.last_elapsed_s is None


# --------------------------------------------------------------------------- snapshots


def test_record_snapshot_takes_diff1_work_else_difficulty_accepted() -> None:
    history = MinerHistory()
    for i in range(3):  # bmminer-like: no Diff1 Work, Difficulty Accepted instead
        at = T0 + i * 30
        snap = build_snapshot(
            replies(at, elapsed=1000 + i * 30, hw=i, difficulty_accepted=65536.0 * i),
            name="m", host="10.0.0.1", port=4028, at=at,
        )  # fmt: skip
        history.record_snapshot(snap)
    assert source_of(history) == "difficulty_accepted"
    assert history.increase("work", T0 + 60, 900.0) == (131072.0, 60.0)
    # Firmware upgraded: Diff1 Work appears. The switch counts as a reset.
    for i in range(3, 5):
        at = T0 + i * 30
        snap = build_snapshot(
            replies(at, elapsed=1000 + i * 30, hw=i, diff1=5000.0 + 100 * i),
            name="m", host="10.0.0.1", port=4028, at=at,
        )  # fmt: skip
        history.record_snapshot(snap)
    assert source_of(history) == "diff1"
    assert history.increase("work", T0 + 120, 900.0) == (131072.0 + 0.0 + 100.0, 120.0)


def source_of(history: MinerHistory) -> str | None:
    return history.work_source


def test_active_pool_since_tracks_switches_and_starts() -> None:
    history = MinerHistory()

    def poll(at: float, elapsed: float, active: int) -> None:
        pools = [pool_entry(0, active=active == 0), pool_entry(1, active=active == 1)]
        snap = build_snapshot(
            replies(at, elapsed=elapsed, pools=pools), name="m", host="h", port=4028, at=at
        )
        history.record_snapshot(snap)

    poll(T0, 500.0, 0)
    assert (history.active_pool_id, history.active_pool_since) == (0, T0 - 500.0)
    poll(T0 + 30, 530.0, 1)  # failed over
    assert (history.active_pool_id, history.active_pool_since) == (1, T0 + 30)
    poll(T0 + 60, 560.0, 1)
    assert history.active_pool_since == T0 + 30
    poll(T0 + 90, 4.0, 1)  # restarted, still on pool 1: a fresh session since the start
    assert history.active_pool_since == T0 + 86.0


# --------------------------------------------------------------------------- persistence


def test_to_dict_is_strict_json_and_round_trips() -> None:
    history = filled(130)
    history.record(T0 + 130 * 30, elapsed_s=None, hashrate_hs=None, hardware_errors=None)
    history.mark_unreachable(T0 + 131 * 30)
    history.freeze_baseline("HashrateDrop", 13.5 * TH)
    text = json.dumps(history.to_dict(), allow_nan=False)
    back = MinerHistory.from_dict(json.loads(text))
    assert _same_samples(back.samples(), history.samples())
    assert back.retention_s == history.retention_s
    assert back.last_restart_at == history.last_restart_at
    assert back.unreachable_since == T0 + 131 * 30
    assert back.last_elapsed_s == history.last_elapsed_s
    assert back.frozen_baseline("HashrateDrop") == 13.5 * TH
    now = T0 + 130 * 30
    assert back.median_hashrate(now, 3600.0) == history.median_hashrate(now, 3600.0)
    assert back.increase("work", now, 900.0) == history.increase("work", now, 900.0)
    # A restart after the reload is still seen: the last Elapsed survived.
    assert back.record(now + 60, elapsed_s=3.0) is True


def _same_samples(a: list[Any], b: list[Any]) -> bool:
    def key(row: Any) -> tuple[Any, ...]:
        return tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in row)

    return [key(r) for r in a] == [key(r) for r in b]


def test_fleet_history_round_trips_and_forgets_removed_miners() -> None:
    fleet = FleetHistory()
    for name in ("a", "b", "c"):
        miner = fleet.miner(name, 900.0)
        miner.record(T0, elapsed_s=100.0, hashrate_hs=TH, hardware_errors=1, work=2.0)
    assert fleet.miner("a") is fleet["a"]
    fleet.retain({"a", "c"})
    assert sorted(fleet) == ["a", "c"] and "b" not in fleet and len(fleet) == 2
    back = FleetHistory.from_dict(json.loads(json.dumps(fleet.to_dict(), allow_nan=False)))
    assert sorted(back) == ["a", "c"]
    assert back["a"].retention_s == 900.0
    assert back.get("b") is None


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"version": 99, "miners": {}},
        {"version": 1, "miners": []},
        {"version": 1, "miners": {"a": "x"}},
        {"version": 1, "miners": {"a": {"retention_s": 60}}},
        {"version": 1, "miners": {"a": {"retention_s": 60, "columns": {"t": "!!"}}}},
    ],
)
def test_malformed_history_is_a_value_error(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FleetHistory.from_dict(data)


def test_columns_of_different_lengths_are_rejected() -> None:
    data = filled(3).to_dict()
    data["columns"]["hashrate"] = filled(2).to_dict()["columns"]["hashrate"]
    with pytest.raises(ValueError, match="length"):
        MinerHistory.from_dict(data)


# --------------------------------------------------------------------------- memory


def test_memory_per_miner_at_120_samples() -> None:
    """A report, with a generous bound: one hour at 30 s for one miner."""
    count = 500
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fleet = FleetHistory()
        for n in range(count):
            history = fleet.miner(f"rack1-s9-{n:05d}", 3600.0)
            for i in range(121):
                history.record(
                    T0 + i * 30,
                    elapsed_s=7200.0 + i * 30,
                    hashrate_hs=13.5 * TH,
                    hardware_errors=i,
                    work=3000.0 * 30 * i,
                )
        per_miner = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert len(fleet["rack1-s9-00000"]) == 121
    print(f"\nhistory: {per_miner:.0f} bytes per miner at 121 samples (one hour at 30 s)")
    assert per_miner < 8192
