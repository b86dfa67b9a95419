"""Rendezvous hashing of miner names into shards (cgwatchdog/shard.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgwatchdog.config import MinerConfig, Shard
from cgwatchdog.shard import owns, select, shard_of, weight

MAX_SHARDS = 8


def realistic_names() -> list[str]:
    """10,000 names as farms write them: rack/slot names, host:port defaults, models."""
    names = [f"s9-rack{rack:02d}-{slot:02d}" for rack in range(50) for slot in range(60)]
    names += [f"10.1.{third}.{fourth}:4028" for third in range(12) for fourth in range(1, 251)]
    names += [f"antminer-s19-r{row}-{unit:03d}" for row in range(10) for unit in range(100)]
    names += [f"avalon-{site}-{n:04d}" for site in ("east", "west", "north") for n in range(1000)]
    assert len(names) == len(set(names)) == 10_000
    return names


NAMES = realistic_names()

# Computed once from BLAKE2b. If this test fails, the hash changed: every deployment
# would reshuffle its miners between shards on upgrade. Do not update these values
# unless that is intended and announced.
GOLDEN = {
    "s9-rack12-07": [1, 2, 3, 3, 3, 3, 7, 8],
    "10.1.2.3:4028": [1, 1, 3, 3, 3, 3, 3, 8],
    "avalon-a": [1, 2, 3, 4, 4, 4, 4, 4],
    "miner-0001": [1, 2, 2, 2, 2, 2, 2, 8],
    "antminer-s19-r3-14": [1, 1, 1, 4, 4, 4, 4, 8],
    "ü-naïve": [1, 2, 2, 2, 2, 2, 2, 2],
}
GOLDEN_WEIGHT = ("s9-rack12-07", 1, 3585675182567020735)


def test_known_names_stay_on_their_shards() -> None:
    for name, shards in GOLDEN.items():
        assert [shard_of(name, count) for count in range(1, MAX_SHARDS + 1)] == shards, name
    name, index, value = GOLDEN_WEIGHT
    assert weight(index, name) == value


def test_the_same_in_another_process_with_another_hash_seed() -> None:
    # Python's hash() is salted per process: a shard function built on it would agree
    # with itself within one test run and still scatter a fleet across restarts.
    script = (
        "from cgwatchdog.shard import shard_of\n"
        "import sys\n"
        "names = sys.stdin.read().split('\\n')\n"
        "print(','.join(str(shard_of(n, 7)) for n in names))\n"
    )
    sample = NAMES[::97]
    expected = ",".join(str(shard_of(name, 7)) for name in sample)
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", script],
            input="\n".join(sample),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert done.stdout.strip() == expected


def test_the_owner_has_the_highest_weight() -> None:
    for name in NAMES[:200]:
        for count in range(1, MAX_SHARDS + 1):
            weights = [weight(index, name) for index in range(1, count + 1)]
            assert shard_of(name, count) == weights.index(max(weights)) + 1


@pytest.mark.parametrize("count", range(1, MAX_SHARDS + 1))
def test_shards_are_within_ten_percent_of_even(count: int) -> None:
    sizes = Counter(shard_of(name, count) for name in NAMES)
    assert set(sizes) == set(range(1, count + 1))
    even = len(NAMES) / count
    worst = max(abs(size - even) / even for size in sizes.values())
    print(f"{count} shards: sizes {sorted(sizes.values())}, worst {worst:.1%} off even")
    assert worst <= 0.10


@pytest.mark.parametrize("count", range(1, MAX_SHARDS))
def test_adding_a_shard_moves_few_miners_and_only_to_it(count: int) -> None:
    before = {name: shard_of(name, count) for name in NAMES}
    after = {name: shard_of(name, count + 1) for name in NAMES}
    moved = [name for name in NAMES if before[name] != after[name]]
    fraction = len(moved) / len(NAMES)
    print(f"{count} -> {count + 1} shards: {fraction:.2%} moved (ideal {1 / (count + 1):.2%})")
    assert fraction <= 1 / (count + 1) + 0.02
    assert all(after[name] == count + 1 for name in moved)
    # And each old shard gives up a share, not one shard all of it.
    assert {before[name] for name in moved} == set(range(1, count + 1))


@settings(max_examples=60, deadline=None)
@given(
    names=st.sets(st.text(min_size=1, max_size=40), min_size=1, max_size=60),
    count=st.integers(min_value=1, max_value=MAX_SHARDS),
)
def test_shards_partition_any_fleet(names: set[str], count: int) -> None:
    miners = [MinerConfig(name=name, host="127.0.0.1") for name in sorted(names)]
    chosen = [select(miners, Shard(index, count)) for index in range(1, count + 1)]
    seen = [miner.name for part in chosen for miner in part]
    assert sorted(seen) == sorted(names)  # covering, and disjoint (no name twice)
    for index, part in enumerate(chosen, start=1):
        # config order kept
        assert [m.name for m in part] == [m.name for m in miners if m in part]
        for miner in miners:
            assert owns(miner.name, Shard(index, count)) == (miner in part)


@settings(max_examples=60, deadline=None)
@given(
    names=st.sets(st.text(min_size=1, max_size=40), min_size=1, max_size=60),
    count=st.integers(min_value=1, max_value=MAX_SHARDS - 1),
)
def test_a_moved_name_always_moves_to_the_new_shard(names: set[str], count: int) -> None:
    for name in names:
        old, new = shard_of(name, count), shard_of(name, count + 1)
        assert new in (old, count + 1)
        assert 1 <= old <= count


def test_select_keeps_configuration_order() -> None:
    miners = [MinerConfig(name=name, host="127.0.0.1") for name in NAMES[:500]]
    for index in (1, 2, 3):
        part = select(miners, Shard(index, 3))
        positions = [miners.index(miner) for miner in part]
        assert positions == sorted(positions)
        assert 0 < len(part) < len(miners)
    assert select(miners, Shard(1, 1)) == tuple(miners)


def test_names_with_the_separator_or_lone_surrogates_are_hashed() -> None:
    for name in ("a\x00b", "\x00", "1\x00x", "\ud800broken"):
        assert 1 <= shard_of(name, 5) <= 5
    # The index comes first and holds no NUL: "1" + "\x00" + "1\x00x" is not confusable.
    assert weight(1, "1\x00x") != weight(11, "x")


def test_a_fleet_needs_at_least_one_shard() -> None:
    with pytest.raises(ValueError, match="at least 1 shard"):
        shard_of("s9-rack12-07", 0)
