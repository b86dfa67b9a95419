"""`cgwatchdog demo` shows alerts firing, actions and resolves, at a faster pace."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from cgwatchdog.demo import run_demo

ROOT = Path(__file__).resolve().parents[1]


async def test_demo_fires_acts_and_resolves() -> None:
    out = io.StringIO()
    # 240x: sixty farm minutes in fifteen seconds.
    summary = await run_demo(15.0, out, speed=240.0)
    text = out.getvalue()
    assert any("DeviceDead on sim-001" in fired for fired in summary.fired), text
    assert any("DeviceDead on sim-001" in done for done in summary.resolved), text
    # sim-001 is a stock Antminer: repaired through its web UI, not the cgminer API.
    assert any(
        "verified restart" in action and action.startswith("sim-001") for action in summary.actions
    ), text
    assert any("set_miner_conf.cgi" in action for action in summary.actions), text
    # A pending alert that goes away says so, and a verified repair explains why its
    # alert still fires for a while.
    assert "cleared before firing" in text
    assert "resolves once the miner has run restart_grace" in text
    statuses = {body["status"] for body in summary.webhooks}
    assert statuses == {"firing", "resolved"}, text
    # Alertmanager's webhook body: existing receivers work unchanged.
    assert all(body["version"] == "4" for body in summary.webhooks)
    assert "times are farm time" in text
    assert summary.still_firing and "\x1b[" not in text  # piped: plain lines only
    assert any("]   still firing: " in line for line in text.splitlines())


def test_a_short_demo_exits_0_and_says_what_it_did_not_reach() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cgwatchdog", "demo", "--duration", "2"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "summary" in lines[-2] or "summary" in lines[-1]
    assert "not reached in this run: sim-001 device_dead (at 3m)" in result.stdout
    assert "run with --duration" in lines[-1]
