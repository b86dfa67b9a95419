"""Benchmark: one-shot commands over a simulated fleet, each a whole process.

    python benchmarks/oneshot.py --miners 10000

The simulator (``fleet.py``'s, over several processes for a large fleet) serves the
fleet; every measurement below is a fresh process, its CPU (user+system) and peak RSS
taken by ``os.wait4``:

``check``          ``cgwatchdog check -c CFG``: the config loaded and validated
``poll --json``    ``cgwatchdog poll -c CFG --json``, with the moment its cycle starts
                   and ends marked from inside (``Watchdog.cycle`` wrapped by this
                   script: the product runs unchanged): start-up (imports, config, the
                   Watchdog), the poll itself, the JSON, and the whole command
``floor``          a bare ``asyncio.Protocol`` client over the same fleet, once (as
                   fleet.py's ``floor-protocol``): its cycle and the whole script
``pyasic``         pyasic 0.79's ``multicommand("summary", "devs", "pools")`` over the
                   same fleet, once: its cycle and the whole script

The peers' scripts import nothing of cgwatchdog: their whole-process figures are theirs.

Two configurations of the same miners: one ``- {name, host, port}`` entry per miner, and
``hosts:`` ranges (one per 254 addresses). The rules are the packaged ones (none
configured). ``--repeat`` runs everything that many times, alternating, and gives the
median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import contenders as c
from benchmarks.fleet import Simulator, machine

REPO = Path(__file__).resolve().parent.parent

POLL_HARNESS = textwrap.dedent(
    """
    import contextlib, json, os, resource, sys
    from cgwatchdog import watchdog

    def mark():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}

    marks = {}
    original = watchdog.Watchdog.cycle

    async def cycle(self, **options):
        marks["startup"] = mark()
        report = await original(self, **options)
        marks["polled"] = mark()
        return report

    watchdog.Watchdog.cycle = cycle
    from cgwatchdog.cli import main

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        code = main(["poll", "-c", sys.argv[1], "--json"])
    marks["done"] = mark()
    marks["exit"] = code
    os.write(3, json.dumps(marks).encode())
    """
)

# The peers' scripts import nothing of cgwatchdog (their whole-process cost is theirs):
# the targets from a JSON file, then one cycle with 512 worker coroutines as in fleet.py.
PEER_PRELUDE = textwrap.dedent(
    """
    import asyncio, json, os, resource, sys

    def cpu():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    targets = json.loads(open(sys.argv[1]).read())
    answered = 0

    async def share(items, job):
        work = iter(items)

        async def worker():
            for item in work:
                await job(item)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(512, len(items))):
                group.create_task(worker())
    """
)
FLOOR_SCRIPT = PEER_PRELUDE + textwrap.dedent(
    """
    REQUEST = b'{"command":"summary+devs+pools"}'

    class Collect(asyncio.Protocol):
        def __init__(self, done):
            self.done, self.chunks = done, []

        def connection_made(self, transport):
            transport.write(REQUEST)

        def data_received(self, data):
            self.chunks.append(data)

        def connection_lost(self, exc):
            if not self.done.done():
                self.done.set_result(b"".join(self.chunks))

    async def one(target):
        global answered
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        try:
            await loop.create_connection(lambda: Collect(done), target[1], target[2])
        except OSError:
            return
        if await done:
            answered += 1

    before = cpu()
    asyncio.run(share(targets, one))
    os.write(3, json.dumps({"cycle_cpu_s": cpu() - before, "answered": answered,
                            "polled": len(targets)}).encode())
    """
)
PYASIC_SCRIPT = PEER_PRELUDE + textwrap.dedent(
    """
    import logging, warnings
    from pyasic.rpc.cgminer import CGMinerRPCAPI

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    apis = [CGMinerRPCAPI(t[1], port=t[2]) for t in targets]

    async def one(api):
        global answered
        try:
            reply = await api.multicommand("summary", "devs", "pools")
        except Exception:
            return
        if reply.get("summary"):
            answered += 1

    before = cpu()
    asyncio.run(share(apis, one))
    os.write(3, json.dumps({"cycle_cpu_s": cpu() - before, "answered": answered,
                            "polled": len(targets)}).encode())
    """
)


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Run a whole process; its CPU and peak RSS (wait4)."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    stderr = proc.stderr.read() if proc.stderr is not None else b""
    _, status, usage = os.wait4(proc.pid, 0)
    out: dict[str, Any] = {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "exit": os.waitstatus_to_exitcode(status),
    }
    if out["exit"] not in (0, 1):
        out["error"] = stderr.decode(errors="replace")[-800:]
    return out


def configs(root: Path, targets: Sequence[c.Target]) -> dict[str, Path]:
    """The two configurations of the fleet: one entry per miner, and hosts: ranges."""
    individual = root / "each.yaml"
    individual.write_text(
        "miners:\n"
        + "".join(f"  - {{name: {t.name}, host: {t.host}, port: {t.port}}}\n" for t in targets)
    )
    rows: dict[str, list[int]] = {}
    for t in targets:
        head, _, last = t.host.rpartition(".")
        rows.setdefault(head, []).append(int(last))
    ranges = root / "ranges.yaml"
    items = []
    for head, lasts in rows.items():
        lasts.sort()
        start = previous = lasts[0]
        for last in [*lasts[1:], None]:
            if last is not None and last == previous + 1:
                previous = last
                continue
            items.append(f"{head}.{start}-{previous}")
            if last is not None:
                start = previous = last
    ranges.write_text("miners:\n  - hosts:\n" + "".join(f"      - {i}\n" for i in items))
    return {"entries": individual, "ranges": ranges}


def measure(args: argparse.Namespace, sim: Simulator) -> dict[str, Any]:
    cgwatchdog = [sys.executable, "-m", "cgwatchdog"]
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = configs(root, sim.targets)
        targets_file = root / "targets.json"
        targets_file.write_text(json.dumps(sim.targets))
        # The child writes its marks on fd 3: a pipe, dup'ed there by this prelude.
        prelude = "import os, sys; os.dup2(int(os.environ['CGW_FD']), 3)\n"
        for _ in range(args.repeat):
            for form, path in files.items():
                results.setdefault(f"check ({form})", []).append(
                    run([*cgwatchdog, "check", "-c", str(path)])
                )
                results.setdefault(f"poll --json ({form})", []).append(
                    _run_fd3(prelude + POLL_HARNESS, [str(path)])
                )
            results.setdefault("floor-protocol", []).append(
                _run_fd3(prelude + FLOOR_SCRIPT, [str(targets_file)])
            )
            if _importable("pyasic"):
                results.setdefault("pyasic", []).append(
                    _run_fd3(prelude + PYASIC_SCRIPT, [str(targets_file)])
                )
    return {name: _median(runs) for name, runs in results.items()}


def _run_fd3(code: str, extra: Sequence[str]) -> dict[str, Any]:
    read_end, write_end = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(REPO), "CGW_FD": str(write_end)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(write_end,),
        env=env,
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        written = reader.read()
    stderr = proc.stderr.read() if proc.stderr is not None else b""
    _, status, usage = os.wait4(proc.pid, 0)
    out: dict[str, Any] = {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "exit": os.waitstatus_to_exitcode(status),
    }
    if written:
        out.update(json.loads(written))
    else:
        out["error"] = stderr.decode(errors="replace")[-800:]
    return out


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs (nested marks too)."""
    ok = [r for r in runs if "error" not in r] or runs
    out: dict[str, Any] = {"runs": len(ok)}
    for key, value in ok[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in ok)
        elif isinstance(value, dict):
            out[key] = {
                k: statistics.median(r[key][k] for r in ok)
                for k, v in value.items()
                if isinstance(v, int | float)
            }
        else:
            out[key] = value
    return out


def report(miners: int, results: dict[str, Any]) -> list[str]:
    lines = [
        f"\n### {miners:,} miners\n",
        "| process | CPU s | peak RSS MB | notes |",
        "|---|---:|---:|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:200]!r} | | |")
            continue
        notes = ""
        if name.startswith("poll"):
            startup, polled, done = r["startup"], r["polled"], r["done"]
            notes = (
                f"start-up {startup['cpu_s']:.2f} s CPU, {startup['rss_mb']:.0f} MB; "
                f"the poll {polled['cpu_s'] - startup['cpu_s']:.2f} s CPU; "
                f"the JSON {done['cpu_s'] - polled['cpu_s']:.2f} s CPU; exit {r['exit']}"
            )
        elif "cycle_cpu_s" in r:
            notes = (
                f"its cycle {r['cycle_cpu_s']:.2f} s CPU; answered {r['answered']:.0f}/"
                f"{r['polled']:.0f}"
            )
        lines.append(f"| {name} | {r['cpu_s']:.2f} | {r['rss_mb']:.0f} | {notes} |")
    floor = results.get("floor-protocol")
    pyasic = results.get("pyasic")
    for form in ("entries", "ranges"):
        poll = results.get(f"poll --json ({form})")
        if poll is None or "error" in poll or floor is None or "error" in floor:
            continue
        itself = poll["polled"]["cpu_s"] - poll["startup"]["cpu_s"]
        line = (
            f"\n- {form}: the poll itself ÷ the floor's cycle: {itself / floor['cycle_cpu_s']:.2f}x"
        )
        if pyasic is not None and "error" not in pyasic:
            line += f"; the whole command ÷ pyasic's whole script: {poll['cpu_s'] / pyasic['cpu_s']:.2f}x"
        lines.append(line)
    return lines


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--miners", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=3, help="runs of everything (median)")
    p.add_argument("--listen", default="127.40.0.1", help="the simulator's first address")
    p.add_argument("--per-process", type=int, default=10_000)
    p.add_argument("--json", help="also write every figure to this file")
    args = p.parse_args(argv)
    print(f"# cgwatchdog one-shot commands\n\n{machine()}")
    print(f"\n`{' '.join(['python', 'benchmarks/oneshot.py', *sys.argv[1:]])}`")
    sim = Simulator(args.miners, listen=args.listen, per_process=args.per_process)
    try:
        results = measure(args, sim)
    finally:
        sim.stop()
    for line in report(args.miners, results):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
