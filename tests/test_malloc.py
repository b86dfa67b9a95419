"""The daemon's glibc mmap threshold: fixed where glibc is, the operator's setting wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

GLIBC = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None


def _run(env: dict[str, str]) -> str:
    code = "from cgwatchdog.malloc import keep_large_blocks_unmapped as k; print(k())"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt: this C library is not glibc")
def test_the_threshold_is_set_on_glibc_unless_the_operator_set_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    assert _run(env) == "True"
    assert _run({**env, "MALLOC_MMAP_THRESHOLD_": "65536"}) == "False"


_TRIM = """
from pathlib import Path
from cgwatchdog.malloc import give_back_free_heap, keep_large_blocks_unmapped

def anon_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError("no RssAnon")

keep_large_blocks_unmapped()  # 64 KiB blocks come from the heap, as in the daemon
blocks = [bytearray(b"x" * 65536) for _ in range(400)]  # 25 MiB, every page written
kept = blocks[1::2]
del blocks  # every other block freed: holes inside the heap, which free() keeps
before = anon_kib()
gave = give_back_free_heap()
print(gave, before - anon_kib(), len(kept))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc_trim: this C library is not glibc")
def test_the_free_heap_goes_back_to_the_system() -> None:
    """Blocks freed between live ones leave holes the process keeps resident; after a
    cycle the daemon gives them back (about 12 MiB of holes here)."""
    out = subprocess.run(
        [sys.executable, "-c", _TRIM], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "True" and int(out[1]) > 8 * 1024, out
