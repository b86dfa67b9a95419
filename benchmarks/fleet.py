"""Benchmark: one poll cycle over a simulated fleet, cgwatchdog beside its peers.

    python benchmarks/fleet.py --miners 100,1000,10000

For each fleet size it starts the simulator (``cgwatchdog.simulator``, one loopback
address per miner, port 4028) in a process of its own, then runs each contender in a
child process of its own against that same simulator, one after another: a warm-up
cycle, then ``--cycles`` measured cycles. The table gives the median cycle's wall time,
miners per second, the contender's own CPU seconds (user+system, ``getrusage`` in the
child around each cycle), its peak RSS (``os.wait4`` of the child), and ratios to
cgwatchdog. ``--latency N`` also measures alert latency: the time from a simulated
failure to the webhook receiving the alert, against the rule's ``for`` plus one poll
interval. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import contenders as c

ALL = (
    "cgwatchdog",
    "cgwatchdog-uvloop",
    "sequential",
    "pyasic",
    "floor-streams",
    "floor-protocol",
    "floor-protocol-uvloop",
)
CLK_TCK = os.sysconf("SC_CLK_TCK")
SCRIPT = Path(__file__).resolve()


# -- the simulator process -------------------------------------------------------------


def serve_main(args: argparse.Namespace) -> None:
    """``--serve N``: run the fleet, print its targets and READY, serve until killed."""
    from cgwatchdog.simulator import Fleet, Scenario, ensure_file_limit, serve

    plan: dict[str | Scenario, int] = {}
    for item in filter(None, args.plan.split(",")):
        name, _, count = item.partition("=")
        plan[name] = int(count or 1)
    options: dict[str, float] = {"fail_after_s": args.fail_after}
    if args.reply_delay > 0 and not plan:
        # every miner answers after reply_delay seconds, as over a LAN from a busy miner
        plan = {"slow": args.serve}
        options = {"fail_after_s": 0.0, "delay_s": args.reply_delay}
    ensure_file_limit(args.serve)
    fleet = Fleet.build(
        args.serve, plan if plan else "healthy", listen=args.listen, scenario_options=options
    )
    born = fleet.clock()

    async def run() -> None:
        async with serve(fleet):
            for m in fleet:
                print(f"{m.name} {m.host} {m.port} {m.miner.flavour.name}")
            print(f"READY {born!r}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


class Simulator:
    """The simulator child: its targets, its birth time, its CPU seconds so far."""

    def __init__(
        self,
        miners: int,
        plan: str = "",
        fail_after_s: float = 60.0,
        listen: str = "127.0.0.1",
        reply_delay_s: float = 0.0,
    ) -> None:
        argv = [sys.executable, str(SCRIPT), "--serve", str(miners), "--plan", plan]
        argv += ["--fail-after", str(fail_after_s), "--listen", listen]
        argv += ["--reply-delay", str(reply_delay_s)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.targets: list[c.Target] = []
        self.flavours: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if parts and parts[0] == "READY":
                self.born = float(parts[1])
                break
            self.targets.append(c.Target(parts[0], parts[1], int(parts[2])))
            self.flavours.append(parts[3])
        else:
            raise SystemExit(f"the simulator exited ({self.proc.wait()}) before it was ready")

    def cpu_s(self) -> float:
        """user+system CPU seconds of the simulator process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


# -- a contender process -----------------------------------------------------------------


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _event_loop(name: str) -> None:
    if name.endswith("-uvloop"):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def child_main(args: argparse.Namespace) -> None:
    """``--child NAME``: run one contender and print its figures as JSON."""
    _event_loop(args.child)
    targets = [c.Target(*t) for t in json.loads(Path(args.targets).read_text())]

    async def run() -> dict[str, Any]:
        contender = c.make(
            args.child, targets, args.concurrency, sample=args.sample, history_s=args.history
        )
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        warm = await contender.warm_up()
        warm_up = {"wall_s": time.perf_counter() - wall0, "cpu_s": _cpu_s() - cpu0}
        cycles = []
        for _ in range(args.cycles):
            if args.lockstep:  # a shard among others: every shard starts each cycle together
                print("READY", flush=True)
                sys.stdin.readline()
            cpu0, wall0 = _cpu_s(), time.perf_counter()
            outcome = await contender.cycle()
            cycles.append(
                {
                    "wall_s": time.perf_counter() - wall0,
                    "cpu_s": _cpu_s() - cpu0,
                    "answered": outcome.answered,
                    "failed": outcome.failed,
                    "polled": outcome.polled,
                    "reply_bytes": outcome.reply_bytes,
                }
            )
        extra: dict[str, Any] = {}
        if isinstance(contender, c.SequentialContender):
            extra["scale"] = contender.scale
        if isinstance(contender, c.PyasicContender):
            extra["fallbacks_per_cycle"] = contender.fallbacks / (args.cycles + 1)
        return {
            "warm_up": warm_up,
            "warm_up_answered": warm.answered,
            "cycles": cycles,
            "notes": contender.notes,
            **extra,
        }

    print(json.dumps(asyncio.run(run())))


def _shards(name: str) -> tuple[str, int] | None:
    """``cgwatchdog-shards-2[-uvloop]`` -> ("cgwatchdog[-uvloop]", 2); else None."""
    base, uvloop = name.removesuffix("-uvloop"), name.endswith("-uvloop")
    head, sep, count = base.rpartition("-shards-")
    if not sep or head != "cgwatchdog" or not count.isdigit() or int(count) < 1:
        return None
    return head + ("-uvloop" if uvloop else ""), int(count)


def run_sharded(
    name: str, sim: Simulator, targets: Sequence[c.Target], args: argparse.Namespace
) -> dict[str, Any]:
    """N cgwatchdog processes, one per shard (``shard.shard_of``), polling at once.

    Each cycle starts in every shard together (the children wait for a line on stdin);
    the fleet's cycle lasts until the slowest shard is done, as for N daemons started
    together. CPU is the sum over the shards, RSS the largest one and the sum.
    """
    from cgwatchdog.shard import shard_of

    parsed = _shards(name)
    assert parsed is not None
    child, count = parsed
    files: list[Path] = []
    procs: list[subprocess.Popen[str]] = []
    sim_cpu0 = sim.cpu_s()
    try:
        for index in range(1, count + 1):
            mine = [t for t in targets if shard_of(t.name, count) == index]
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump(mine, f)
            files.append(Path(f.name))
            argv = [sys.executable, str(SCRIPT), "--child", child, "--targets", f.name]
            argv += ["--cycles", str(args.cycles), "--concurrency", str(args.concurrency)]
            argv += ["--sample", str(args.sample), "--history", str(args.history), "--lockstep"]
            procs.append(
                subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
        walls: list[float] = []
        started: float | None = None
        lines: list[str] = []
        # Before each cycle every child says READY and waits for GO; after the last one
        # it prints its JSON. A cycle lasts from GO until the slowest shard answers.
        for cycle in range(args.cycles + 1):
            lines = [proc.stdout.readline() for proc in procs if proc.stdout is not None]
            if started is not None:
                walls.append(time.perf_counter() - started)
            if cycle == args.cycles:
                break
            if any(line.strip() != "READY" for line in lines):
                raise RuntimeError(f"a shard child said {lines!r}")
            started = time.perf_counter()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("GO\n")
                proc.stdin.flush()
        results: list[dict[str, Any]] = []
        peak = total_rss = 0.0
        for proc, line in zip(procs, lines, strict=True):
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"a shard child exited {os.waitstatus_to_exitcode(status)}")
            results.append(json.loads(line))
            peak = max(peak, usage.ru_maxrss / 1024)
            total_rss += usage.ru_maxrss / 1024
    except (RuntimeError, ValueError) as exc:
        for proc in procs:
            proc.kill()
            proc.wait()
        return {"name": name, "error": str(exc)}
    finally:
        for path in files:
            path.unlink(missing_ok=True)
    sim_cpu = sim.cpu_s() - sim_cpu0
    cycles = [r["cycles"] for r in results]
    cpu = sum(statistics.median(cy["cpu_s"] for cy in shard) for shard in cycles)
    wall = statistics.median(walls)
    return {
        "name": name,
        "wall_s": wall,
        "cpu_s": cpu,
        "miners_per_s": len(targets) / wall if wall else 0.0,
        "rss_mb": peak,
        "notes": [
            f"{count} processes; shard sizes "
            + ", ".join(str(shard[-1]["polled"]) for shard in cycles)
            + f"; RSS {peak:.0f} MB the largest, {total_rss:.0f} MB together; CPU summed"
        ],
        "sim_cpu_s": sim_cpu / (args.cycles + 1),
        "answered": sum(shard[-1]["answered"] for shard in cycles),
        "polled": sum(shard[-1]["polled"] for shard in cycles),
        "reply_mb": sum(shard[-1]["reply_bytes"] for shard in cycles) / 1e6,
        "cycles": [],
    }


def run_contender(
    name: str, sim: Simulator, targets_file: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Run one contender in a child; its JSON plus CPU/RSS from ``os.wait4``."""
    if _shards(name) is not None:
        return run_sharded(name, sim, sim.targets, args)
    argv = [sys.executable, str(SCRIPT), "--child", name, "--targets", str(targets_file)]
    argv += ["--cycles", str(args.cycles), "--concurrency", str(args.concurrency)]
    argv += ["--sample", str(args.sample), "--history", str(args.history)]
    sim_cpu0 = sim.cpu_s()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(argv, stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    sim_cpu = sim.cpu_s() - sim_cpu0
    if proc.returncode != 0:
        return {"name": name, "error": f"exit {proc.returncode}"}
    result: dict[str, Any] = json.loads(text)
    cycles = result["cycles"]
    scale = float(result.get("scale", 1.0))
    wall = statistics.median(cy["wall_s"] for cy in cycles) * scale
    cpu = statistics.median(cy["cpu_s"] for cy in cycles) * scale
    result.update(
        name=name,
        wall_s=wall,
        cpu_s=cpu,
        miners_per_s=len(sim.targets) / wall if wall else 0.0,
        rss_mb=usage.ru_maxrss / 1024,
        process_cpu_s=usage.ru_utime + usage.ru_stime,
        sim_cpu_s=sim_cpu / (len(cycles) + 1) * scale,
        answered=cycles[-1]["answered"],
        polled=cycles[-1]["polled"],
        reply_mb=cycles[-1]["reply_bytes"] / 1e6,
    )
    return result


# -- alert latency -----------------------------------------------------------------------


LATENCY_RULES = """\
rules:
  - name: DeviceDead
    type: device_status
    status: [Dead, Sick, NoStart]
    for: {dead_for}s
    severity: critical
  - name: MinerUnreachable
    type: unreachable
    for: {unreachable_for}s
    severity: critical
"""


def latency_child_main(args: argparse.Namespace) -> None:
    """``--latency-child``: a Watchdog + outbox loop and a webhook receiver (JSON out)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cgwatchdog.config.loader import load_config
    from cgwatchdog.notify import Outbox, build_integration
    from cgwatchdog.store import Store
    from cgwatchdog.watchdog import Watchdog

    spec = json.loads(Path(args.targets).read_text())
    received: list[tuple[float, str, str]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            at = time.time()
            for alert in json.loads(body).get("alerts", []):
                if alert.get("status") == "firing":
                    labels = alert.get("labels", {})
                    received.append((at, labels.get("alertname", ""), labels.get("miner", "")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    interval = args.interval
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "rules.yaml").write_text(
            LATENCY_RULES.format(dead_for=args.dead_for, unreachable_for=args.unreachable_for)
        )
        miners = "\n".join(
            f"  - {{name: {name}, host: {host}, port: {port}}}"
            for name, host, port in spec["targets"]
        )
        (root / "config.yaml").write_text(
            f"poll: {{interval: {interval}s, timeout: {interval / 2}s, connect_timeout: {interval / 4}s, concurrency: {args.concurrency}}}\n"
            f"state_dir: {root}\n"
            f"miners:\n{miners}\n"
            "rule_files: [rules.yaml]\n"
            "receivers:\n"
            f"  - {{name: hook, webhook: {{url: 'http://127.0.0.1:{server.server_port}/'}}}}\n"
            "route: {receiver: hook, group_by: [alertname, miner], group_wait: 0s}\n"
        )
        config = load_config(root / "config.yaml")
        store = Store(":memory:")
        outbox = Outbox(
            store,
            {r.name: build_integration(r) for r in config.receivers},
            clock=time.time,
        )
        watchdog = Watchdog(config, store=store, outbox=outbox)
        failure_at = spec["born"] + spec["fail_after_s"]
        deadline = failure_at + max(args.dead_for, args.unreachable_for) + 10 * interval + 30
        cycles: list[float] = []

        async def loop() -> None:
            next_at = time.monotonic()
            while time.time() < deadline and len({name for _, name, _ in received}) < 2:
                started = time.perf_counter()
                await watchdog.cycle()
                await asyncio.to_thread(outbox.deliver_due, time.time())
                cycles.append(time.perf_counter() - started)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        asyncio.run(loop())
        outbox.close()
    server.shutdown()
    first: dict[str, tuple[float, str]] = {}
    for at, name, miner in received:
        first.setdefault(name, (at - failure_at, miner))
    print(
        json.dumps(
            {
                "latency_s": {name: lat for name, (lat, _) in first.items()},
                "miner": {name: miner for name, (_, miner) in first.items()},
                "bound_s": {
                    "DeviceDead": args.dead_for + interval + 1,
                    "MinerUnreachable": args.unreachable_for + interval + 1,
                },
                "cycle_s_median": statistics.median(cycles) if cycles else None,
                "cycles": len(cycles),
            }
        )
    )


def measure_latency(args: argparse.Namespace) -> dict[str, Any]:
    """Alert latency over a fleet of ``--latency`` miners, two of which fail."""
    fail_after = args.latency_warmup
    sim = Simulator(args.latency, "device_dead=1,unreachable=1", fail_after, args.listen)
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"targets": sim.targets, "born": sim.born, "fail_after_s": fail_after}, f)
        argv = [sys.executable, str(SCRIPT), "--latency-child", "--targets", f.name]
        argv += ["--interval", str(args.interval), "--concurrency", str(args.concurrency)]
        argv += ["--dead-for", str(args.dead_for), "--unreachable-for", str(args.unreachable_for)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        os.unlink(f.name)
    finally:
        sim.stop()
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        return {"error": f"exit {done.returncode}"}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- the report --------------------------------------------------------------------------


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def table(miners: int, results: Sequence[dict[str, Any]]) -> Iterator[str]:
    """Markdown rows for one fleet size."""
    base = next((r for r in results if r["name"] == "cgwatchdog" and "error" not in r), None)
    yield f"\n### {miners:,} miners\n"
    yield (
        "| contender | s/cycle (wall) | miners/s | CPU s/cycle | peak RSS MB | wall ÷ cgwatchdog "
        "| CPU ÷ cgwatchdog | answered | simulator CPU s/cycle |"
    )
    yield "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for r in results:
        if "error" in r:
            yield f"| {r['name']} | {r['error']} |||||||"
            continue
        ratio_wall = ratio_cpu = "—"
        if base is not None:
            ratio_wall = f"{r['wall_s'] / base['wall_s']:.2f}x"
            ratio_cpu = f"{r['cpu_s'] / base['cpu_s']:.2f}x"
        name = r["name"] + (" (extrapolated)" if r.get("scale", 1.0) > 1.0 else "")
        yield (
            f"| {name} | {_fmt(r['wall_s'], 3)} | {r['miners_per_s']:,.0f} | {_fmt(r['cpu_s'], 3)} "
            f"| {_fmt(r['rss_mb'], 0)} | {ratio_wall} | {ratio_cpu} "
            f"| {r['answered']}/{r['polled']} | {_fmt(r['sim_cpu_s'], 2)} |"
        )
    for r in results:
        for note in r.get("notes", []):
            yield f"\n- {r['name']}: {note}"
        if r.get("fallbacks_per_cycle"):
            yield (
                f"\n- {r['name']}: {r['fallbacks_per_cycle']:.0f} miners a cycle answered the "
                "multi-command with a STATUS E part and were asked again one command per connection"
            )


def machine() -> str:
    """nproc, the CPU model and Python, for the record."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}, "
        f"open files {soft}/{hard}"
    )


def main_run(args: argparse.Namespace, out: IO[str]) -> int:
    names = [n for n in args.contenders.split(",") if n]
    for name in names:
        if name.removesuffix("-uvloop") not in (*c.CONTENDERS, "cgwatchdog-gc") and not _shards(
            name
        ):
            raise SystemExit(f"unknown contender {name!r}; known: {', '.join(ALL)}")
    print(f"# cgwatchdog fleet benchmark\n\n{machine()}", file=out)
    print(f"\n`{' '.join(['python', 'benchmarks/fleet.py', *sys.argv[1:]])}`", file=out)
    if args.reply_delay:
        print(f"\nEvery miner answers {args.reply_delay * 1000:g} ms after the request.", file=out)
    skipped: list[str] = []
    if any(n.endswith("-uvloop") for n in names) and not _importable("uvloop"):
        skipped += [n for n in names if n.endswith("-uvloop")]
    if "pyasic" in names and not _importable("pyasic"):
        skipped.append("pyasic")
    for name in skipped:
        print(f"\n- {name}: skipped (not installed: pip install .[bench])", file=out)
    names = [n for n in names if n not in skipped]
    everything: dict[int, list[dict[str, Any]]] = {}
    for miners in (int(n) for n in args.miners.split(",")):
        sim = Simulator(miners, listen=args.listen, reply_delay_s=args.reply_delay)
        try:
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump(sim.targets, f)
            results = [run_contender(name, sim, Path(f.name), args) for name in names]
            os.unlink(f.name)
        finally:
            sim.stop()
        everything[miners] = results
        for row in table(miners, results):
            print(row, file=out)
        out.flush()
    if args.latency:
        lat = measure_latency(args)
        everything[-1] = [lat]
        print(
            f"\n### Alert latency ({args.latency:,} miners, poll interval {args.interval:g} s)\n",
            file=out,
        )
        if "error" in lat:
            print(f"failed: {lat['error']}", file=out)
        else:
            print("| alert | failure → webhook (s) | bound: for + interval + 1 s |", file=out)
            print("|---|---:|---:|", file=out)
            for name, bound in lat["bound_s"].items():
                got = lat["latency_s"].get(name)
                shown = "not received" if got is None else _fmt(got, 2)
                print(f"| {name} | {shown} | {_fmt(bound, 1)} |", file=out)
            print(
                f"\n{lat['cycles']} cycles, median cycle incl. delivery {lat['cycle_s_median']:.3f} s",
                file=out,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1))
    return 0


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--miners", default="100,1000,10000", help="fleet sizes, comma-separated")
    p.add_argument(
        "--contenders", default=",".join(ALL), help=f"comma-separated from {', '.join(ALL)}"
    )
    p.add_argument("--cycles", type=int, default=5, help="measured cycles per contender (median)")
    p.add_argument(
        "--concurrency", type=int, default=512, help="connections at once (all asyncio contenders)"
    )
    p.add_argument(
        "--sample",
        type=int,
        default=500,
        help="sequential: poll at most this many miners and scale up",
    )
    p.add_argument(
        "--history", type=float, default=3600.0, help="cgwatchdog: seconds of history pre-filled"
    )
    p.add_argument(
        "--latency",
        type=int,
        default=0,
        metavar="MINERS",
        help="also measure alert latency on this many miners",
    )
    p.add_argument("--interval", type=float, default=2.0, help="latency: poll interval (s)")
    p.add_argument("--dead-for", type=float, default=4.0, help="latency: DeviceDead's for (s)")
    p.add_argument(
        "--unreachable-for", type=float, default=6.0, help="latency: MinerUnreachable's for (s)"
    )
    p.add_argument(
        "--latency-warmup", type=float, default=12.0, help="latency: seconds until the failures"
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1",
        help="the simulator's first loopback address (one address per miner, port 4028)",
    )
    p.add_argument(
        "--reply-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="every simulated miner waits S seconds before answering (0: at once, loopback)",
    )
    p.add_argument("--json", help="also write every figure to this file")
    # internal: the child processes
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    p.add_argument("--plan", default="", help=argparse.SUPPRESS)
    p.add_argument("--fail-after", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--lockstep", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--latency-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--targets", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.serve is not None:
        serve_main(args)
        return 0
    if args.child:
        child_main(args)
        return 0
    if args.latency_child:
        latency_child_main(args)
        return 0
    return main_run(args, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
