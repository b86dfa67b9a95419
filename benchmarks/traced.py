"""Run cgwatchdog and, on SIGUSR1, write what its memory is made of.

    python -X tracemalloc=1 benchmarks/traced.py OUT.json run -c CFG ...
    python benchmarks/traced.py OUT.json run -c CFG ...

``benchmarks/daemon.py --tracemalloc`` runs the daemon the first way and signals it
after the last cycle: what the running daemon holds, by the file that allocated it.
Tracing costs several times the daemon's CPU and adds its own memory (not counted in
the figures), so a traced run's CPU and RSS say nothing; only what is written here does.

``benchmarks/daemon.py --allocator`` runs it the second way, untraced: the resident set
by kind of mapping (``/proc/self/smaps``: the C heap, anonymous mappings, which hold
Python's small-object arenas and large blocks, and files) and what Python's small-object
allocator holds (``sys._debugmallocstats``: its arenas, the bytes in live blocks, the
pools left empty inside arenas that cannot be returned), and glibc's ``mallinfo2``: the C
heap's bytes in use and free.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import runpy
import signal
import site
import sys
import sysconfig
import tempfile
import tracemalloc
from pathlib import Path
from types import FrameType

TOP = 40


def _short(filename: str) -> str:
    """A file's name without the interpreter's or the checkout's prefix."""
    prefixes = [*site.getsitepackages(), sysconfig.get_paths()["stdlib"]]
    prefixes.append(str(Path(__file__).resolve().parent.parent))
    for prefix in sorted(prefixes, key=len, reverse=True):
        if filename.startswith(prefix + "/"):
            return filename[len(prefix) + 1 :]
    return filename


def traced() -> dict[str, object]:
    """The live memory now, by file and by line (``tracemalloc``)."""
    snapshot = tracemalloc.take_snapshot()
    current, peak = tracemalloc.get_traced_memory()

    def rows(key: str) -> list[dict[str, object]]:
        return [
            {"where": _short(str(stat.traceback[0].filename))
             + (f":{stat.traceback[0].lineno}" if key == "lineno" else ""),
             "bytes": stat.size, "count": stat.count}
            for stat in snapshot.statistics(key)[:TOP]
        ]  # fmt: skip

    return {"traced_bytes": current, "traced_peak_bytes": peak,
            "by_file": rows("filename"), "by_line": rows("lineno")}  # fmt: skip


_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
_PYMALLOC = {
    "arenas_bytes": re.compile(r"^\d+ arenas \* \d+ bytes/arena\s+=\s+([\d,]+)"),
    "live_blocks_bytes": re.compile(r"^# bytes in allocated blocks\s+=\s+([\d,]+)"),
    "free_blocks_bytes": re.compile(r"^# bytes in available blocks\s+=\s+([\d,]+)"),
    "empty_pools_bytes": re.compile(r"^\d+ unused pools \* \d+ bytes\s+=\s+([\d,]+)"),
}


def mappings() -> dict[str, int]:
    """Resident bytes by kind of mapping: ``heap`` (the C heap), ``anonymous``, ``files``."""
    kinds = {"heap": 0, "anonymous": 0, "files": 0, "other": 0}
    kind = "other"
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if _MAPPING.match(line):
                fields = line.split(maxsplit=5)
                name = fields[5].strip() if len(fields) > 5 else ""
                if name == "[heap]":
                    kind = "heap"
                elif not name:
                    kind = "anonymous"
                elif name.startswith("/"):
                    kind = "files"
                else:
                    kind = "other"  # the stack, vdso, ...
            elif line.startswith("Rss:"):
                kinds[kind] += int(line.split()[1]) * 1024
    return kinds


def pymalloc() -> dict[str, int]:
    """What Python's small-object allocator holds (parsed from ``_debugmallocstats``)."""
    with tempfile.TemporaryFile("w+") as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    found: dict[str, int] = {}
    for line in text.splitlines():
        for key, pattern in _PYMALLOC.items():
            match = pattern.match(line)
            if match:
                found[key] = int(match[1].replace(",", ""))
    return found


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost",
    )]  # fmt: skip


def c_heap() -> dict[str, int]:
    """glibc's ``mallinfo2()``: the main heap's bytes in use (``uordblks``) and free
    (``fordblks``, which the process keeps unless trimmed), and the bytes of blocks
    mapped on their own (``hblkhd``); empty elsewhere than on glibc."""
    try:
        call = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    call.restype = _Mallinfo2
    info = call()
    return {"in_use": info.uordblks, "free": info.fordblks, "mapped": info.hblkhd}


def allocator() -> dict[str, object]:
    """The resident set by kind of mapping, the small-object allocator's share and the C
    heap's free space."""
    return {"mappings": mappings(), "pymalloc": pymalloc(), "c_heap": c_heap()}


def dump(out: Path) -> None:
    """Write what the memory is made of now to ``out`` (JSON)."""
    document = traced() if tracemalloc.is_tracing() else allocator()
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps(document, indent=1))
    partial.replace(out)


def main() -> None:
    out = Path(sys.argv[1])

    def on_signal(signum: int, frame: FrameType | None) -> None:
        dump(out)

    signal.signal(signal.SIGUSR1, on_signal)
    sys.argv = ["cgwatchdog", *sys.argv[2:]]
    runpy.run_module("cgwatchdog", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
