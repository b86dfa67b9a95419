"""Benchmark: the state file's cost in memory and CPU, by sqlite page-cache size.

    python benchmarks/statefile.py --miners 10000 [--cache-kib 2000,512]

For each page-cache size, in a fresh process of its own (so that one size's freed
memory does not serve the next): a ``Store`` in a temporary directory saves the rule
history of ``--miners`` miners the way the daemon does (one record a miner, an hour of
samples at 30 s with the counters kept 15 minutes, as the packaged rules keep them) and
reads it back, ``--rounds`` times. It reports the growth of the resident set
(``VmRSS``) over the rounds, and the CPU of one save and one load (median). 2,000 KiB
is sqlite's own default; ``cgwatchdog.store.CACHE_KIB`` is what the daemon uses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

T0 = 1_800_000_000.0


def one(miners: int, cache_kib: int, rounds: int) -> dict[str, float]:
    """Save and load the history of ``miners`` miners ``rounds`` times; the figures."""
    from benchmarks.memory import status_mb
    from cgwatchdog.history import MinerHistory
    from cgwatchdog.store import Store

    history = MinerHistory(3600.0, 900.0)
    for k in range(121):
        history.record(
            T0 + 30 * k, elapsed_s=86_400.0 + 30 * k, hashrate_hs=1.35e14 + 1e10 * (k % 7),
            hardware_errors=10 * k, work=7_000_000.0 * k,
        )  # fmt: skip
    record = history.to_dict()
    names = [f"sim-{i:05d}" for i in range(miners)]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "cgwatchdog.sqlite", cache_kib=cache_kib)
        before, _ = status_mb()
        saves, loads = [], []
        for _ in range(rounds):
            started = time.process_time()
            store.save_rows("rules", ((name, record) for name in names))
            saves.append(time.process_time() - started)
            started = time.process_time()
            loaded = sum(1 for _ in store.load_rows("rules"))
            loads.append(time.process_time() - started)
            assert loaded == miners
        after, _ = status_mb()
        store.close()
    return {
        "cache_kib": cache_kib, "rss_grew_mb": after - before,
        "save_cpu_s": statistics.median(saves), "load_cpu_s": statistics.median(loads),
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--miners", type=int, default=10_000)
    p.add_argument("--cache-kib", default="2000,512", help="page-cache sizes, KiB")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)  # a child's size
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.miners, args.one, args.rounds)))
        return 0
    rows = []
    for size in (int(part) for part in args.cache_kib.split(",")):
        child = [sys.executable, __file__, "--miners", str(args.miners), "--rounds",
                 str(args.rounds), "--one", str(size)]  # fmt: skip
        done = subprocess.run(child, capture_output=True, text=True, check=True, timeout=600)
        rows.append(json.loads(done.stdout))
    print("# cgwatchdog state file\n")
    print(f"`{' '.join(['python', 'benchmarks/statefile.py', *sys.argv[1:]])}`\n")
    print(f"### {args.miners:,} miners' rule history, saved and loaded {args.rounds} times\n")
    print("| page cache KiB | RSS grew MB | a save, CPU s | a load, CPU s |")
    print("|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['cache_kib']:,} | {row['rss_grew_mb']:.1f} | {row['save_cpu_s']:.3f} "
            f"| {row['load_cpu_s']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
