"""A receiver kind, a rule type and a webhook format added from test code alone.

Nothing here edits or patches a product file: each extension registers itself the way a
built-in one does (``receiver_kind``, ``rule_type``, ``webhook_format``), and from then
on the config's models, ``check``'s messages, ``test-notify``, the factory and the
pipeline know it. Each fixture removes its registration afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pytest_httpserver import HTTPServer

from cgwatchdog.alerts import Notification, Signal
from cgwatchdog.config import MinerConfig, RuleBase
from cgwatchdog.config.fields import Model, Ratio
from cgwatchdog.config.loader import load_config
from cgwatchdog.errors import ConfigError, NotifyError
from cgwatchdog.history import MinerHistory
from cgwatchdog.notify import (
    RECEIVER_KINDS,
    WEBHOOK_FORMATS,
    Integration,
    IntegrationContext,
    Outbox,
    build_integration,
    receiver_kind,
    send_test,
    webhook_format,
)
from cgwatchdog.notify.render import FormatContext, HttpBody, json_body, title
from cgwatchdog.rules import RULE_TYPES, CompiledRule, RuleEngine, make_signal, rule_type
from cgwatchdog.simulator import FakeClock, Fleet, serve
from cgwatchdog.snapshot import Snapshot, build_snapshot
from cgwatchdog.store import Store
from cgwatchdog.units import format_percent
from cgwatchdog.watchdog import Watchdog

# --------------------------------------------------------------------------- a rule type


class RejectsRule(RuleBase):
    """Rejected shares above a share of all shares answered."""

    type: Literal["too_many_rejects"]
    above: Ratio = 0.02


def eval_rejects(
    rule: CompiledRule[RejectsRule],
    miner: MinerConfig,
    snapshot: Snapshot,
    history: MinerHistory,
    now: float,
) -> list[Signal] | None:
    accepted, rejected = snapshot.accepted, snapshot.rejected
    if accepted is None or rejected is None or accepted + rejected == 0:
        return None
    ratio = rejected / (accepted + rejected)
    if ratio <= rule.config.above:
        return []
    return [make_signal(rule, miner, snapshot.host, f"{format_percent(ratio)} rejected")]


@pytest.fixture
def rejects_rule() -> Iterator[None]:
    rule_type(RejectsRule)(eval_rejects)
    yield
    RULE_TYPES.remove("too_many_rejects")


def summary(accepted: int, rejected: int) -> dict[str, Any]:
    return {
        "summary": {
            "STATUS": [{"STATUS": "S", "Code": 11, "Msg": "Summary"}],
            "SUMMARY": [{"Elapsed": 3600, "MHS 5s": 1e6, "Accepted": accepted,
                         "Rejected": rejected}],
        }
    }  # fmt: skip


def test_a_rule_type_from_test_code_is_configured_checked_and_evaluated(
    rejects_rule: None, tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "miners: [{name: m1, host: 127.0.0.1}]\n"
        "rules:\n  - {name: TooManyRejects, type: too_many_rejects, above: 5%}\n"
    )
    cfg = load_config(config)
    (rule,) = cfg.rules
    assert isinstance(rule, RejectsRule) and rule.above == 0.05
    engine = RuleEngine(cfg.rules, cfg.miners)
    miner = cfg.miners[0]
    fine = build_snapshot(summary(99, 1), name="m1", host=miner.host, port=4028, at=1.0)
    bad = build_snapshot(summary(90, 10), name="m1", host=miner.host, port=4028, at=2.0)
    assert engine.observe([fine], 1.0).signals == []
    (signal,) = engine.observe([bad], 2.0).signals
    assert signal.labels["alertname"] == "TooManyRejects" and signal.value == "10% rejected"

    # check: its keys with "did you mean", and it is listed among the known types.
    config.write_text(
        "rules:\n  - {name: R, type: too_many_rejects, abov: 5%}\n"
        "  - {name: S, type: too_many_reject}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    messages = [str(p) for p in caught.value.problems]
    assert f"{config}:2: rules[0]: unknown key 'abov' (did you mean 'above'?)" in messages
    assert any(
        "unknown rule type 'too_many_reject'" in m and "too_many_rejects" in m for m in messages
    )


def test_a_rule_type_needs_its_own_type_literal() -> None:
    class Nameless(RuleBase):
        pass

    with pytest.raises(TypeError, match="Literal"):
        rule_type(Nameless)(eval_rejects)
    with pytest.raises(ValueError, match="already registered"):
        rule_type(RULE_TYPES["threshold"].config)(eval_rejects)


class SlowRule(RuleBase):
    """Hashrate below half its 30-minute median, past a 5-minute startup grace."""

    type: Literal["slow_hashrate"]


def eval_slow(
    rule: CompiledRule[SlowRule],
    miner: MinerConfig,
    snapshot: Snapshot,
    history: MinerHistory,
    now: float,
) -> list[Signal] | None:
    median = history.median_hashrate(now, 1800.0, startup_grace_s=300.0)
    if median is None or snapshot.hashrate_hs is None:
        return None
    slow = snapshot.hashrate_hs < median.value / 2
    return [make_signal(rule, miner, snapshot.host, "slow")] if slow else []


def test_a_rule_type_that_does_not_name_its_startup_grace_is_served_within_its_lookback() -> None:
    """The history keeps samples' Elapsed only below the rules' startup graces; a rule
    type that does not say its own gets Elapsed as far back as it looks."""
    rule_type(SlowRule, lookback_s=lambda config, miner: 1800.0)(eval_slow)
    try:
        rule = RULE_TYPES["slow_hashrate"].config.model_validate(
            {"name": "Slow", "type": "slow_hashrate"}
        )
        miner = MinerConfig(name="m1", host="127.0.0.1")
        engine = RuleEngine([rule], [miner])

        def answer(at: float, elapsed: float, mhs: float) -> Snapshot:
            replies = {"summary": {"STATUS": [{"STATUS": "S", "Code": 11, "Msg": "Summary"}],
                                   "SUMMARY": [{"Elapsed": elapsed, "MHS 5s": mhs}]}}  # fmt: skip
            return build_snapshot(replies, name="m1", host="127.0.0.1", port=4028, at=at)

        # Restarted at 0: 10 minutes ramping up at a tenth, then 20 at full speed.
        for k in range(60):
            at = 30.0 * k + 5
            engine.observe([answer(at, at, 1e5 if at < 600 else 1e6)], at)
        history = engine.history["m1"]
        assert history.elapsed_kept_s == 1800.0
        # The 10 samples of the first 5 minutes are left out of the median, as they
        # would be with Elapsed kept for every sample.
        median = history.median_hashrate(1775.0, 1800.0, startup_grace_s=300.0)
        assert median is not None and median.samples == 50
        assert median.value == pytest.approx(1e12, rel=1e-6)
    finally:
        RULE_TYPES.remove("slow_hashrate")


# --------------------------------------------------------------------------- a receiver kind


class PagerConfig(Model):
    """Pages a phone number."""

    number: str
    prefix: str = "cgwatchdog"


@pytest.fixture
def pager() -> Iterator[list[str]]:
    pages: list[str] = []

    @receiver_kind("pager", PagerConfig)
    class PagerIntegration(Integration):
        def __init__(self, name: str, config: PagerConfig, context: IntegrationContext) -> None:
            super().__init__(name, redactor=context.redactor)
            self.config = config

        def notify(self, notification: Notification) -> str:
            if self.config.number == "busy":
                raise NotifyError("the line is busy", recoverable=True)
            pages.append(f"{self.config.number}: {self.config.prefix} {title(notification)}")
            return "paged"

    yield pages
    RECEIVER_KINDS.remove("pager")


def test_a_receiver_kind_from_test_code_is_configured_and_checked(
    pager: list[str], tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("receivers: [{name: phone, pager: {number: '+100'}}]\n")
    cfg = load_config(config)
    assert cfg.receivers[0].kind == "pager"
    assert cfg.receivers[0].settings == PagerConfig(number="+100")
    (result,) = send_test(cfg)
    assert result.ok and result.message == "paged"
    assert pager == ["+100: cgwatchdog [FIRING:1] CgwatchdogTest test-notify"]

    config.write_text("receivers:\n  - {name: phone, pager: {numbr: '+100'}}\n  - {name: none}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    messages = [str(p) for p in caught.value.problems]
    assert (
        f"{config}:2: receivers[0].pager: unknown key 'numbr' (did you mean 'number'?)" in messages
    )
    assert any(
        "receivers[1]: a receiver takes exactly one of" in m and "pager" in m for m in messages
    )


async def test_a_receiver_kind_from_test_code_gets_the_pipelines_notifications(
    pager: list[str], tmp_path: Path
) -> None:
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet.build(
        1, "device_dead", listen="127.0.0.1", base_port=0, clock=clock,
        scenario_options={"fail_after_s": 0.0},
    )  # fmt: skip
    async with serve(fleet):
        member = fleet.members[0]
        config = tmp_path / "c.yaml"
        config.write_text(
            f"poll: {{interval: 30s, timeout: 2s, connect_timeout: 1s}}\n"
            f"miners: [{{name: {member.name}, host: {member.host}, port: {member.port}}}]\n"
            "rules: [{name: DeviceDead, type: device_status, status: [Dead]}]\n"
            "receivers: [{name: phone, pager: {number: '+100'}}]\n"
            "route: {receiver: phone, group_wait: 0s}\n"
        )
        cfg = load_config(config)
        store = Store(tmp_path / "state.sqlite")
        outbox = Outbox(store, {r.name: build_integration(r) for r in cfg.receivers}, clock=clock)
        watchdog = Watchdog(cfg, store=store, outbox=outbox, clock=clock)
        try:
            for _ in range(3):
                await fleet.sync()
                await watchdog.cycle()
                outbox.deliver_due(clock(), wait_s=5.0)
                clock.advance(30.0)
        finally:
            outbox.close()
            store.close()
    assert pager == [f"+100: cgwatchdog [FIRING:1] DeviceDead {member.name}"]


# --------------------------------------------------------------------------- a webhook format


@pytest.fixture
def shout_format() -> Iterator[None]:
    @webhook_format("shout")
    def render(notification: Notification, context: FormatContext) -> HttpBody:
        return json_body({"SHOUT": title(notification).upper(), "to": context.receiver})

    yield
    WEBHOOK_FORMATS.remove("shout")


def test_a_webhook_format_from_test_code_is_a_format_choice(
    shout_format: None, httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"receivers: [{{name: loud, webhook: {{url: '{httpserver.url_for('/hook')}', "
        "format: shout}}]\n"
    )
    (result,) = send_test(load_config(config))
    assert result.ok, result.message
    ((request, _),) = httpserver.log
    assert json.loads(request.data) == {
        "SHOUT": "[FIRING:1] CGWATCHDOGTEST TEST-NOTIFY", "to": "loud",
    }  # fmt: skip

    config.write_text(
        f"receivers: [{{name: loud, webhook: {{url: '{httpserver.url_for('/hook')}', "
        "format: shot}}]\n"
    )
    with pytest.raises(ConfigError, match=r"format: must be one of .*'shout'"):
        load_config(config)


# -- built-ins registered on first use ------------------------------------------------------

_FIRST_USE = """
import sys
from pathlib import Path
from cgwatchdog.config.loader import load_config
import cgwatchdog.watchdog  # what a one-shot poll imports

config = load_config(Path(sys.argv[1]))
assert not config.receivers
loaded = sorted(m for m in sys.modules if m.startswith("cgwatchdog.notify.receivers")
                or m.startswith("cgwatchdog.notify.formats"))
assert loaded == [], loaded  # a config without receivers never imports them

from cgwatchdog.notify import RECEIVER_KINDS, WEBHOOK_FORMATS
print(",".join(RECEIVER_KINDS.names()))
print(",".join(WEBHOOK_FORMATS.names()))
with_receivers = load_config(Path(sys.argv[2]))
print(with_receivers.receivers[0].kind)
"""


def test_the_built_in_receivers_and_formats_register_on_first_use(tmp_path: Path) -> None:
    """A one-shot poll sends nothing, so importing the watchdog imports no receiver kind
    or format (their modules and the email package they need: part of its start-up);
    the first look at either registry finds every built-in, in a fresh interpreter."""
    import subprocess
    import sys

    plain = tmp_path / "plain.yaml"
    plain.write_text("miners:\n  - {name: a, host: 127.0.0.1}\n")
    chat = tmp_path / "chat.yaml"
    chat.write_text(
        "miners:\n  - {name: a, host: 127.0.0.1}\n"
        "receivers:\n  - name: chat\n    webhook: {url: 'http://127.0.0.1:9/hook', format: slack}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_USE, str(plain), str(chat)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    kinds, formats, chosen = done.stdout.split()
    assert {"alertmanager", "apprise", "email", "telegram", "webhook"} <= set(kinds.split(","))
    assert {"slack", "discord", "teams", "custom", "alertmanager"} <= set(formats.split(","))
    assert chosen == "webhook"
