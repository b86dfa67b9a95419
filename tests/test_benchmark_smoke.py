"""The fleet benchmark runs end to end (100 miners), and the fast paths it measured hold.

No timing is asserted: the benchmark's figures live in ``benchmarks/RESULTS.md``. What
is checked here is that ``benchmarks/fleet.py`` still runs every contender against the
simulator, and that what it made fast stays correct: orjson decodes replies exactly as
the lenient decoder does, stats is dropped only where it adds nothing, the poller leaves
the garbage collector as it found it and the client's failures leave no reference
cycles, and the open-file limit is raised or the concurrency clamped.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import json
import socket
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgwatchdog import protocol
from cgwatchdog.errors import ProtocolError
from cgwatchdog.poller import BASE_COMMANDS, STATS_COMMAND, Poller
from cgwatchdog.simulator import FakeClock, Fleet, serve
from cgwatchdog.snapshot import Snapshot, Unreachable

REPO = Path(__file__).resolve().parent.parent
FLEET = REPO / "benchmarks" / "fleet.py"


# -- the benchmark itself -----------------------------------------------------------------


def test_fleet_benchmark_runs_every_contender_on_100_miners(tmp_path: Path) -> None:
    contenders = ["cgwatchdog", "sequential", "floor-streams", "floor-protocol"]
    if importlib.util.find_spec("pyasic") is not None:
        contenders.append("pyasic")
    if importlib.util.find_spec("uvloop") is not None:
        contenders.append("floor-protocol-uvloop")
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable, str(FLEET), "--miners", "100", "--cycles", "1", "--history", "300",
            "--sample", "20", "--contenders", ",".join(contenders),
            "--listen", "127.0.93.1", "--json", str(figures),
        ],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "### 100 miners" in done.stdout
    rows = {r["name"]: r for r in json.loads(figures.read_text())["100"]}
    assert sorted(rows) == sorted(contenders)
    for name, row in rows.items():
        assert "error" not in row, (name, row)
        assert row["answered"] == row["polled"], (name, row)
        assert row["wall_s"] > 0 and row["cpu_s"] > 0 and row["rss_mb"] > 0
    assert rows["sequential"]["polled"] == 20 and rows["sequential"]["scale"] == 5.0
    assert rows["cgwatchdog"]["polled"] == 100
    assert any("history pre-filled: 10 samples" in note for note in rows["cgwatchdog"]["notes"])


# -- orjson decodes as the lenient decoder does ----------------------------------------------

needs_orjson = pytest.mark.skipif(
    protocol._fast_loads is None, reason="orjson (the [fast] extra) is not installed"
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
# Bytes that turn valid JSON into what firmware sends: the }{ of bmminer, leading and
# trailing commas, NaN, control characters, bad escapes, non-UTF-8, truncation.
_mangles = st.sampled_from(
    [
        b"}{",
        b"},{",
        b"} {",
        b"[,",
        b",}",
        b",]",
        b"nan",
        b"inf",
        b"\x01",
        b"\n",
        b"\\'",
        b"\xff",
        b"",
    ]
)


def _lenient(data: bytes) -> object:
    fast = protocol._fast_loads
    protocol._fast_loads = None
    try:
        return protocol.decode_reply(data)
    except ProtocolError as exc:
        return ("error", str(exc))
    finally:
        protocol._fast_loads = fast


def _either(data: bytes) -> object:
    try:
        return protocol.decode_reply(data)
    except ProtocolError as exc:
        return ("error", str(exc))


def _same(a: object, b: object) -> bool:
    # repr: NaN-free data, but -0.0 and 0.0 must not pass for each other
    return repr(a) == repr(b)


@needs_orjson
@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.text(max_size=6), _json, max_size=5),
    st.lists(st.tuples(st.integers(min_value=0), _mangles), max_size=3),
)
def test_fast_decode_equals_the_lenient_decoder(
    doc: dict[str, object], cuts: list[tuple[int, bytes]]
) -> None:
    data = json.dumps(doc, ensure_ascii=False).encode()
    for at, piece in cuts:
        at %= len(data) + 1
        data = data[:at] + piece + data[at:]
    assert _same(_either(data + b"\0"), _lenient(data + b"\0"))


@needs_orjson
@pytest.mark.parametrize(
    "data",
    [
        b'{"STATS":[{"a":1}{"b":2}],"id":1}',  # bmminer 1.0: mended on the fast path
        b'{"STATS":[{"a":1} \n{"b":2}{"c":"}{"}],"id":1}',
        b'{"s":"\xc3\xa9}{","x":[{"a":1}{"b":2}]}',  # non-ASCII: the lenient path decides
        b'{"a":1}{"b":2}',  # two objects back to back
        b'{"big":123456789012345678901234567890,"f":1e400}',
        b'{"a":1,"a":2}',
        b'{"t":"\\ud800"}',
    ],
)
def test_fast_decode_on_quirks_seen_in_the_field(data: bytes) -> None:
    assert _same(_either(data), _lenient(data))


# -- the poller ------------------------------------------------------------------------------


async def test_stats_is_dropped_where_it_adds_nothing() -> None:
    clock = FakeClock()  # still: each miner answers the same figures twice
    fleet = Fleet.build(6, listen="127.0.94.1", clock=clock)
    async with serve(fleet):
        poller = Poller(list(fleet), timeout=2.0, clock=clock)
        first = await poller.poll()
        fleet.reset_counters()
        second = await poller.poll()
    for member, before, after in zip(fleet, first, second, strict=True):
        assert isinstance(before, Snapshot) and isinstance(after, Snapshot)
        if member.miner.flavour.name == "bmminer":  # boards, fans and chains are in stats
            assert STATS_COMMAND in member.commands
            assert after == before
        else:
            assert set(member.commands) == set(BASE_COMMANDS)
            # everything but the raw stats entries kept in extra is as with stats
            assert dataclasses.replace(after, extra=before.extra) == before


@dataclasses.dataclass(frozen=True)
class _Target:
    name: str
    host: str
    port: int


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (in the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


async def test_poll_leaves_gc_as_found_and_failures_leave_no_cycles(silent_port: int) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    targets = [_Target(f"hang{i}", "127.0.0.1", silent_port) for i in range(5)]
    targets += [_Target(f"refused{i}", "127.0.0.1", refused_port) for i in range(5)]
    poller = Poller(targets, timeout=0.2, connect_timeout=0.5)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        results = await poller.poll()
        assert not gc.isenabled()  # left as found
        kinds = {r.kind.value for r in results if isinstance(r, Unreachable)}
        assert kinds == {"read_timeout", "refused"}, results
        del results
        gc.collect()
        # asyncio's selector transports are cycles of their own (a bound method kept on
        # the transport); nothing of ours may be: no frame, traceback, exception, decoder.
        ours = [
            type(o).__name__
            for o in gc.garbage
            if type(o).__module__.startswith("cgwatchdog")
            or isinstance(o, BaseException | types.FrameType | types.TracebackType)
        ]
        assert ours == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    await poller.poll()
    assert gc.isenabled()


@pytest.mark.parametrize(
    ("limits", "expected"),
    [((256, 4096), "1000 1064 []"), ((256, 256), "192 256 ['open-file limit 256']")],
    ids=["raised-to-the-hard-limit", "clamped-and-said"],
)
def test_file_limit_raised_or_concurrency_clamped(limits: tuple[int, int], expected: str) -> None:
    script = textwrap.dedent(
        f"""
        import logging, resource
        resource.setrlimit(resource.RLIMIT_NOFILE, {limits!r})
        records = []
        logging.getLogger("cgwatchdog").addHandler(logging.Handler())
        logging.getLogger("cgwatchdog").handlers[0].emit = records.append
        from cgwatchdog.poller import fit_file_limit
        allowed = fit_file_limit(1000)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        print(allowed, soft, [r.getMessage()[:19] for r in records])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
