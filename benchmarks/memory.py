"""Benchmark: where cgwatchdog's memory goes, after import and per miner.

    python benchmarks/memory.py --miners 10000 [--tracemalloc 2000]

In one process, against the simulator (``fleet.py``'s), the resident set (``VmRSS``) and
its peak (``VmHWM``) from ``/proc/self/status`` after each step of a steady cycle's life:
the imports a daemon needs, the poller and rule engine for the fleet, the first contact,
an hour of history (120 samples a miner, as ``fleet.py``'s ``cgwatchdog`` contender
pre-fills it), and steady cycles; each step's growth divided by the miners gives bytes a
miner. ``--tracemalloc N`` then repeats the history and a cycle over N miners with
``tracemalloc`` on and lists where the live memory was allocated, by file: what the
figures are made of.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def status_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process, MB."""
    values: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--miners", type=int, default=10_000)
    p.add_argument("--history", type=float, default=3600.0, help="seconds of history")
    p.add_argument("--cycles", type=int, default=3, help="steady cycles after the history")
    p.add_argument("--tracemalloc", type=int, default=0, metavar="N", help="miners traced")
    p.add_argument("--listen", default="127.44.0.1", help="the simulator's first address")
    args = p.parse_args(argv)
    steps: list[tuple[str, float, float]] = [("interpreter", *status_mb())]
    # What a daemon imports; fleet.py's contender adds nothing of its own that is large.
    import cgwatchdog.daemon  # noqa: F401

    steps.append(("import cgwatchdog.daemon", *status_mb()))
    from benchmarks import contenders as c
    from benchmarks.fleet import Simulator, machine

    print(f"# cgwatchdog memory\n\n{machine()}")
    print(f"\n`{' '.join(['python', 'benchmarks/memory.py', *sys.argv[1:]])}`")
    sim = Simulator(args.miners, listen=args.listen)
    traced: list[tuple[str, float]] = []
    try:
        targets = sim.targets

        async def run() -> None:
            contender = c.CgwatchdogContender(targets, 512, history_s=0)
            steps.append(("Poller + RuleEngine for the fleet", *status_mb()))
            results = await contender.poller.poll()
            steps.append(("first contact (a poll)", *status_mb()))
            contender.history_s = args.history
            contender._prefill(results)
            del results
            gc.collect()
            steps.append((f"{args.history / 60:g} min of history", *status_mb()))
            for _ in range(args.cycles):
                await contender.cycle()
            steps.append((f"{args.cycles} steady cycles", *status_mb()))
            gc.collect()
            steps.append(("after a full collection", *status_mb()))
            if args.tracemalloc:
                few = targets[: args.tracemalloc]
                tracemalloc.start()
                traced_contender = c.CgwatchdogContender(few, 512, history_s=args.history)
                await traced_contender.warm_up()
                await traced_contender.cycle()
                snapshot = tracemalloc.take_snapshot()
                tracemalloc.stop()
                for stat in snapshot.statistics("filename")[:15]:
                    traced.append((stat.traceback[0].filename, stat.size / 1e6))

        asyncio.run(run())
    finally:
        sim.stop()
    print(f"\n### {args.miners:,} miners\n")
    print("| after | RSS MB | peak RSS MB | grew MB | bytes a miner |")
    print("|---|---:|---:|---:|---:|")
    previous: float | None = None
    for name, rss, hwm in steps:
        grew = "—" if previous is None else f"{rss - previous:+.1f}"
        per = (
            "—"
            if previous is None or name.startswith(("interpreter", "import"))
            else f"{(rss - previous) * 1e6 / args.miners:,.0f}"
        )
        print(f"| {name} | {rss:.1f} | {hwm:.1f} | {grew} | {per} |")
        previous = rss
    if traced:
        print(
            f"\nLive memory by file after the history and a cycle, {args.tracemalloc:,} miners "
            "(tracemalloc, MB):\n"
        )
        print("| file | MB | bytes a miner |")
        print("|---|---:|---:|")
        root = str(Path(__file__).resolve().parent.parent)
        for filename, mb in traced:
            shown = filename.replace(root + "/", "").replace(sys.prefix + "/", "")
            print(f"| {shown} | {mb:.2f} | {mb * 1e6 / args.tracemalloc:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
