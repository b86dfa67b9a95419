"""Benchmark: the running daemon measured from outside, cycles and /metrics scrapes.

    python benchmarks/daemon.py --miners 10000 [--python PYTHON]

Starts the simulator (``fleet.py``'s), gives the daemon an hour of history the way a
restart does (the rule engine's state, saved in the state file before the start: 120
samples a miner from one poll of the fleet, as ``fleet.py``'s contender pre-fills it),
then runs ``PYTHON -m cgwatchdog run -c CFG`` (the packaged rules, no receivers) and
reads, from ``/proc/PID``, its CPU (user+system) over each cycle (a cycle ends with the
daemon's debug line ``cycle due at ... took ...``) and its resident set (``VmRSS``) and
peak (``VmHWM``). Between cycles it scrapes ``/metrics`` ``--scrapes`` times, in gzip as
Prometheus asks, and takes the CPU and memory each scrape cost (``bytes`` are those on
the wire). The bare ``asyncio.Protocol`` floor runs its cycles in a process of its own
over the same fleet (``fleet.py``'s ``floor-protocol``, on the event loop the daemon
used) before the daemon and again after it, for the ratio.

``PYTHON`` decides the event loop: ``cgwatchdog run`` takes uvloop where it is installed.

``--tracemalloc`` runs the daemon under ``tracemalloc`` instead (``benchmarks/traced.py``)
and, after the last cycle, lists what it holds by the file that allocated it: where the
memory goes. Tracing slows it several times over, so that run's CPU and RSS mean nothing.

``--allocator`` runs it through ``benchmarks/traced.py`` untraced and, after the last
cycle, splits its resident set by kind of mapping (the C heap, anonymous mappings, files)
and says how much of it is Python's small-object allocator: its arenas, the live objects
in them, and the room left empty inside them, which the process cannot give back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import contenders as c
from benchmarks.fleet import CLK_TCK, Simulator, _free_port, machine, run_contender

CYCLE_LINE = re.compile(r"cycle due at [\d.]+ began ([\d.]+) s late and took ([\d.]+) s")


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, MB."""
    values = proc_status_mb(pid)
    return values["VmRSS"], values["VmHWM"]


def proc_status_mb(pid: int) -> dict[str, float]:
    """The memory lines of ``/proc/PID/status`` (VmRSS, VmHWM, RssAnon, RssFile), MB:
    RssFile is the pages of the interpreter and its shared libraries it has touched."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def seed_history(targets: Sequence[c.Target], state_file: Path, history_s: float) -> int:
    """An hour of history for every miner, saved as the daemon saves it (rule state)."""
    from cgwatchdog.store import Store
    from cgwatchdog.watchdog import save_rules

    contender = c.CgwatchdogContender(targets, 512, history_s=history_s)
    asyncio.run(contender.warm_up())
    store = Store(state_file)
    try:
        save_rules(store, contender.engine, time.time())
    finally:
        store.close()
    return len(contender.engine.history)


def measure(args: argparse.Namespace, sim: Simulator) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        state = root / "state"
        state.mkdir()
        seeded = seed_history(sim.targets, state / "cgwatchdog.sqlite", args.history)
        http_port = _free_port()
        miners = "".join(
            f"  - {{name: {t.name}, host: {t.host}, port: {t.port}}}\n" for t in sim.targets
        )
        (root / "config.yaml").write_text(
            f"poll: {{interval: {args.interval}s, timeout: {min(5.0, args.interval / 2)}s}}\n"
            f"state_dir: {state}\n"
            f'http: {{listen: "127.0.0.1:{http_port}"}}\n'
            f"miners:\n{miners}"
        )
        traced = root / "traced.json"
        argv = [args.python, "-m", "cgwatchdog", "run", "-c", str(root / "config.yaml")]
        if args.tracemalloc or args.allocator:
            here = Path(__file__).resolve().parent
            tracing = ["-X", "tracemalloc=1"] if args.tracemalloc else []
            argv[1:3] = [*tracing, str(here / "traced.py"), str(traced)]
        argv += ["--log-level", "debug"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        daemon = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env,
        )  # fmt: skip
        cycles: list[dict[str, float]] = []
        scrapes: list[dict[str, float]] = []
        ended = threading.Event()
        lines: list[str] = []
        live: dict[str, Any] | None = None

        def read() -> None:
            assert daemon.stderr is not None
            for raw in daemon.stderr:
                line = raw.decode(errors="replace")
                lines.append(line)
                found = CYCLE_LINE.search(line)
                if found:
                    memory = proc_status_mb(daemon.pid)
                    cycles.append(
                        {"at_cpu_s": proc_cpu_s(daemon.pid), "took_s": float(found[2]),
                         "rss_mb": memory["VmRSS"], "hwm_mb": memory["VmHWM"],
                         "anon_mb": memory["RssAnon"], "file_mb": memory["RssFile"]}
                    )  # fmt: skip
            ended.set()

        threading.Thread(target=read, daemon=True).start()
        started = time.monotonic()
        try:
            scraped = 0
            while len(cycles) < args.cycles + 1 and time.monotonic() - started < args.timeout:
                if daemon.poll() is not None:
                    break
                if len(cycles) >= 2 and scraped < len(cycles) - 1 and args.scrapes:
                    # Between cycles: a second after one ended, well before the next.
                    time.sleep(1.0)
                    for _ in range(args.scrapes):
                        before, (rss0, hwm0) = proc_cpu_s(daemon.pid), proc_mem_mb(daemon.pid)
                        wall0 = time.perf_counter()
                        ask = urllib.request.Request(
                            f"http://127.0.0.1:{http_port}/metrics",
                            headers={"Accept-Encoding": "gzip"},  # as Prometheus asks
                        )
                        with urllib.request.urlopen(ask, timeout=30) as reply:
                            size = len(reply.read())
                        wall = time.perf_counter() - wall0
                        time.sleep(0.2)  # let the CPU counters settle
                        rss1, hwm1 = proc_mem_mb(daemon.pid)
                        scrapes.append(
                            {"cpu_s": proc_cpu_s(daemon.pid) - before, "wall_s": wall,
                             "bytes": size, "rss_before_mb": rss0, "rss_after_mb": rss1,
                             "hwm_before_mb": hwm0, "hwm_after_mb": hwm1}
                        )  # fmt: skip
                    scraped = len(cycles) - 1
                time.sleep(0.05)
            if (args.tracemalloc or args.allocator) and daemon.poll() is None:
                daemon.send_signal(signal.SIGUSR1)
                deadline = time.monotonic() + 120
                while not traced.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
                live = json.loads(traced.read_text()) if traced.exists() else None
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            ended.wait(10)
    # CPU of each cycle: from one cycle's end to the next (the scrapes' own CPU out).
    per_cycle: list[float] = []
    scrape_cpu = [s["cpu_s"] for s in scrapes]
    for index in range(1, len(cycles)):
        spent = cycles[index]["at_cpu_s"] - cycles[index - 1]["at_cpu_s"]
        if args.scrapes and index - 1 < len(cycles) - 1:
            spent -= sum(scrape_cpu[(index - 1) * args.scrapes : index * args.scrapes])
        per_cycle.append(spent)
    return {
        "seeded_miners": seeded,
        "cycles": cycles,
        "cycle_cpu_s": per_cycle,
        "scrapes": scrapes,
        "log_tail": "".join(lines[-5:]) if len(cycles) < 2 else "",
        "traced": live,
    }


def print_allocator(found: dict[str, Any]) -> None:
    """The resident set after the last cycle by kind of mapping, and pymalloc's share."""
    mb = 1024 * 1024
    kinds, small = found["mappings"], found["pymalloc"]
    print(
        "\nThe resident set after the last cycle (`/proc/PID/smaps`; Python's small-object "
        "allocator from `sys._debugmallocstats`):\n"
    )
    print("| part | MB |\n|---|---:|")
    print(f"| the C heap (`[heap]`: large blocks, C libraries) | {kinds['heap'] / mb:.1f} |")
    heap = found.get("c_heap") or {}
    if "free" in heap:
        for key, what in (
            ("in_use", "malloc's blocks in use (`mallinfo2`: all arenas)"),
            ("free", "free inside the heap, kept unless trimmed"),
        ):
            print(f"| ... {what} | {heap[key] / mb:.1f} |")
    print(f"| anonymous mappings | {kinds['anonymous'] / mb:.1f} |")
    if "arenas_bytes" in small:
        print(f"| of them, the small-object arenas | {small['arenas_bytes'] / mb:.1f} |")
        for key, what in (
            ("live_blocks_bytes", "live objects"),
            ("empty_pools_bytes", "pools left empty inside arenas still in use"),
            ("free_blocks_bytes", "free blocks in pools in use"),
        ):
            if key in small:
                print(f"| ... {what} | {small[key] / mb:.1f} |")
    print(f"| files (the interpreter's and libraries' pages) | {kinds['files'] / mb:.1f} |")
    print(f"| other (stack, vdso) | {kinds['other'] / mb:.1f} |")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--miners", type=int, default=10_000)
    p.add_argument("--interval", type=float, default=15.0, help="poll interval (s)")
    p.add_argument("--cycles", type=int, default=5, help="cycles measured after the first")
    p.add_argument("--scrapes", type=int, default=2, help="/metrics scrapes between cycles")
    p.add_argument("--history", type=float, default=3600.0, help="seconds of history seeded")
    p.add_argument("--python", default=sys.executable, help="the interpreter of the daemon")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after (s)")
    p.add_argument("--listen", default="127.46.0.1", help="the simulator's first address")
    p.add_argument("--json", help="also write every figure to this file")
    p.add_argument(
        "--tracemalloc", action="store_true", help="list the live memory by file (slow)"
    )
    p.add_argument(
        "--allocator", action="store_true", help="split the resident set after the last cycle"
    )
    args = p.parse_args(argv)
    loop = subprocess.run(
        [args.python, "-c", "import importlib.util as u; print(bool(u.find_spec('uvloop')))"],
        capture_output=True, text=True, check=False,
    ).stdout.strip() == "True"  # fmt: skip
    print(f"# cgwatchdog daemon, measured from outside\n\n{machine()}")
    print(f"\n`{' '.join(['python', 'benchmarks/daemon.py', *sys.argv[1:]])}`")
    print(f"\nThe daemon's event loop: {'uvloop' if loop else 'the default asyncio loop'}.")
    sim = Simulator(args.miners, listen=args.listen)
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(sim.targets, f)
        floor_args = argparse.Namespace(cycles=args.cycles, concurrency=512, sample=500, history=0)
        floor_name = "floor-protocol-uvloop" if loop else "floor-protocol"
        # The floor runs before and after the daemon: between runs of this script it has
        # moved by 15-30% on this box, so one side alone may not be the daemon's weather.
        floor_before = run_contender(floor_name, sim, Path(f.name), floor_args)
        result = measure(args, sim)
        floor = run_contender(floor_name, sim, Path(f.name), floor_args)
        os.unlink(f.name)
    finally:
        sim.stop()
    result["floor"] = floor
    result["floor_before"] = floor_before
    cycles, per_cycle = result["cycles"], result["cycle_cpu_s"]
    print(
        f"\n### {args.miners:,} miners, an hour of history ({result['seeded_miners']:,} seeded)\n"
    )
    if not per_cycle:
        print(f"no cycles measured; the daemon said:\n{result['log_tail']}")
        return 1
    print(
        "| cycle | CPU s | took s (wall) | RSS MB after | of it anonymous / files MB "
        "| peak RSS MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for index, cpu in enumerate(per_cycle, start=2):
        row = cycles[index - 1]
        print(
            f"| {index} | {cpu:.2f} | {row['took_s']:.2f} | {row['rss_mb']:.0f} "
            f"| {row['anon_mb']:.0f} / {row['file_mb']:.0f} | {row['hwm_mb']:.0f} |"
        )
    median = statistics.median(per_cycle)
    print(f"\nMedian CPU a cycle {median:.2f} s ({median * 1e6 / args.miners:.0f} µs a miner).")
    if "error" not in floor and "error" not in floor_before:
        both = (floor_before["cpu_s"] + floor["cpu_s"]) / 2
        print(
            f"The bare Protocol floor ({floor_name}), same fleet, before and after the daemon: "
            f"{floor_before['cpu_s']:.2f} and {floor['cpu_s']:.2f} s CPU a cycle, "
            f"{floor_before['wall_s']:.2f} and {floor['wall_s']:.2f} s wall. The daemon's cycle "
            f"is {median / both:.2f}x their mean CPU ({median / floor_before['cpu_s']:.2f}x "
            f"and {median / floor['cpu_s']:.2f}x each)."
        )
    if result["scrapes"]:
        print("\n| /metrics scrape | CPU s | wall s | bytes | RSS MB before → after | peak MB |")
        print("|---:|---:|---:|---:|---|---:|")
        for index, s in enumerate(result["scrapes"], start=1):
            print(
                f"| {index} | {s['cpu_s']:.2f} | {s['wall_s']:.2f} | {s['bytes']:,} "
                f"| {s['rss_before_mb']:.0f} → {s['rss_after_mb']:.0f} | {s['hwm_after_mb']:.0f} |"
            )
    if result["traced"] is not None and "mappings" in result["traced"]:
        print_allocator(result["traced"])
    elif result["traced"] is not None:
        traced = result["traced"]
        print(
            f"\nLive memory after the last cycle (tracemalloc, this run's CPU and RSS mean "
            f"nothing): {traced['traced_bytes'] / 1e6:.1f} MB traced, "
            f"{traced['traced_bytes'] / args.miners:,.0f} bytes a miner.\n"
        )
        print("| allocated in | MB | bytes a miner | objects |")
        print("|---|---:|---:|---:|")
        for row in traced["by_file"][:25]:
            print(
                f"| `{row['where']}` | {row['bytes'] / 1e6:.1f} "
                f"| {row['bytes'] / args.miners:,.0f} | {row['count']:,} |"
            )
    elif args.tracemalloc or args.allocator:
        print("\nno memory figures: the daemon did not write them")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
