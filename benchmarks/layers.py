"""Benchmark: where a cycle's CPU goes, layer by layer, over one simulated fleet.

    python benchmarks/layers.py --miners 10000 [--uvloop] [--profile]

The simulator runs in a process of its own (``fleet.py``'s); this process polls it with
each layer in turn, adding one layer at a time, in alternating rounds so that whatever
else the machine does weighs on every layer alike:

``floor-protocol``   a bare ``asyncio.Protocol``: connect, send, keep the bytes, close
``floor-decode``     + ``orjson.loads`` of each reply (``bound.decode``): the least decoding
``floor-read``       + reading, straight from the decoded dicts, the figures the packaged
                     rules judge (``bound.read_rule_figures``): no object, no history, no
                     rule. What any watchdog in Python pays per reply, however it builds
                     its snapshot: a bound, not a contender
``floor-sockets``    the same on bare non-blocking sockets (``loop.add_reader``)
``floor-epoll``      the same on bare sockets in an epoll set of their own, which the loop
                     watches as one file (what cgwatchdog's client does on Linux)
``exchange``         cgwatchdog's client: ``AsyncCgminerAPI.exchange`` (deadlines, errors)
``decode``           + decoding and splitting the reply (``AsyncCgminerAPI.multi``)
``snapshot``         + the Snapshot: ``Poller.poll`` in its steady state
``rules``            + ``RuleEngine.observe``: the shipped rules over an hour of history;
                     the whole of a steady cycle (``fleet.py``'s ``cgwatchdog``)

Every layer asks what the poller asks each miner (``summary+devs+pools``, plus ``stats``
where the first contact found boards or fans there). The table gives each layer's median
CPU microseconds per miner (user+system of this process), what it adds to the layer
before, and its ratio to ``floor-protocol``; then what the cyclic garbage collector did
during the whole cycles (collections of each generation, and their time, from
``gc.callbacks``). ``--profile`` prints cProfile's top functions of one whole cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import resource
import select
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bound
from benchmarks import contenders as c
from benchmarks.fleet import Simulator, machine
from cgwatchdog.client import AsyncCgminerAPI
from cgwatchdog.protocol import encode_request

LAYERS = (
    "floor-protocol", "floor-decode", "floor-read", "floor-sockets", "floor-epoll", "exchange",
    "decode", "snapshot", "rules",
)  # fmt: skip
FLOORS = ("floor-protocol", "floor-sockets", "floor-epoll")
ADDS_TO = {"floor-decode": "floor-protocol", "floor-read": "floor-decode"}
"""The layer each bound adds to (the others add to the layer before them)."""
TARGET_RATIO = 1.5
"""The steady cycle's CPU target, as a multiple of the Protocol floor's on the same loop."""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sockets_read(loop: asyncio.AbstractEventLoop, host: str, port: int, request: bytes) -> Any:
    """The least a poll can do on bare sockets: connect, send, read to the NUL, close."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    fd = sock.fileno()
    done: asyncio.Future[int] = loop.create_future()
    chunks: list[bytes] = []

    def finish() -> None:
        loop.remove_reader(fd)
        sock.close()
        done.set_result(sum(map(len, chunks)))

    def readable() -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            chunks.append(data)
            if not data.endswith(b"\0"):
                return
        finish()

    def writable() -> None:
        loop.remove_writer(fd)
        try:
            sock.send(request)
        except OSError:
            finish()

    sock.connect_ex((host, port))
    loop.add_reader(fd, readable)
    loop.add_writer(fd, writable)
    return done


class _EpollSet:
    """Bare sockets in one epoll set, which the loop watches as one file."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.epoll = select.epoll()
        self.handlers: dict[int, Callable[[], None]] = {}
        loop.add_reader(self.epoll.fileno(), self.ready)

    def ready(self) -> None:
        handlers = self.handlers
        for fd, _ in self.epoll.poll(0):
            handler = handlers.get(fd)
            if handler is not None:
                handler()


def _epoll_read(epoll_set: _EpollSet, host: str, port: int, request: bytes) -> Any:
    """The least a poll can do on bare sockets in an epoll set: connect, send, read to
    the NUL, close (which drops the socket from the set)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    fd = sock.fileno()
    done: asyncio.Future[int] = loop.create_future()
    chunks: list[bytes] = []
    sent = False

    def finish() -> None:
        del epoll_set.handlers[fd]
        sock.close()
        done.set_result(sum(map(len, chunks)))

    def ready() -> None:
        nonlocal sent
        if not sent:
            sent = True
            try:
                sock.send(request)
            except OSError:
                finish()
                return
            epoll_set.epoll.modify(fd, select.EPOLLIN)
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            chunks.append(data)
            if not data.endswith(b"\0"):
                return
        finish()

    sock.connect_ex((host, port))
    epoll_set.handlers[fd] = ready
    epoll_set.epoll.register(fd, select.EPOLLOUT)
    return done


class Layers:
    """One fleet, every layer's cycle over it."""

    def __init__(self, targets: Sequence[c.Target], concurrency: int, history_s: float) -> None:
        self.targets = list(targets)
        self.concurrency = concurrency
        self.cgwatchdog = c.CgwatchdogContender(
            targets, concurrency, history_s=history_s, collector=True
        )  # the collector as the daemon runs it
        self.floor = c.FloorProtocol(targets, concurrency)
        self.bounds: dict[str, c.FloorProtocol] = {}
        for layer, consume in (("floor-decode", bound.decode), ("floor-read", bound.read_rule_figures)):
            self.bounds[layer] = c.FloorProtocol(targets, concurrency)
            self.bounds[layer].consume = consume
        self.requests: list[tuple[AsyncCgminerAPI, tuple[str, ...], bytes]] = []
        self.epoll_set: _EpollSet | None = None

    async def warm_up(self) -> None:
        await self.cgwatchdog.warm_up()
        gc.collect()
        poller = self.cgwatchdog.poller
        for state in poller._states.values():
            commands = state.commands or ()
            api = AsyncCgminerAPI(
                state.target.host, state.target.port, timeout=poller.timeout,
                connect_timeout=poller.connect_timeout,
            )  # fmt: skip
            api.multi_supported = state.api.multi_supported
            self.requests.append((api, commands, encode_request("+".join(commands))))

    async def _share(self, job: Callable[[Any], Awaitable[None]], items: Sequence[Any]) -> None:
        await c._share(items, self.concurrency, job)

    async def cycle(self, layer: str) -> None:
        loop = asyncio.get_running_loop()
        if layer == "floor-protocol":
            await self.floor.cycle()
        elif layer in self.bounds:
            await self.bounds[layer].cycle()
        elif layer == "floor-sockets":

            async def bare(item: tuple[AsyncCgminerAPI, tuple[str, ...], bytes]) -> None:
                await _sockets_read(loop, item[0].host, item[0].port, item[2])

            await self._share(bare, self.requests)
        elif layer == "floor-epoll":
            if self.epoll_set is None:
                self.epoll_set = _EpollSet(loop)
            epoll_set = self.epoll_set

            async def bare_in_set(item: tuple[AsyncCgminerAPI, tuple[str, ...], bytes]) -> None:
                await _epoll_read(epoll_set, item[0].host, item[0].port, item[2])

            await self._share(bare_in_set, self.requests)
        elif layer == "exchange":

            async def exchange(item: tuple[AsyncCgminerAPI, tuple[str, ...], bytes]) -> None:
                await item[0].exchange(item[2])

            await self._share(exchange, self.requests)
        elif layer == "decode":

            async def decode(item: tuple[AsyncCgminerAPI, tuple[str, ...], bytes]) -> None:
                await item[0].multi(item[1])

            await self._share(decode, self.requests)
        elif layer == "snapshot":
            await self.cgwatchdog.poller.poll()
        else:  # the whole of a cycle
            await self.cgwatchdog.cycle()


class GcWatch:
    """Collections by generation, and the CPU time they took, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.cpu_s = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.cpu_s += time.thread_time() - self._started
            self.collections[info["generation"]] += 1


async def measure(args: argparse.Namespace, targets: Sequence[c.Target]) -> dict[str, Any]:
    layers = Layers(targets, args.concurrency, args.history)
    await layers.warm_up()
    cpu: dict[str, list[float]] = {name: [] for name in LAYERS}
    wall: dict[str, list[float]] = {name: [] for name in LAYERS}
    watch = GcWatch()
    for _ in range(args.rounds):
        for name in LAYERS:
            # Each layer starts on a collected heap; the whole cycle ("rules") is watched
            # for what the collector then does by itself.
            gc.collect()
            if name == "rules":
                gc.callbacks.append(watch)
            before, started = _cpu_s(), time.perf_counter()
            await layers.cycle(name)
            cpu[name].append(_cpu_s() - before)
            wall[name].append(time.perf_counter() - started)
            if name == "rules":
                gc.callbacks.remove(watch)
    profile = ""
    if args.profile:
        gc.collect()
        profiler = cProfile.Profile()
        profiler.enable()
        await layers.cycle("rules")
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile)
        profile = out.getvalue()
    return {
        "cpu_us": {name: statistics.median(v) * 1e6 / len(targets) for name, v in cpu.items()},
        "wall_s": {name: statistics.median(v) for name, v in wall.items()},
        "gc_collections": [count / args.rounds for count in watch.collections],
        "gc_cpu_s": watch.cpu_s / args.rounds,
        "profile": profile,
    }


def report(miners: int, loop_name: str, result: dict[str, Any]) -> list[str]:
    """Markdown: each layer's CPU a miner, what it adds to the one before, its ratio."""
    cpu = result["cpu_us"]
    floor = cpu["floor-protocol"]
    lines = [
        f"\n### {miners:,} miners, {loop_name} event loop\n",
        "| layer | CPU µs a miner | adds | ÷ floor-protocol | wall s a cycle |",
        "|---|---:|---:|---:|---:|",
    ]
    for index, name in enumerate(LAYERS):
        if name in FLOORS:
            adds = "—"
        elif name in ADDS_TO:
            adds = f"{cpu[name] - cpu[ADDS_TO[name]]:+.1f}"
        elif name == "exchange":
            adds = (
                f"{cpu[name] - cpu['floor-epoll']:+.1f} / {cpu[name] - floor:+.1f} "
                "(epoll / protocol floor)"
            )
        else:
            adds = f"{cpu[name] - cpu[LAYERS[index - 1]]:+.1f}"
        lines.append(
            f"| {name} | {cpu[name]:.1f} | {adds} | {cpu[name] / floor:.2f}x "
            f"| {result['wall_s'][name]:.3f} |"
        )
    least = cpu["exchange"] + cpu["floor-read"] - floor
    lines.append(
        f"\ncgwatchdog's exchange plus the least decoding and reading (floor-read over "
        f"floor-protocol) is {least:.1f} µs a miner ({least / floor:.2f}x): "
        f"{TARGET_RATIO}x the floor ({TARGET_RATIO * floor:.1f} µs) leaves "
        f"{TARGET_RATIO * floor - least:.1f} µs a miner for the Snapshot, the history, the "
        f"rules and the alerts, where cgwatchdog's snapshot and rules layers take "
        f"{cpu['rules'] - cpu['decode']:.1f}."
    )
    gens = ", ".join(f"{count:g}" for count in result["gc_collections"])
    lines.append(
        f"\nCyclic GC during a whole cycle: collections of generations 0, 1, 2: {gens} "
        f"(a cycle, mean); {result['gc_cpu_s']:.3f} s CPU in them "
        f"({result['gc_cpu_s'] * 1e6 / miners:.1f} µs a miner)."
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--miners", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=5, help="cycles of every layer (median)")
    p.add_argument("--concurrency", type=int, default=512)
    p.add_argument("--history", type=float, default=3600.0, help="seconds of history pre-filled")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="top N functions")
    p.add_argument("--listen", default="127.30.0.1", help="the simulator's first address")
    args = p.parse_args(argv)
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print(f"# cgwatchdog cycle by layer\n\n{machine()}")
    print(f"\n`{' '.join(['python', 'benchmarks/layers.py', *sys.argv[1:]])}`")
    sim = Simulator(args.miners, listen=args.listen)
    try:
        result = asyncio.run(measure(args, sim.targets))
    finally:
        sim.stop()
    for line in report(args.miners, "uvloop" if args.uvloop else "default asyncio", result):
        print(line)
    if result["profile"]:
        print("\n```\n" + result["profile"].strip() + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
