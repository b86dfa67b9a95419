"""Benchmark: what a /metrics scrape costs the daemon at 10,000 miners, and what it weighs.

    python benchmarks/scrape.py --miners 10000 [--cycles 5] [--scrapes 10] [--per-device]

One miner of each simulator flavour (cgminer, antminer, whatsminer, braiins, avalon,
luxos, ...) is served on 127.18.7.1 and polled once by the real poller; their snapshots
are copied to ``--miners`` miners (each its own name, address, labels ``site`` and
``rack``, a hashrate spread of +-5%), and 1% of them get a firing alert. Then, in this
process, for each of ``--cycles`` cycles: ``Metrics.observe_cycle`` takes a fresh copy of
the fleet (new objects, as a real cycle makes), and a client in a child process (so its
own CPU is not counted) scrapes /metrics ``--scrapes`` times over HTTP from the real
endpoint (``HttpServer`` on 127.18.7.200), asking for OpenMetrics in gzip as Prometheus
does (``--plain``: without gzip, as curl does).

It reports the daemon's CPU seconds (``time.process_time``) for the first scrape after a
cycle (which renders the fleet's families) and for the next ones (the cached copy),
the wall time the client saw, the exposition's size as text and on the wire and its
series (per miner too), what gzip costs at zlib's levels 1 and 6 (``GZIP_LEVEL`` is
1), and the process's RSS after each cycle, so memory growth across cycles shows (with glibc's mmap
threshold fixed, as ``cgwatchdog run`` fixes it: ``cgwatchdog/malloc.py``). ``--json
FILE`` keeps every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gzip
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry

from cgwatchdog.alerts import AlertEngine, Evaluation, Signal
from cgwatchdog.config import MinerConfig
from cgwatchdog.malloc import keep_large_blocks_unmapped
from cgwatchdog.poller import Poller
from cgwatchdog.simulator import FLAVOURS, FakeClock, Fleet, serve
from cgwatchdog.snapshot import PollResult, Snapshot
from cgwatchdog.web.metrics import SERIES, Metrics, render_fleet, series_budget
from cgwatchdog.web.server import HttpServer
from cgwatchdog.web.sources import Sources
from cgwatchdog.web.status import DaemonStatus

ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)  # what Prometheus 2.x sends
SIM_HOST = "127.18.7.1"
HTTP_HOST = "127.18.7.200"


def rss_mb() -> float:
    """Resident set size of this process now, MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


async def templates() -> list[Snapshot]:
    """One real snapshot per simulator flavour, polled over TCP."""
    clock = FakeClock(1_800_000_000.0)
    names = sorted(FLAVOURS)
    fleet = Fleet.build(len(names), flavours=names, listen=SIM_HOST, base_port=0, clock=clock)
    async with serve(fleet):
        targets = [MinerConfig(name=m.name, host=m.host, port=m.port) for m in fleet]
        poller = Poller(targets, timeout=5.0, concurrency=16, clock=clock)
        results = await poller.poll()
        results = await poller.poll()  # after first contact: the steady state
    return [r for r in results if isinstance(r, Snapshot)]


def fleet_of(shapes: list[Snapshot], n: int, rng: random.Random) -> list[PollResult]:
    """``n`` miners copied from the shapes: new objects each call, as a cycle makes."""
    out: list[PollResult] = []
    for i in range(n):
        shape = shapes[i % len(shapes)]
        spread = 1.0 + rng.uniform(-0.05, 0.05)
        out.append(
            dataclasses.replace(
                shape,
                name=f"sim-{i + 1:05d}",
                host=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                hashrate_hs=None if shape.hashrate_hs is None else shape.hashrate_hs * spread,
            )
        )
    return out


def client_main(args: argparse.Namespace) -> None:
    """``--client HOST PORT N``: scrape N times, print the wall seconds, the bytes of the
    text, the status and the bytes on the wire of each (the wall time leaves out the
    client's own inflating)."""
    host, port, count = args.client[0], int(args.client[1]), int(args.client[2])
    headers = {"Accept": ACCEPT, "Host": "localhost"}
    if not args.plain:
        headers["Accept-Encoding"] = "gzip"
    out = []
    for _ in range(count):
        connection = http.client.HTTPConnection(host, port, timeout=60)
        started = time.perf_counter()
        connection.request("GET", "/metrics", headers=headers)
        answer = connection.getresponse()
        body = answer.read()
        wall = time.perf_counter() - started
        wire = len(body)
        if answer.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        out.append((wall, len(body), answer.status, wire))
        connection.close()
    print(json.dumps(out))


def scrape_from_child(port: int, count: int, plain: bool) -> list[tuple[float, int, int, int]]:
    done = subprocess.run(
        [sys.executable, __file__, "--client", HTTP_HOST, str(port), str(count)]
        + (["--plain"] if plain else []),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return [tuple(item) for item in json.loads(done.stdout)]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(7)
    shapes = await templates()
    n = args.miners
    miners = [
        MinerConfig(
            name=f"sim-{i + 1:05d}",
            host=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            labels={"site": f"site-{i % 4}", "rack": f"r{i // 40:03d}"},
        )
        for i in range(n)
    ]
    engine = AlertEngine()
    alerting = [f"sim-{i + 1:05d}" for i in range(0, n, 100)]
    signals = [
        Signal({"alertname": "DeviceDead", "miner": name, "device": "1", "severity": "critical"},
               {}, "Dead")
        for name in alerting
    ]  # fmt: skip
    engine.update(Evaluation(signals, [("DeviceDead", name) for name in alerting]), 0.0)
    clock = FakeClock(1_800_000_000.0)
    status = DaemonStatus(interval_s=30.0, started_at=clock())
    metrics = Metrics(CollectorRegistry(), per_device=args.per_device)
    server = HttpServer(Sources(status, metrics, alerts=engine.alerts, clock=clock))
    await server.start(HTTP_HOST, 0)
    cycles: list[dict[str, Any]] = []
    try:
        for cycle in range(args.cycles):
            results = fleet_of(shapes, n, rng)
            clock.advance(30.0)
            metrics.observe_cycle(
                results, engine.alerts(), duration_s=1.0, finished_at=clock(), interval_s=30.0,
                miners=miners,
            )  # fmt: skip
            del results
            # The first scrape renders; the rest take the cached copy.
            cpu0 = time.process_time()
            first = await asyncio.to_thread(scrape_from_child, server.port, 1, args.plain)
            cpu1 = time.process_time()
            rest = await asyncio.to_thread(
                scrape_from_child, server.port, args.scrapes, args.plain
            )
            cpu2 = time.process_time()
            sizes = {size for _, size, _, _ in first + rest}
            assert all(status == 200 for _, _, status, _ in first + rest)
            cycles.append(
                {
                    "cycle": cycle + 1,
                    "first_scrape_cpu_s": cpu1 - cpu0,
                    "first_scrape_wall_s": first[0][0],
                    "cached_scrape_cpu_s": (cpu2 - cpu1) / args.scrapes,
                    "cached_scrape_wall_s": statistics.median(w for w, _, _, _ in rest),
                    "bytes": max(sizes),
                    "wire_bytes": max(wire for _, _, _, wire in first + rest),
                    "rss_mb": rss_mb(),
                }
            )
            print(
                f"cycle {cycle + 1}: first scrape {cpu1 - cpu0:.3f} s CPU "
                f"({first[0][0]:.3f} s wall), cached {(cpu2 - cpu1) / args.scrapes:.4f} s CPU "
                f"({cycles[-1]['cached_scrape_wall_s']:.3f} s wall), "
                f"{max(sizes) / 1e6:.1f} MB ({cycles[-1]['wire_bytes'] / 1e6:.2f} MB on the "
                f"wire), RSS {cycles[-1]['rss_mb']:.0f} MB",
                flush=True,
            )
        body = b"".join(metrics.exposition(openmetrics=True)).decode()
    finally:
        await server.stop()
    samples = [line for line in body.splitlines() if line and not line.startswith("#")]
    fleet_samples = [s for s in samples if s.split("{", 1)[0].split(" ", 1)[0] in _FLEET]
    per_miner = [s for s in fleet_samples if not s.startswith("cgwatchdog_alert{")]
    render_cpu = []
    for _ in range(3):
        started = time.process_time()
        metrics._cache.clear()
        metrics.fleet_exposition(openmetrics=True)
        render_cpu.append(time.process_time() - started)
    # What gzip costs on its own, on this cycle's families as text, at two levels.
    families = render_fleet(metrics.view, openmetrics=True, per_device=args.per_device)
    gzip_levels = {}
    for level in (1, 6):
        spent = []
        for _ in range(3):
            started = time.process_time()
            compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            size = sum(len(compressor.compress(family)) for family in families)
            size += len(compressor.flush())
            spent.append(time.process_time() - started)
        gzip_levels[level] = {"cpu_s": min(spent), "bytes": size}
    return {
        "miners": n,
        "per_device": args.per_device,
        "flavours": sorted({s.family or "?" for s in shapes}),
        "series_total": len(samples),
        "series_fleet": len(fleet_samples),
        "series_per_miner": len(per_miner) / n,
        "budget_per_miner": series_budget(per_device=args.per_device),
        "render_cpu_s": min(render_cpu),
        "text_bytes": sum(len(family) for family in families),
        "gzip_levels": gzip_levels,
        "cycles": cycles,
        # The allocator settles over the first cycles (two fleets' objects live at once
        # while a cycle replaces the last); what must not happen is growth after that.
        "rss_growth_mb": cycles[-1]["rss_mb"] - cycles[min(2, len(cycles) - 1)]["rss_mb"],
    }


_FLEET = {s.sample for s in SERIES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--miners", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--scrapes", type=int, default=10, help="cached scrapes per cycle")
    parser.add_argument("--per-device", action="store_true", help="http.per_device_metrics")
    parser.add_argument("--plain", action="store_true", help="scrape without gzip, as curl does")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    keep_large_blocks_unmapped()  # as `cgwatchdog run` does: the daemon's allocator
    figures = asyncio.run(measure(args))
    cycles = figures["cycles"]
    print(
        f"\n{figures['miners']:,} miners ({', '.join(figures['flavours'])}), per-device "
        f"series {'on' if figures['per_device'] else 'off'}:\n"
        f"  exposition {cycles[-1]['bytes'] / 1e6:.1f} MB, {figures['series_total']:,} series "
        f"({figures['series_per_miner']:.1f} a miner; budget for a typical miner "
        f"{figures['budget_per_miner']})\n"
        f"  render and compress once per cycle: {figures['render_cpu_s']:.3f} s CPU\n"
        f"  gzip of the fleet's {figures['text_bytes'] / 1e6:.1f} MB alone: "
        + ", ".join(
            f"level {level} {g['bytes'] / 1e6:.2f} MB in {g['cpu_s']:.3f} s CPU"
            for level, g in figures["gzip_levels"].items()
        )
        + "\n"
        f"  scrapes {'plain' if args.plain else 'in gzip'}: "
        f"{cycles[-1]['wire_bytes'] / 1e6:.2f} MB on the wire\n"
        f"  scrape, first after a cycle: median "
        f"{statistics.median(c['first_scrape_cpu_s'] for c in cycles):.3f} s CPU\n"
        f"  scrape, cached: median "
        f"{statistics.median(c['cached_scrape_cpu_s'] for c in cycles):.4f} s CPU\n"
        f"  RSS from cycle {min(3, len(cycles))} to {len(cycles)}: "
        f"{figures['rss_growth_mb']:+.1f} MB"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
