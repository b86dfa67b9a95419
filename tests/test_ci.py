"""CI cannot pass by skipping: with CGW_REQUIRE_REAL=1 a test whose real part is missing
fails, and the skips that remain are listed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pytest_run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CGW_REQUIRE_REAL"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**environ, **env},
    )  # fmt: skip


def test_alertmanager_tests_fail_without_the_binary_when_real_parts_are_required() -> None:
    # The binary gone from the machine (a path where none is), not only from PATH.
    missing = {"CGW_ALERTMANAGER_BIN": "/nonexistent/prometheus-alertmanager"}
    relaxed = pytest_run("tests/test_notify_alertmanager.py", **missing)
    assert relaxed.returncode == 0, relaxed.stdout
    assert "skipped" in relaxed.stdout.splitlines()[-1]
    strict = pytest_run("tests/test_notify_alertmanager.py", CGW_REQUIRE_REAL="1", **missing)
    assert strict.returncode == 1, strict.stdout
    assert "CGW_REQUIRE_REAL=1 and this test would skip" in strict.stdout
    assert "skipped" not in strict.stdout.splitlines()[-1]


def test_remaining_skips_are_listed_with_their_reasons() -> None:
    probe = REPO / "tests" / f"test_zz_probe_{os.getpid()}.py"
    probe.write_text(
        "import pytest\n\n"
        "def test_cannot_stage() -> None:\n"
        "    pytest.skip('cannot make a loopback connect hang here (probe)')\n"
    )
    try:
        result = pytest_run(str(probe), CGW_REQUIRE_REAL="1")
    finally:
        probe.unlink()
    assert result.returncode == 0, result.stdout
    assert "CGW_REQUIRE_REAL=1: 1 skip(s) remain" in result.stdout
    assert "cannot make a loopback connect hang here (probe)" in result.stdout
