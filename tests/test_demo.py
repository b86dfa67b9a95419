"""`cgwatchdog demo` shows alerts firing, actions and resolves, at a faster pace."""

from __future__ import annotations

import io

from cgwatchdog.demo import run_demo


async def test_demo_fires_acts_and_resolves() -> None:
    out = io.StringIO()
    # 240x: sixty simulated minutes in fifteen seconds.
    summary = await run_demo(15.0, out, speed=240.0)
    text = out.getvalue()
    assert any("DeviceDead on sim-001" in fired for fired in summary.fired), text
    assert any("DeviceDead on sim-001" in done for done in summary.resolved), text
    assert any("verified restart" in action for action in summary.actions), text
    statuses = {body["status"] for body in summary.webhooks}
    assert statuses == {"firing", "resolved"}, text
    # Alertmanager's webhook body: existing receivers work unchanged.
    assert all(body["version"] == "4" for body in summary.webhooks)
    assert "summary" in text.splitlines()[-1]
