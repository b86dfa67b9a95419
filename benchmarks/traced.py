"""Run cgwatchdog under ``tracemalloc``; SIGUSR1 writes its live memory by file and line.

    python -X tracemalloc=1 benchmarks/traced.py OUT.json run -c CFG ...

``benchmarks/daemon.py --tracemalloc`` runs the daemon this way and signals it after the
last cycle: what the running daemon holds, by the file that allocated it. Tracing costs
several times the daemon's CPU and adds its own memory (not counted in the figures), so
a traced run's CPU and RSS say nothing; only what is written here does.
"""

from __future__ import annotations

import json
import runpy
import signal
import site
import sys
import sysconfig
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


def dump(out: Path) -> None:
    """Write the live memory now, by file and by line, to ``out`` (JSON)."""
    snapshot = tracemalloc.take_snapshot()
    current, peak = tracemalloc.get_traced_memory()

    def rows(key: str) -> list[dict[str, object]]:
        return [
            {"where": _short(str(stat.traceback[0].filename))
             + (f":{stat.traceback[0].lineno}" if key == "lineno" else ""),
             "bytes": stat.size, "count": stat.count}
            for stat in snapshot.statistics(key)[:TOP]
        ]  # fmt: skip

    document = {"traced_bytes": current, "traced_peak_bytes": peak,
                "by_file": rows("filename"), "by_line": rows("lineno")}  # fmt: skip
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps(document, indent=1))
    partial.replace(out)


def main() -> None:
    if not tracemalloc.is_tracing():
        sys.exit("run with python -X tracemalloc=1")
    out = Path(sys.argv[1])

    def on_signal(signum: int, frame: FrameType | None) -> None:
        dump(out)

    signal.signal(signal.SIGUSR1, on_signal)
    sys.argv = ["cgwatchdog", *sys.argv[2:]]
    runpy.run_module("cgwatchdog", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
