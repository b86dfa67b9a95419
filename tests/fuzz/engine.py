"""The fuzzing loop: numbered inputs, crash bookkeeping, several processes.

Input ``i`` of a run with seed ``s`` is generated from ``random.Random((s << 40) + i)``
and checked with a second generator derived from the same pair, so any input (and the
chunk boundaries it was fed with) is reproduced by ``--seed s --index i``, whatever
``--jobs`` was. A crash is any exception a target's ``check`` lets through, or a broken
:class:`Invariant`; crashes are grouped by a signature (the exception type and the
innermost ``cgwatchdog`` frame, or the invariant's name), and the first input of each
group is written to the crash directory with its traceback and replay command.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final, Protocol

CHECK_SALT: Final = 0x5DEECE66D
BATCH: Final = 2000
"""Inputs per unit of work handed to a process (and between progress lines)."""


class Invariant(AssertionError):
    """A property that an input broke; ``name`` groups alike failures."""

    def __init__(self, name: str, detail: str) -> None:
        self.name = name
        super().__init__(f"{name}: {detail}")


class Hang(Exception):
    """One input ran past the hang limit (raised from SIGALRM)."""


class Fuzzer(Protocol):
    """A target: makes input ``data`` from an rng and checks it."""

    name: str

    def generate(self, rng: random.Random) -> bytes: ...

    def check(self, data: bytes, rng: random.Random) -> None: ...


FuzzerFactory = Callable[[Path], Fuzzer]
"""Builds a target in a process, given a scratch directory of its own."""


def input_rngs(seed: int, index: int) -> tuple[random.Random, random.Random]:
    """The generator of input ``index`` and the one its check draws from."""
    key = (seed << 40) + index
    return random.Random(key), random.Random(key ^ CHECK_SALT)


@dataclass
class Crash:
    """The first input of one crash signature, and how many inputs hit it."""

    signature: str
    index: int
    message: str
    trace: str
    data: bytes
    count: int = 1


@dataclass
class Result:
    """What a run (or one batch of it) found."""

    inputs: int = 0
    seconds: float = 0.0
    crashes: dict[str, Crash] = field(default_factory=dict)
    slowest_s: float = 0.0
    slowest_index: int = -1

    def merge(self, other: Result) -> None:
        self.inputs += other.inputs
        for signature, crash in other.crashes.items():
            mine = self.crashes.get(signature)
            if mine is None:
                self.crashes[signature] = crash
            else:
                mine.count += crash.count
                if crash.index < mine.index:
                    crash.count = mine.count
                    self.crashes[signature] = crash
        if other.slowest_s > self.slowest_s:
            self.slowest_s, self.slowest_index = other.slowest_s, other.slowest_index

    @property
    def crashing_inputs(self) -> int:
        return sum(crash.count for crash in self.crashes.values())


def signature_of(exc: BaseException) -> str:
    """What groups alike crashes: the invariant, or the type and innermost own frame."""
    if isinstance(exc, Invariant):
        return f"invariant {exc.name}"
    if isinstance(exc, Hang):
        return "hang"
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}cgwatchdog{os.sep}" in f.filename]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    if where is None:
        return type(exc).__name__
    return f"{type(exc).__name__} in {Path(where.filename).name}:{where.lineno} {where.name}"


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang("input ran past the hang limit")


def run_batch(
    fuzzer: Fuzzer, seed: int, start: int, stop: int, *, slow_s: float = 0.0, hang_s: float = 0.0
) -> Result:
    """Generate and check inputs ``start..stop-1``.

    ``slow_s`` > 0: an input whose check takes longer is a crash too ("slow"); ``hang_s``
    > 0: an input is interrupted after that long (main thread only: SIGALRM).
    """
    result = Result()
    began = time.perf_counter()
    if hang_s > 0:
        signal.signal(signal.SIGALRM, _on_alarm)
    for index in range(start, stop):
        gen_rng, check_rng = input_rngs(seed, index)
        data = fuzzer.generate(gen_rng)
        t0 = time.perf_counter()
        try:
            if hang_s > 0:
                signal.setitimer(signal.ITIMER_REAL, hang_s)
            try:
                fuzzer.check(data, check_rng)
            finally:
                if hang_s > 0:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            elapsed = time.perf_counter() - t0
            if slow_s > 0 and elapsed > slow_s:
                raise Invariant("slow", f"one input took {elapsed:.2f} s (limit {slow_s:g} s)")
        except Exception as exc:  # everything a target lets through is a finding
            elapsed = time.perf_counter() - t0
            _record(result, exc, index, data)
        if elapsed > result.slowest_s:
            result.slowest_s, result.slowest_index = elapsed, index
        result.inputs += 1
    result.seconds = time.perf_counter() - began
    return result


def _record(result: Result, exc: Exception, index: int, data: bytes) -> None:
    signature = signature_of(exc)
    known = result.crashes.get(signature)
    if known is not None:
        known.count += 1
        return
    trace = "".join(traceback.format_exception(exc))
    message = f"{type(exc).__name__}: {str(exc)[:300]}"
    result.crashes[signature] = Crash(signature, index, message, trace, data)


# -- several processes ----------------------------------------------------------------------

_worker: Fuzzer | None = None
_worker_dir: tempfile.TemporaryDirectory[str] | None = None


def _init_worker(factory: FuzzerFactory) -> None:
    global _worker, _worker_dir
    _worker_dir = tempfile.TemporaryDirectory(prefix="cgw-fuzz-")
    _worker = factory(Path(_worker_dir.name))


def _work(args: tuple[int, int, int, float, float]) -> Result:
    seed, start, stop, slow_s, hang_s = args
    assert _worker is not None
    return run_batch(_worker, seed, start, stop, slow_s=slow_s, hang_s=hang_s)


def batches(inputs: int, start: int = 0) -> Iterator[tuple[int, int]]:
    for first in range(start, start + inputs, BATCH):
        yield first, min(first + BATCH, start + inputs)


def fuzz(
    factory: FuzzerFactory,
    *,
    inputs: int,
    seed: int,
    jobs: int = 1,
    start: int = 0,
    slow_s: float = 0.0,
    hang_s: float = 0.0,
    progress: Callable[[Result], None] | None = None,
) -> Result:
    """Run inputs ``start .. start+inputs-1`` of ``seed`` over ``jobs`` processes."""
    total = Result()
    began = time.perf_counter()
    if jobs <= 1:
        with tempfile.TemporaryDirectory(prefix="cgw-fuzz-") as scratch:
            fuzzer = factory(Path(scratch))
            for first, stop in batches(inputs, start):
                total.merge(run_batch(fuzzer, seed, first, stop, slow_s=slow_s, hang_s=hang_s))
                if progress is not None:
                    total.seconds = time.perf_counter() - began
                    progress(total)
    else:
        work = [(seed, first, stop, slow_s, hang_s) for first, stop in batches(inputs, start)]
        context = multiprocessing.get_context("fork")
        with context.Pool(jobs, initializer=_init_worker, initargs=(factory,)) as pool:
            for part in pool.imap_unordered(_work, work):
                total.merge(part)
                if progress is not None:
                    total.seconds = time.perf_counter() - began
                    progress(total)
    total.seconds = time.perf_counter() - began
    return total


def save_crashes(result: Result, target: str, seed: int, directory: Path) -> list[Path]:
    """Write each crash's input (``.bin``) and its traceback and replay command (``.txt``)."""
    directory.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    for crash in result.crashes.values():
        digest = hashlib.sha1(crash.signature.encode()).hexdigest()[:10]
        stem = directory / f"{target}-{digest}"
        stem.with_suffix(".bin").write_bytes(crash.data)
        stem.with_suffix(".txt").write_text(
            f"signature: {crash.signature}\n"
            f"inputs: {crash.count} (first: #{crash.index} of seed {seed})\n"
            f"replay: python tests/fuzz/run.py --target {target} --seed {seed} "
            f"--index {crash.index} --replay {stem.with_suffix('.bin')}\n\n{crash.trace}",
            encoding="utf-8",
        )
        saved.append(stem.with_suffix(".bin"))
    return saved
