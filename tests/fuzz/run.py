"""Fuzz the reply decoder or the config loader from the command line.

    python tests/fuzz/run.py --target decoder --inputs 1000000 --seed 1 --jobs 2
    python tests/fuzz/run.py --target config --inputs 100000 --seed 1 --jobs 2
    python tests/fuzz/run.py --target decoder --seed 1 --index 4711 --replay crash.bin

Prints one summary line (inputs, time, inputs/s, distinct crashes) and exits 1 when any
input crashed, 0 otherwise. Crashing inputs go to ``--crashes`` (default: a new
temporary directory, never the repository), one ``.bin`` with the input and one ``.txt``
with its signature, traceback and replay command per distinct crash.

``--engine atheris`` hands the same checks to atheris (coverage-guided libFuzzer), when
it is installed; the default engine is the seeded mutation loop in engine.py.
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make cgwatchdog and tests importable
    sys.path.insert(0, str(ROOT))

from tests.fuzz.engine import (  # noqa: E402
    Fuzzer,
    FuzzerFactory,
    Result,
    fuzz,
    input_rngs,
    save_crashes,
)
from tests.fuzz.fuzz_config import ConfigFuzzer  # noqa: E402
from tests.fuzz.fuzz_decoder import DecoderFuzzer  # noqa: E402

TARGETS: dict[str, FuzzerFactory] = {"decoder": DecoderFuzzer, "config": ConfigFuzzer}
# PyYAML spends one to three seconds on a config nested ~500 deep in flow style before it
# stops at the recursion limit (twice per config input: the loader, then the models):
# slow, bounded, and not ours. A decoder input has no such excuse.
SLOW_S: dict[str, float] = {"decoder": 5.0, "config": 30.0}


def summary_line(target: str, result: Result, seed: int, jobs: int) -> str:
    """The one line a run ends with."""
    rate = result.inputs / result.seconds if result.seconds > 0 else 0.0
    return (
        f"fuzz {target}: {result.inputs} inputs in {result.seconds:.1f} s "
        f"({rate:.0f} inputs/s, seed {seed}, {jobs} job{'s' if jobs != 1 else ''}): "
        f"{len(result.crashes)} distinct crashes ({result.crashing_inputs} inputs); "
        f"slowest input {result.slowest_s:.3f} s (#{result.slowest_index})"
    )


def replay(factory: FuzzerFactory, data: bytes, seed: int, index: int) -> int:
    """Check one saved input as input ``index`` of ``seed`` was checked; 1 if it crashes."""
    with tempfile.TemporaryDirectory(prefix="cgw-fuzz-") as scratch:
        fuzzer = factory(Path(scratch))
        _, check_rng = input_rngs(seed, index)
        try:
            fuzzer.check(data, check_rng)
        except Exception:
            traceback.print_exc()
            return 1
    print(f"replay: {len(data)} bytes checked without a crash")
    return 0


def run_atheris(factory: FuzzerFactory, args: argparse.Namespace, crashes: Path) -> int:
    """Hand the target's check to atheris; its seeds become the starting corpus."""
    try:
        atheris = importlib.import_module("atheris")  # optional: pip install atheris
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="cgw-fuzz-"))
    fuzzer: Fuzzer = factory(scratch)
    corpus = scratch / "corpus"
    corpus.mkdir()
    rng = random.Random(args.seed)
    for number in range(200):
        (corpus / f"seed-{number}").write_bytes(fuzzer.generate(rng))

    def one_input(data: bytes) -> None:
        fuzzer.check(data, random.Random(zlib.crc32(data)))

    atheris.instrument_all()
    crashes.mkdir(parents=True, exist_ok=True)
    atheris.Setup(
        [sys.argv[0], f"-runs={args.inputs}", f"-seed={args.seed}",
         f"-artifact_prefix={crashes}/", "-max_len=1048576", "-rss_limit_mb=4096",
         str(corpus)],
        one_input,
    )  # fmt: skip
    atheris.Fuzz()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=sorted(TARGETS), required=True)
    parser.add_argument("--inputs", type=int, default=100_000, help="how many inputs to run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--start", type=int, default=0, help="first input number")
    parser.add_argument(
        "--crashes", type=Path, help="where crashing inputs go (default: a tmp dir)"
    )
    parser.add_argument(
        "--slow", type=float, help="an input checked slower than this many seconds counts "
        "as a crash (0: never; default: decoder 5, config 30)",
    )  # fmt: skip
    parser.add_argument("--hang", type=float, default=60.0, help="interrupt an input after this")
    parser.add_argument("--replay", type=Path, help="check this one saved input")
    parser.add_argument("--index", type=int, default=0, help="with --replay: its input number")
    parser.add_argument("--engine", choices=["random", "atheris"], default="random")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    factory = TARGETS[args.target]
    # Inputs are meant to be odd: a FutureWarning about a regex in one is no finding.
    warnings.simplefilter("ignore")

    if args.replay is not None:
        return replay(factory, args.replay.read_bytes(), args.seed, args.index)
    crashes = args.crashes or Path(tempfile.mkdtemp(prefix=f"cgw-fuzz-{args.target}-crashes-"))
    if args.engine == "atheris":
        return run_atheris(factory, args, crashes)

    last = [time.monotonic()]

    def progress(result: Result) -> None:
        if args.quiet or time.monotonic() - last[0] < 10.0:
            return
        last[0] = time.monotonic()
        rate = result.inputs / result.seconds if result.seconds > 0 else 0.0
        print(
            f"  {args.target}: {result.inputs}/{args.inputs} inputs, {rate:.0f}/s, "
            f"{len(result.crashes)} distinct crashes",
            file=sys.stderr,
            flush=True,
        )

    result = fuzz(
        factory,
        inputs=args.inputs,
        seed=args.seed,
        jobs=args.jobs,
        start=args.start,
        slow_s=SLOW_S.get(args.target, 5.0) if args.slow is None else args.slow,
        hang_s=args.hang,
        progress=progress,
    )
    for crash in sorted(result.crashes.values(), key=lambda c: c.index):
        print(
            f"CRASH {crash.signature}: {crash.count} inputs, first #{crash.index}: {crash.message}"
        )
    if result.crashes:
        saved = save_crashes(result, args.target, args.seed, crashes)
        print(f"crashing inputs saved in {crashes} ({len(saved)} files .bin, with .txt)")
    print(summary_line(args.target, result, args.seed, args.jobs))
    return 1 if result.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
