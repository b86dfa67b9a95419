"""Benchmark: one poll cycle over a simulated fleet, cgwatchdog beside its peers.

    python benchmarks/fleet.py --miners 100,1000,10000,20000

For each fleet size it starts the simulator (``cgwatchdog.simulator``, one loopback
address per miner, port 4028) in processes of its own (at most ``--per-process`` miners
each: listeners are open files), then runs each contender in a child process of its own
against that same simulator, one after another: a warm-up cycle, then ``--cycles``
measured cycles. The table gives the median cycle's wall time, the contender's own CPU
seconds (user+system, ``getrusage`` in the child around each cycle) and per miner, its
peak RSS (``os.wait4`` of the child), its ratios to the bare ``asyncio.Protocol`` floor
on the same event loop and to cgwatchdog; a last table gives the CPU per miner by fleet
size. ``--latency N`` also measures the daemon's alert latency: the time from a
simulated failure to the webhook receiving the alert, against the rule's ``for`` plus
one poll interval plus 1 s. See ``benchmarks/README.md``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
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
    """``--serve N``: run the fleet, print its targets and READY, serve until killed.

    ``--plan`` items are ``scenario=count`` or ``scenario@seconds=count`` (that many
    miners fail after those seconds; without ``@``, after ``--fail-after``), in order from
    the first miner. Each target line: name, host, port, flavour, and when it fails
    (seconds after the fleet was built; ``-`` for a healthy miner).
    """
    from cgwatchdog.simulator import Fleet, Scenario, ensure_file_limit, make_scenario, serve

    plan: dict[str | Scenario, int] = {}
    for item in filter(None, args.plan.split(",")):
        name, _, count = item.partition("=")
        name, at, fail_after = name.partition("@")
        choice = make_scenario(name, fail_after_s=float(fail_after)) if at else name
        plan[choice] = plan.get(choice, 0) + int(count or 1)
    options: dict[str, float] = {"fail_after_s": args.fail_after}
    if args.reply_delay > 0 and not plan:
        # every miner answers after reply_delay seconds, as over a LAN from a busy miner
        plan = {"slow": args.serve}
        options = {"fail_after_s": 0.0, "delay_s": args.reply_delay}
    ensure_file_limit(args.serve)
    flavours = [f for f in args.flavours.split(",") if f]
    fleet = Fleet.build(
        args.serve,
        plan if plan else "healthy",
        listen=args.listen,
        scenario_options=options,
        name_prefix=args.name_prefix,
        **({"flavours": flavours} if flavours else {}),
    )
    born = fleet.clock()

    async def run() -> None:
        async with serve(fleet):
            for m in fleet:
                scenario = m.miner.scenario
                fails = (
                    "-" if scenario.name in ("healthy", "slow") else f"{scenario.fail_after_s!r}"
                )
                print(f"{m.name} {m.host} {m.port} {m.miner.flavour.name} {fails}")
            print(f"READY {born!r}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


def _next_address(host: str) -> str:
    """The loopback address after ``host``, skipping x.y.z.0 and x.y.z.255 as the
    simulator does."""
    value = int(ipaddress.IPv4Address(host)) + 1
    while value & 0xFF in (0, 255):
        value += 1
    return str(ipaddress.IPv4Address(value))


class Simulator:
    """The simulated fleet: one child process, or several for a large fleet (each
    process serves at most ``per_process`` miners: listeners are open files, and the
    hard limit here is 20,000 a process). Their targets, birth time and CPU seconds."""

    def __init__(
        self,
        miners: int,
        plan: str = "",
        fail_after_s: float = 60.0,
        listen: str = "127.0.0.1",
        reply_delay_s: float = 0.0,
        *,
        flavours: str = "",
        per_process: int = 10_000,
    ) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.targets: list[c.Target] = []
        self.fail_at: dict[str, float] = {}
        """Seconds after ``born`` at which each failing miner fails."""
        self.born = 0.0
        remaining, first, index = miners, listen, 0
        try:
            while remaining > 0 or not self.procs:
                count = min(remaining, per_process)
                # The failures of the plan go to the first process's first miners.
                argv = [sys.executable, str(SCRIPT), "--serve", str(count)]
                argv += ["--plan", plan if index == 0 else "", "--fail-after", str(fail_after_s)]
                argv += ["--listen", first, "--reply-delay", str(reply_delay_s)]
                argv += ["--flavours", flavours, "--name-prefix", f"sim{index}-"]
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
                self.procs.append(proc)
                assert proc.stdout is not None
                for line in proc.stdout:
                    parts = line.split()
                    if parts and parts[0] == "READY":
                        self.born = max(self.born, float(parts[1]))
                        break
                    self.targets.append(c.Target(parts[0], parts[1], int(parts[2]), parts[3]))
                    if parts[4] != "-":
                        self.fail_at[parts[0]] = float(parts[4])
                else:
                    raise SystemExit(f"a simulator exited ({proc.wait()}) before it was ready")
                remaining -= count
                index += 1
                first = _next_address(self.targets[-1].host) if self.targets else first
        except BaseException:
            self.stop()
            raise

    @property
    def flavours(self) -> list[str]:
        return [t.flavour for t in self.targets]

    def cpu_s(self) -> float:
        """user+system CPU seconds of the simulator processes so far."""
        total = 0.0
        for proc in self.procs:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        return total

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait()


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


LATENCY_CONFIG = """\
poll: {{interval: {interval}s, timeout: {timeout}s, connect_timeout: {connect}s, concurrency: {concurrency}}}
state_dir: {state}
http: {{listen: "127.0.0.1:{http_port}"}}
miners:
{miners}
rules:
  - {{name: DeviceDead, type: device_status, status: [Dead, Sick, NoStart], for: {dead_for}s, severity: critical}}
  - {{name: MinerUnreachable, type: unreachable, for: {unreachable_for}s, severity: critical}}
receivers:
  - {{name: hook, webhook: {{url: "http://127.0.0.1:{hook_port}/"}}}}
route: {{receiver: hook, group_by: [alertname, miner], group_wait: 0s}}
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def measure_latency(args: argparse.Namespace) -> dict[str, Any]:
    """Alert latency of the real daemon (``cgwatchdog run``, its own schedule and
    delivery) over a fleet of ``--latency`` miners, ``--failures`` of which lose a device
    and as many stop listening, their failures spread over one poll interval so that they
    fall at every phase of the cycle. Each latency is from the failure to the webhook
    receiving its firing alert; the bound is the rule's ``for`` + one interval + 1 s."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    interval, count = args.interval, args.failures
    warmup = args.latency_warmup
    plan = ",".join(
        [f"device_dead@{warmup + i * interval / count:.3f}=1" for i in range(count)]
        + [f"unreachable@{warmup + (i + 0.5) * interval / count:.3f}=1" for i in range(count)]
    )
    received: dict[tuple[str, str], float] = {}

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            at = time.time()
            for alert in json.loads(body).get("alerts", []):
                if alert.get("status") == "firing":
                    labels = alert.get("labels", {})
                    key = (labels.get("alertname", ""), labels.get("miner", ""))
                    received.setdefault(key, at)
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sim = Simulator(args.latency, plan, warmup, args.listen)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            miners = "\n".join(
                f"  - {{name: {t.name}, host: {t.host}, port: {t.port}}}" for t in sim.targets
            )
            (root / "config.yaml").write_text(
                LATENCY_CONFIG.format(
                    interval=interval,
                    timeout=interval / 2,
                    connect=interval / 4,
                    concurrency=args.concurrency,
                    state=root / "state",
                    http_port=_free_port(),
                    miners=miners,
                    dead_for=args.dead_for,
                    unreachable_for=args.unreachable_for,
                    hook_port=server.server_port,
                )
            )
            (root / "state").mkdir()
            argv = [sys.executable, "-m", "cgwatchdog", "run", "-c", str(root / "config.yaml")]
            argv += ["--log-level", os.environ.get("CGW_BENCH_DAEMON_LOG_LEVEL", "info")]
            daemon = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            fail_times = {name: sim.born + at for name, at in sim.fail_at.items()}
            last_failure = max(fail_times.values())
            deadline = last_failure + max(args.dead_for, args.unreachable_for) + 4 * interval + 20
            while time.time() < deadline and len(received) < len(fail_times):
                if daemon.poll() is not None:
                    break
                time.sleep(0.1)
    finally:
        stderr = b""
        if daemon is not None:
            daemon.terminate()
            try:
                _, stderr = daemon.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        sim.stop()
        server.shutdown()
    if os.environ.get("CGW_BENCH_DAEMON_LOG"):
        Path(os.environ["CGW_BENCH_DAEMON_LOG"]).write_bytes(stderr)
    if daemon is not None and daemon.returncode not in (0, -15):
        sys.stderr.write(stderr.decode(errors="replace")[-3000:])
        return {"error": f"the daemon exited {daemon.returncode}"}
    rows: dict[str, list[float]] = {"DeviceDead": [], "MinerUnreachable": []}
    missing: list[str] = []
    for name, failed_at in fail_times.items():
        index = int(name.rsplit("-", 1)[1]) - 1
        alertname = "DeviceDead" if index < count else "MinerUnreachable"
        got = received.get((alertname, name))
        if got is None:
            missing.append(f"{alertname} {name}")
        else:
            rows[alertname].append(got - failed_at)
    return {
        "latency_s": rows,
        "failed_at": fail_times,
        "received_at": {f"{a} {m}": at for (a, m), at in received.items()},
        "missing": missing,
        "bound_s": {
            "DeviceDead": args.dead_for + interval + 1,
            "MinerUnreachable": args.unreachable_for + interval + 1,
        },
    }


# -- the report --------------------------------------------------------------------------


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def _floor_of(name: str, results: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The floor-protocol row on the same event loop as contender ``name``."""
    wanted = "floor-protocol-uvloop" if name.endswith("-uvloop") else "floor-protocol"
    return next((r for r in results if r["name"] == wanted and "error" not in r), None)


def table(miners: int, results: Sequence[dict[str, Any]]) -> Iterator[str]:
    """Markdown rows for one fleet size: each contender's cycle, its ratios to cgwatchdog
    and to the bare Protocol floor on the same event loop."""
    base = next((r for r in results if r["name"] == "cgwatchdog" and "error" not in r), None)
    yield f"\n### {miners:,} miners\n"
    yield (
        "| contender | s/cycle (wall) | CPU s/cycle | CPU µs a miner | peak RSS MB "
        "| CPU ÷ floor, same loop | wall ÷ floor, same loop | CPU ÷ cgwatchdog "
        "| wall ÷ cgwatchdog | answered | simulator CPU s/cycle |"
    )
    yield "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for r in results:
        if "error" in r:
            yield f"| {r['name']} | {r['error']} |||||||||"
            continue
        ratio_wall = ratio_cpu = floor_cpu = floor_wall = "—"
        if base is not None:
            ratio_wall = f"{r['wall_s'] / base['wall_s']:.2f}x"
            ratio_cpu = f"{r['cpu_s'] / base['cpu_s']:.2f}x"
        floor = _floor_of(r["name"], results)
        if floor is not None:
            floor_cpu = f"{r['cpu_s'] / floor['cpu_s']:.2f}x"
            floor_wall = f"{r['wall_s'] / floor['wall_s']:.2f}x"
        name = r["name"] + (" (extrapolated)" if r.get("scale", 1.0) > 1.0 else "")
        yield (
            f"| {name} | {_fmt(r['wall_s'], 3)} | {_fmt(r['cpu_s'], 3)} "
            f"| {r['cpu_s'] * 1e6 / miners:,.0f} | {_fmt(r['rss_mb'], 0)} | {floor_cpu} "
            f"| {floor_wall} | {ratio_cpu} | {ratio_wall} "
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


def growth(everything: dict[int, list[dict[str, Any]]]) -> Iterator[str]:
    """CPU µs a miner by fleet size, each contender a row (flat means linear cost)."""
    sizes = sorted(size for size in everything if size > 0)
    if len(sizes) < 2:
        return
    names = [r["name"] for r in everything[sizes[0]]]
    yield "\n### CPU µs a miner by fleet size\n"
    yield "| contender | " + " | ".join(f"{size:,}" for size in sizes) + " |"
    yield "|---|" + "---:|" * len(sizes)
    for name in names:
        cells = []
        for size in sizes:
            row = next((r for r in everything[size] if r["name"] == name), None)
            ok = row is not None and "error" not in row
            cells.append(f"{row['cpu_s'] * 1e6 / size:,.0f}" if ok and row else "—")
        yield f"| {name} | " + " | ".join(cells) + " |"


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
        base = name.removesuffix("-uvloop")
        if base not in (*c.CONTENDERS, *c.GC_VARIANTS) and not _shards(name):
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
        sim = Simulator(
            miners,
            listen=args.listen,
            reply_delay_s=args.reply_delay,
            flavours=args.flavours,
            per_process=args.per_process,
        )
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
    for row in growth(everything):
        print(row, file=out)
    if args.latency:
        lat = measure_latency(args)
        everything[-1] = [lat]
        print(
            f"\n### Alert latency (the daemon over {args.latency:,} miners, poll interval "
            f"{args.interval:g} s; {args.failures} failures of each kind spread over one "
            "interval)\n",
            file=out,
        )
        if "error" in lat:
            print(f"failed: {lat['error']}", file=out)
        else:
            print(
                "| alert | failures | failure → webhook (s): min / median / max "
                "| bound: for + interval + 1 s | within |",
                file=out,
            )
            print("|---|---:|---|---:|---|", file=out)
            for name, bound in lat["bound_s"].items():
                got = lat["latency_s"][name]
                shown = (
                    f"{min(got):.2f} / {statistics.median(got):.2f} / {max(got):.2f}"
                    if got
                    else "none received"
                )
                within = "yes" if got and max(got) <= bound else "**no**"
                print(f"| {name} | {len(got)} | {shown} | {bound:.1f} | {within} |", file=out)
            if lat["missing"]:
                print(f"\nnot received: {', '.join(lat['missing'])}", file=out)
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
        "--failures",
        type=int,
        default=10,
        help="latency: miners failing of each kind, spread over one interval",
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
    p.add_argument(
        "--flavours",
        default="",
        help="the simulated firmware, round-robin (default cgminer,bmminer,bfgminer); "
        "cgminer,bfgminer is a fleet where pyasic's multi-command succeeds everywhere",
    )
    p.add_argument(
        "--per-process",
        type=int,
        default=10_000,
        help="miners a simulator process serves at most (open files: the hard limit)",
    )
    p.add_argument("--json", help="also write every figure to this file")
    # internal: the child processes
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    p.add_argument("--plan", default="", help=argparse.SUPPRESS)
    p.add_argument("--fail-after", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--name-prefix", default="sim-", help=argparse.SUPPRESS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--lockstep", action="store_true", help=argparse.SUPPRESS)
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
    return main_run(args, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
