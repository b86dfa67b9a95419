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
