"""Benchmark: decoding and normalizing one miner's replies, per firmware.

    python benchmarks/codec.py [--fixtures DIR]

For every field capture (``../shared/fixtures/peer-replies``: the bytes real firmware
sent) and every simulator flavour (its steady multi-command reply), the microseconds
to decode each reply (``protocol.decode_reply``: orjson's fast path where it applies,
and the lenient decoder alone), and to build the miner's Snapshot from the decoded
replies (``snapshot.build_snapshot``). Each figure is the fastest of ``--repeat`` runs
of ``--number`` calls (the same bytes each time: caches warm, so these are the floor of
what a cycle pays; ``layers.py`` measures the costs in a real cycle). No I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cgwatchdog import protocol
from cgwatchdog.snapshot import build_snapshot

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "peer-replies"


def best_us(call: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def lenient(data: bytes) -> dict[str, Any]:
    fast = protocol._fast_loads
    protocol._fast_loads = None
    try:
        return protocol.decode_reply(data)
    finally:
        protocol._fast_loads = fast


def captures(directory: Path) -> list[tuple[str, dict[str, bytes]]]:
    """(name, command -> the bytes the firmware sent) of each field capture."""
    out = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        raw: dict[str, str] = data.get("raw") or {}
        out.append(
            (
                data["name"],
                {
                    command: (
                        raw[command] if command in raw else json.dumps(reply, separators=(",", ":"))
                    ).encode()
                    for command, reply in data["replies"].items()
                },
            )
        )
    return out


def simulated() -> list[tuple[str, dict[str, bytes]]]:
    """(flavour, {the steady multi-command: its bytes}) of each simulator flavour."""
    from cgwatchdog.client import AsyncCgminerAPI
    from cgwatchdog.simulator import Fleet, serve

    async def collect() -> list[tuple[str, dict[str, bytes]]]:
        fleet = Fleet.build(3, listen="127.48.0.1")
        out = []
        async with serve(fleet):
            for member in fleet:
                flavour = member.miner.flavour.name
                commands = "summary+devs+pools" + ("+stats" if flavour == "bmminer" else "")
                api = AsyncCgminerAPI(member.host, member.port)
                decoder = await api.exchange(protocol.encode_request(commands))
                out.append((f"simulator {flavour}", {commands: decoder.raw()}))
        return out

    return asyncio.run(collect())


def measure(name: str, replies: dict[str, bytes], number: int, repeat: int) -> list[dict[str, Any]]:
    rows = []
    decoded: dict[str, Any] = {}
    for command, data in replies.items():
        reply = protocol.decode_reply(data)
        if "+" in command:
            decoded.update(protocol.split_multi(command.split("+"), reply))
        else:
            decoded[command] = reply
        fast_path = (
            protocol._fast_loads is not None
            and data[:1] == b"{"
            and protocol._fast_decode(data.split(b"\0")[0], protocol._fast_loads) is not None
        )
        rows.append(
            {
                "miner": name,
                "command": command,
                "bytes": len(data),
                "decode_us": best_us(lambda d=data: protocol.decode_reply(d), number, repeat),
                "lenient_us": best_us(lambda d=data: lenient(d), number, repeat),
                "fast_path": fast_path,
            }
        )

    def build() -> object:
        return build_snapshot(decoded, name="m", host="10.0.0.1", port=4028, at=1.8e9)

    rows.append(
        {"miner": name, "command": "(Snapshot)", "build_us": best_us(build, number, repeat)}
    )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--fixtures", type=Path, default=FIXTURES)
    p.add_argument("--number", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", help="also write every figure to this file")
    args = p.parse_args(argv)
    from benchmarks.fleet import machine

    print(f"# cgwatchdog decoding and Snapshot per firmware\n\n{machine()}")
    print(f"\n`{' '.join(['python', 'benchmarks/codec.py', *sys.argv[1:]])}`")
    orjson = "orjson installed" if protocol._fast_loads is not None else "no orjson"
    print(f"\n({orjson}.)\n")
    sources = (captures(args.fixtures) if args.fixtures.is_dir() else []) + simulated()
    rows: list[dict[str, Any]] = []
    print("| miner | reply | bytes | decode µs | lenient decoder alone µs | fast path |")
    print("|---|---|---:|---:|---:|---|")
    for name, replies in sources:
        for row in measure(name, replies, args.number, args.repeat):
            rows.append(row)
            if "build_us" in row:
                continue
            print(
                f"| {row['miner']} | {row['command']} | {row['bytes']:,} "
                f"| {row['decode_us']:.1f} | {row['lenient_us']:.1f} "
                f"| {'yes' if row['fast_path'] else 'no'} |"
            )
    print("\n| miner | Snapshot µs (all its replies) |")
    print("|---|---:|")
    for row in rows:
        if "build_us" in row:
            print(f"| {row['miner']} | {row['build_us']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
