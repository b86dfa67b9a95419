"""Tests for cgwatchdog/config/: the YAML contract of the configuration and rule files."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cgwatchdog.config import (
    MAX_HOSTS_PER_RANGE,
    Config,
    MinerConfig,
    RouteConfig,
    Shard,
    expand_hosts,
    parse_duration,
    parse_hashrate,
    parse_ratio,
    parse_shard,
)
from cgwatchdog.config.loader import default_rules_path, load_config, load_rule_file
from cgwatchdog.errors import ConfigError
from cgwatchdog.notify import receiver_model
from cgwatchdog.notify.receivers.webhook import WebhookConfig
from cgwatchdog.rules.types.device_status import DeviceStatusRule
from cgwatchdog.rules.types.hardware_errors import HardwareErrorsRule
from cgwatchdog.rules.types.hashrate_drop import HashrateDropRule
from cgwatchdog.rules.types.pool_stale import PoolStaleRule
from cgwatchdog.rules.types.threshold import ThresholdRule
from cgwatchdog.rules.types.unreachable import UnreachableRule

REPO = Path(__file__).resolve().parent.parent
SLACK_URL = "https://hooks.slack.example.com/services/T0001/B0002/s3cr3tWebhookToken"
SMTP_PASSWORD = "correct-horse-battery-staple"

# DESIGN.md §4, verbatim except for the two absolute paths, which point into tmp_path.
DESIGN_CONFIG = """\
poll:
  interval: 30s          # durations: 500ms, 30s, 5m, 4h, 1d
  timeout: 5s
  concurrency: 512
state_dir: /var/lib/cgwatchdog
http:
  listen: 127.0.0.1:9841 # /metrics, /healthz, /api/alerts
miners:
  - name: rack1-s9-01
    host: 10.0.0.21
    port: 4028
    labels: {site: north, model: s9}
    expected_hashrate: 13.5 TH/s
  - hosts: 10.0.1.1-10.0.1.254   # ranges and CIDRs expand to many miners
    labels: {site: south}
rule_files: [@DIR@/rules/*.yaml]
receivers:
  - name: chat
    webhook: {url: "${SLACK_WEBHOOK_URL}", format: slack}
  - name: mail
    email: {smtp: smtp.example.org:587, starttls: true, username: alerts,
            password_file: @DIR@/smtp-password, from: alerts@example.org,
            to: [ops@example.org]}
  - name: am
    alertmanager: {url: http://127.0.0.1:9093}
route:
  receiver: chat
  group_by: [alertname, site]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - match: {severity: critical}
      receiver: mail
      continue: true
actions:                 # safeguards for every remediation
  dry_run: false
  cooldown: 15m          # per miner, between two actions
  max_per_miner_per_hour: 3
  max_in_flight: 5       # fleet-wide
  fleet_incident_share: 30%   # same alert on this share of the fleet: notify once, act never
  restart_grace: 5m      # after a restart the miner's alerts hold their state
silences:
  - match: {miner: rack1-s9-01}
    until: 2026-12-01T00:00:00Z
    comment: board swap
"""

DESIGN_RULES = """\
rules:
  - name: HashrateDrop
    type: hashrate_drop
    below: 80%            # of expected_hashrate, else of the median of the miner's own last hour
    baseline: 1h          # (a median, not the last sample, so one bad reading does not fire)
    for: 10m
    severity: warning
    actions: [{do: restart, after: 20m}]
  - name: DeviceDead
    type: device_status
    status: [Dead, Sick, NoStart]
    for: 2m
    severity: critical
    actions:              # an escalation ladder, tried in order until verified
      - do: restart
        verify_within: 3m
      - do: exec
        argv: [/usr/local/bin/pdu-cycle, "{{ labels.miner }}"]
        timeout: 30s
  - name: HardwareErrorsRising
    type: hardware_errors
    above: 1%             # share of hardware errors among work done over the window
    window: 15m
    severity: warning
  - name: PoolStale
    type: pool_stale
    no_accepted_share_for: 10m   # also fires when the active pool is not Alive
    stale_above: 5%
    severity: critical
    actions: [{do: switchpool}]
  - name: MinerUnreachable
    type: unreachable
    for: 3m
    severity: critical
  - name: TooHot
    type: threshold       # any normalized field, e.g. max device temperature
    field: temperature.max
    above: 85
    for: 1m
"""


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return path


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    """The 1-based line holding the nth occurrence of needle: assertions name the line."""
    seen = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            seen += 1
            if seen == nth:
                return number
    raise AssertionError(f"{needle!r} not in {path}")


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return [str(p) for p in caught.value.problems]


def only_problem(path: Path, environ: dict[str, str] | None = None) -> str:
    found = problems_of(path, environ)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def design(tmp_path: Path) -> Path:
    write(tmp_path / "rules" / "core.yaml", DESIGN_RULES)
    write(tmp_path / "smtp-password", SMTP_PASSWORD + "\n")
    return write(tmp_path / "config.yaml", DESIGN_CONFIG.replace("@DIR@", str(tmp_path)))


# ------------------------------------------------------------------ the design example


def test_design_example_config_loads_into_typed_values(design: Path, tmp_path: Path) -> None:
    cfg = load_config(design, environ={"SLACK_WEBHOOK_URL": SLACK_URL})

    assert (cfg.poll.interval_s, cfg.poll.timeout_s, cfg.poll.concurrency) == (30.0, 5.0, 512)
    assert (cfg.poll.connect_timeout_s, cfg.poll.jitter) == (1.0, 0.1)
    assert cfg.state_dir == Path("/var/lib/cgwatchdog")
    assert (cfg.http.host, cfg.http.port) == ("127.0.0.1", 9841)

    assert len(cfg.miners) == 1 + 254
    assert cfg.miners[0] == MinerConfig(
        name="rack1-s9-01",
        host="10.0.0.21",
        port=4028,
        labels={"site": "north", "model": "s9"},
        expected_hashrate_hs=13.5e12,
    )
    south = cfg.miners[1:]
    assert [m.name for m in south[:2]] == ["10.0.1.1", "10.0.1.2"]
    assert south[-1].host == "10.0.1.254"
    assert all(m.labels == {"site": "south"} and m.expected_hashrate_hs is None for m in south)

    chat, mail, am = cfg.receivers
    assert chat.kind == "webhook" and chat.webhook is not None
    assert chat.webhook.format == "slack"
    assert chat.webhook.url.get_secret_value() == SLACK_URL
    assert chat.send_resolved is True
    assert mail.email is not None
    assert (mail.email.smtp_host, mail.email.smtp_port) == ("smtp.example.org", 587)
    assert mail.email.starttls and not mail.email.tls
    assert mail.email.password is not None
    assert mail.email.password.get_secret_value() == SMTP_PASSWORD
    assert (mail.email.from_, mail.email.to) == ("alerts@example.org", ("ops@example.org",))
    assert am.alertmanager is not None and am.alertmanager.urls == ("http://127.0.0.1:9093",)
    assert cfg.receiver("am") is am

    assert cfg.route == RouteConfig(
        receiver="chat",
        group_by=("alertname", "site"),
        group_wait_s=30,
        group_interval_s=300,
        repeat_interval_s=4 * 3600,
        routes=(
            RouteConfig(
                receiver="mail",
                group_by=("alertname", "site"),
                match={"severity": "critical"},
                continue_=True,
            ),
        ),
    )

    a = cfg.actions
    assert (a.dry_run, a.cooldown_s, a.max_per_miner_per_hour, a.max_in_flight) == (
        False,
        900,
        3,
        5,
    )
    assert (a.fleet_incident_share, a.restart_grace_s) == (0.3, 300)

    (silence,) = cfg.silences
    assert silence.match == {"miner": "rack1-s9-01"}
    assert silence.until == datetime(2026, 12, 1, tzinfo=UTC)
    assert silence.starts is None and silence.comment == "board swap"
    assert silence.matches({"miner": "rack1-s9-01", "alertname": "X"})

    assert cfg.rule_files == (tmp_path / "rules" / "core.yaml",)
    assert [r.name for r in cfg.rules] == [
        "HashrateDrop", "DeviceDead", "HardwareErrorsRising", "PoolStale", "MinerUnreachable", "TooHot",
    ]  # fmt: skip
    assert cfg.cluster.shard == Shard(1, 1) and cfg.heartbeat is None


def test_design_example_rules_load_into_rule_classes(design: Path, tmp_path: Path) -> None:
    drop, dead, hw, pool, unreachable, hot = load_rule_file(tmp_path / "rules" / "core.yaml")

    assert isinstance(drop, HashrateDropRule)
    assert (drop.below, drop.baseline_s, drop.startup_grace_s, drop.for_s) == (0.8, 3600, 600, 600)
    assert drop.severity == "warning"
    assert [(a.do, a.after_s) for a in drop.actions] == [("restart", 1200)]

    assert isinstance(dead, DeviceStatusRule)
    assert dead.status == ("Dead", "Sick", "NoStart") and dead.for_s == 120
    restart, power = dead.actions
    assert (restart.do, restart.verify_within_s, restart.argv) == ("restart", 180, None)
    assert power.do == "exec" and power.timeout_s == 30
    assert power.argv == ("/usr/local/bin/pdu-cycle", "{{ labels.miner }}")

    assert isinstance(hw, HardwareErrorsRule)
    assert (hw.above, hw.window_s) == (0.01, 900)

    assert isinstance(pool, PoolStaleRule)
    assert (pool.no_accepted_share_for_s, pool.stale_above, pool.severity) == (
        600,
        0.05,
        "critical",
    )
    assert [a.do for a in pool.actions] == ["switchpool"] and pool.actions[0].pool is None

    assert isinstance(unreachable, UnreachableRule) and unreachable.for_s == 180

    assert isinstance(hot, ThresholdRule)
    assert (hot.field, hot.above, hot.below, hot.for_s, hot.severity) == (
        "temperature.max", 85, None, 60, "warning",
    )  # fmt: skip
    assert hot.keep_firing_for_s == 0 and hot.match == {} and hot.labels == {}


def test_rule_defaults_when_only_name_and_type_are_given(tmp_path: Path) -> None:
    rules = write(
        tmp_path / "r.yaml",
        """\
        rules:
          - {name: A, type: hashrate_drop}
          - {name: B, type: device_status}
          - {name: C, type: hardware_errors}
          - {name: D, type: pool_stale}
          - {name: E, type: unreachable}
        """,
    )
    a, b, c, d, e = load_rule_file(rules)
    assert isinstance(a, HashrateDropRule) and (a.below, a.baseline_s, a.startup_grace_s) == (
        0.8,
        3600,
        600,
    )
    assert isinstance(b, DeviceStatusRule) and b.status == ("Dead", "Sick", "NoStart")
    assert isinstance(c, HardwareErrorsRule) and c.window_s == 900
    assert isinstance(d, PoolStaleRule) and d.no_accepted_share_for_s == 600
    assert isinstance(e, UnreachableRule) and e.for_s == 180
    assert all(r.severity == "warning" and r.for_s in (0, 180) for r in (a, b, c, d, e))


def test_rule_labels_annotations_match_and_action_options(tmp_path: Path) -> None:
    rules = write(
        tmp_path / "r.yaml",
        """\
        rules:
          - name: Cool
            type: threshold
            field: hashrate
            below: 10 TH/s
            above: 200 TH/s
            keep_firing_for: 2m
            labels: {team: ops, rack: 07}
            annotations: {summary: "{{ labels.miner }} at {{ value }}"}
            match: {site: north}
            match_re: {model: "s9|s19.*"}
            actions:
              - {do: switchpool, pool: 1, dry_run: true}
              - {do: disable}
        """,
    )
    (rule,) = load_rule_file(rules)
    assert isinstance(rule, ThresholdRule)
    assert (rule.below, rule.above, rule.keep_firing_for_s) == (10e12, 200e12, 120)
    assert rule.labels == {"team": "ops", "rack": "7"}  # YAML reads 07 as a number
    assert rule.annotations == {"summary": "{{ labels.miner }} at {{ value }}"}
    assert rule.match_re == {"model": "s9|s19.*"}  # as written; matched anchored
    assert rule.selects({"site": "north", "model": "s19j"})
    assert not rule.selects({"site": "north", "model": "xs9"})  # anchored like Alertmanager
    assert not rule.selects({"site": "south", "model": "s9"})
    switch, disable = rule.actions
    assert (switch.pool, switch.dry_run, disable.do, disable.dry_run) == (1, True, "disable", None)


# ---------------------------------------------------------------------- unit parsers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5), ("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400), ("1w", 604800),
        ("1h30m", 5400), ("1h 30m", 5400), ("1.5h", 5400), ("2m30s500ms", 150.5),
        (" 10m ", 600), ("45", 45), ("0", 0), (90, 90), (2.5, 2.5), ("0.25", 0.25),
    ],
)  # fmt: skip
def test_parse_duration_accepts(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad", ["", "5x", "m", "1h30", "-5s", "-3", "5 minutes", "inf", "nan", "1M", True, None, [1]]
)
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)  # type: ignore[arg-type]


@given(
    st.integers(0, 30),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
)
def test_parse_duration_sums_every_part(d: int, h: int, m: int, s: int, ms: int) -> None:
    text = f"{d}d{h}h{m}m{s}s{ms}ms"
    assert parse_duration(text) == pytest.approx(d * 86400 + h * 3600 + m * 60 + s + ms / 1000)


@pytest.mark.parametrize(
    ("text", "hs"),
    [
        ("13.5 TH/s", 13.5e12), ("90TH", 90e12), ("500 GH/s", 500e9), ("3.2 MH/s", 3.2e6),
        ("1 PH/s", 1e15), ("2EH/s", 2e18), ("12 kH/s", 12e3), ("7 H/s", 7), ("110 th/s", 110e12),
        ("95Th", 95e12), ("14 TH", 14e12), ("1e12", 1e12), ("250", 250), (13_500, 13_500), (1.5e12, 1.5e12),
        ("100 GHps", 100e9),
    ],
)  # fmt: skip
def test_parse_hashrate_accepts(text: str | float, hs: float) -> None:
    assert parse_hashrate(text) == pytest.approx(hs)


@pytest.mark.parametrize(
    "bad", ["", "fast", "13.5 TB/s", "TH/s", "-1 TH/s", "13,5 TH/s", "1 XH/s", False, None]
)
def test_parse_hashrate_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="hashrate"):
        parse_hashrate(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "ratio"),
    [
        ("80%", 0.8),
        ("0.5%", 0.005),
        ("100%", 1.0),
        ("0%", 0.0),
        (" 30 % ", 0.3),
        (0.8, 0.8),
        ("0.25", 0.25),
        (1, 1.0),
        (0, 0.0),
    ],
)
def test_parse_ratio_accepts(text: str | float, ratio: float) -> None:
    assert parse_ratio(text) == pytest.approx(ratio)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("150%", "more than 100%"), (80, "write 80% if you mean a percentage"), ("1.5", "more than 100%"),
        ("-5%", "between 0% and 100%"), ("many", "not a ratio"), ("%", "not a ratio"), (True, "percentage"),
    ],
)  # fmt: skip
def test_parse_ratio_rejects(bad: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_ratio(bad)  # type: ignore[arg-type]


def test_parse_shard() -> None:
    assert parse_shard("1/4") == Shard(1, 4)
    assert parse_shard("2-of-2") == Shard(2, 2)  # the systemd instance name form
    assert str(Shard(3, 8)) == "3/8"
    for bad in ("0/4", "5/4", "1/0", "a/b", "1"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


# ------------------------------------------------------------------- hosts and miners


def test_expand_hosts_ranges_and_networks() -> None:
    assert expand_hosts("10.0.1.1-10.0.1.3") == ["10.0.1.1", "10.0.1.2", "10.0.1.3"]
    assert expand_hosts("10.0.1.250-254") == [f"10.0.1.{n}" for n in range(250, 255)]
    assert expand_hosts("10.0.1.255-10.0.2.1") == ["10.0.1.255", "10.0.2.0", "10.0.2.1"]
    hosts = expand_hosts("10.0.2.0/24")
    assert len(hosts) == 254 and hosts[0] == "10.0.2.1" and hosts[-1] == "10.0.2.254"
    assert expand_hosts("10.0.3.0/30") == ["10.0.3.1", "10.0.3.2"]
    assert expand_hosts("10.0.3.4/31") == ["10.0.3.4", "10.0.3.5"]
    assert expand_hosts("10.0.3.9/32") == ["10.0.3.9"]
    assert len(expand_hosts("10.4.0.0/16")) == 65_534
    assert expand_hosts("2001:db8::1-2001:db8::3") == ["2001:db8::1", "2001:db8::2", "2001:db8::3"]
    assert expand_hosts("2001:db8::/126") == ["2001:db8::1", "2001:db8::2", "2001:db8::3"]
    assert expand_hosts("miner-7.example.net") == ["miner-7.example.net"]
    assert expand_hosts("10.9.9.9") == ["10.9.9.9"]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("10.0.0.0/8", "expands to 16,777,214 hosts"),
        ("10.0.0.0-10.1.0.0", "expands to 65,537 hosts"),
        ("10.0.2.5/24", "did you mean 10.0.2.0/24"),
        ("10.0.1.9-3", "ends before it starts"),
        ("10.0.1.1-300", "not a range"),
        ("10.0.1.1-2001:db8::1", "mixes IPv4 and IPv6"),
        ("10.0.0.0/33", "not a network"),
        ("10.0.0.300", "not a host name or IP address"),
        ("bad host", "not a host name or IP address"),
    ],
)
def test_expand_hosts_rejects(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        expand_hosts(bad)


def test_range_cap_is_exactly_the_documented_limit() -> None:
    assert MAX_HOSTS_PER_RANGE == 65_536
    assert len(expand_hosts("10.0.0.0-10.0.255.255")) == 65_536


def test_miner_entries_expand_with_names_ports_and_lists(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        """\
        miners:
          - {host: 10.0.0.5}
          - {host: 10.0.0.5, port: 4029}
          - {host: "2001:db8::5", port: 4030}
          - hosts: 10.0.1.1-3
            name: "south-{index:03d}"
            labels: {site: south}
            expected_hashrate: 95 TH/s
          - hosts: [10.0.2.0/30, bench.example.net]
            name: "west-{host}-{port}"
            port: 4100
          - hosts: [10.0.3.7]
            name: lonely
        """,
    )
    cfg = load_config(config)
    assert [(m.name, m.host, m.port) for m in cfg.miners] == [
        ("10.0.0.5", "10.0.0.5", 4028),
        ("10.0.0.5:4029", "10.0.0.5", 4029),
        ("[2001:db8::5]:4030", "2001:db8::5", 4030),
        ("south-001", "10.0.1.1", 4028),
        ("south-002", "10.0.1.2", 4028),
        ("south-003", "10.0.1.3", 4028),
        ("west-10.0.2.1-4100", "10.0.2.1", 4100),
        ("west-10.0.2.2-4100", "10.0.2.2", 4100),
        ("west-bench.example.net-4100", "bench.example.net", 4100),
        ("lonely", "10.0.3.7", 4028),
    ]
    assert cfg.miners[3].expected_hashrate_hs == 95e12 and cfg.miners[3].labels == {"site": "south"}


def test_miner_problems_point_at_their_entries(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        """\
        miners:
          - name: a
            host: 10.0.0.1
          - name: a
            host: 10.0.0.2
          - name: b
            host: 10.0.0.1
          - hosts: 10.0.0.0/8
          - hosts: 10.0.5.1-9
            name: same
          - hosts: 10.0.6.1-2
            name: "x-{ip}"
          - host: 10.0.7.1-20
          - {host: 10.0.8.1, hosts: 10.0.8.2}
          - {host: 10.0.9.1, labels: {miner: x}}
        """,
    )
    f = str(config)
    assert problems_of(config) == [
        f"{f}:{line_of(config, 'name: a', 2)}: miners[1].name: miner name 'a' is already used (line 2)",
        f"{f}:{line_of(config, 'name: b')}: miners[2].name: 10.0.0.1:4028 is already listed as miner 'a'",
        f"{f}:{line_of(config, '/8')}: miners[3].hosts: '10.0.0.0/8' expands to 16,777,214 hosts; "
        f"one entry may expand to at most 65,536: split it",
        f"{f}:{line_of(config, 'name: same')}: miners[4].name: 'same' would name 9 miners alike; "
        "add {host} or {index}",
        f"{f}:{line_of(config, '10.0.6.1-2')}: miners[5]: name template uses {{ip}}; "
        "it may use {host}, {port} and {index}",
        f"{f}:{line_of(config, '10.0.7.1-20')}: miners[6].host: '10.0.7.1-20' is a range: "
        "list it under hosts:, host: takes one address",
        f"{f}:{line_of(config, '10.0.8.1')}: miners[7]: a miner takes exactly one of host, hosts "
        "(found host and hosts)",
        f"{f}:{line_of(config, '10.0.9.1')}: miners[8].labels: label 'miner' is set by cgwatchdog "
        "on every alert; pick another name",
    ]


# ------------------------------------------------------------------------------ route


def test_route_children_inherit_unset_values_like_alertmanager(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        """\
        receivers:
          - {name: chat, webhook: {url: "http://127.0.0.1:5001/hook"}}
          - {name: pager, webhook: {url: "http://127.0.0.1:5002/hook"}}
          - {name: mail, webhook: {url: "http://127.0.0.1:5003/hook"}}
        route:
          receiver: chat
          group_by: [alertname]
          repeat_interval: 2h
          routes:
            - match: {severity: critical}
              receiver: pager
              group_wait: 10s
              routes:
                - match: {site: north}
                  group_by: [alertname, miner]
                  continue: true
                - match_re: {site: "north|south"}
                  receiver: mail
            - match: {team: ops}
        """,
    )
    route = load_config(config).route
    assert route is not None
    assert (route.receiver, route.group_by, route.group_wait_s, route.group_interval_s, route.repeat_interval_s) == (
        "chat", ("alertname",), 30, 300, 7200,
    )  # fmt: skip
    pager, ops = route.routes
    assert (pager.receiver, pager.group_by, pager.group_wait_s, pager.repeat_interval_s) == (
        "pager", ("alertname",), 10, 7200,
    )  # fmt: skip
    north, both = pager.routes
    assert (north.receiver, north.group_by, north.group_wait_s, north.continue_) == (
        "pager", ("alertname", "miner"), 10, True,
    )  # fmt: skip
    assert (both.receiver, both.group_by, both.group_wait_s) == ("mail", ("alertname",), 10)
    assert (ops.receiver, ops.group_wait_s, ops.continue_) == ("chat", 30, False)

    assert pager.matches({"severity": "critical"}) and not pager.matches({"severity": "info"})
    assert both.matches({"site": "south"}) and not both.matches({"site": "southeast"})


def test_single_receiver_needs_no_route_but_several_do(tmp_path: Path) -> None:
    one = write(
        tmp_path / "one.yaml", 'receivers: [{name: chat, webhook: {url: "http://127.0.0.1:1/"}}]\n'
    )
    cfg = load_config(one)
    assert cfg.route == RouteConfig(receiver="chat")
    two = write(
        tmp_path / "two.yaml",
        """\
        receivers:
          - {name: chat, webhook: {url: "http://127.0.0.1:1/"}}
          - {name: mail, webhook: {url: "http://127.0.0.1:2/"}}
        """,
    )
    assert (
        only_problem(two)
        == f"{two}:1: receivers: a route: is needed to choose among several receivers"
    )


def test_route_and_cluster_name_receivers_that_exist(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        """\
        receivers:
          - {name: chat, webhook: {url: "http://127.0.0.1:1/"}}
          - {name: chat, webhook: {url: "http://127.0.0.1:2/"}}
        route:
          receiver: chat
          routes:
            - receiver: pager
            - match: {x: y}
              routes: [{receiver: ghost}]
        cluster: {shard: 2/3, replica: b, alertmanager: chat}
        """,
    )
    f = str(config)
    assert problems_of(config) == [
        f"{f}:3: receivers[1].name: receiver name 'chat' is already used by receivers[0]",
        f"{f}:7: route.routes[0].receiver: unknown receiver 'pager' (defined: chat)",
        f"{f}:9: route.routes[1].routes[0].receiver: unknown receiver 'ghost' (defined: chat)",
        f"{f}:10: cluster.alertmanager: receiver 'chat' is not an alertmanager receiver",
    ]


def test_cluster_and_heartbeat(tmp_path: Path) -> None:
    write(tmp_path / "hb", "https://hc-ping.example.com/4d0c-secret-uuid\n")
    config = write(
        tmp_path / "c.yaml",
        """\
        receivers:
          - {name: am, alertmanager: {urls: ["http://am1.example.net:9093", "http://am2.example.net:9093"]}}
        cluster: {shard: 2/4, replica: a, alertmanager: am}
        heartbeat: {url_file: hb, interval: 1m}
        """,
    )
    cfg = load_config(config)
    assert (cfg.cluster.shard, cfg.cluster.replica, cfg.cluster.alertmanager) == (
        Shard(2, 4),
        "a",
        "am",
    )
    assert cfg.heartbeat is not None
    assert cfg.heartbeat.url.get_secret_value() == "https://hc-ping.example.com/4d0c-secret-uuid"
    assert cfg.heartbeat.interval_s == 60
    # No rules given: the packaged ones are used, and the loader says so.
    assert [r.name for r in cfg.rules][:2] == ["HashrateDrop", "DeviceDead"]
    assert len(cfg.notes) == 1 and "the packaged rules are used" in cfg.notes[0]


# ---------------------------------------------------------------------- bad files


def test_wrong_types_unknown_keys_and_bad_durations_are_all_reported(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        """\
        poll:
          intervall: 30s
          timeout: 5x
          concurrency: many
        http: {listen: "127.0.0.1"}
        actions:
          dry_run: maybe
          fleet_incident_share: 30
        recievers: []
        state_dir: [a]
        silences:
          - {until: 2026-12-01}
          - match: {miner: a}
            until: next week
        """,
    )
    f = str(config)
    assert problems_of(config) == [
        f"{f}:2: poll: unknown key 'intervall' (did you mean 'interval'?)",
        f"{f}:3: poll.timeout: '5x' is not a duration; write e.g. 500ms, 30s, 5m, 4h, 1d or 1h30m",
        f"{f}:4: poll.concurrency: expected a whole number, found text",
        f"{f}:5: http.listen: '127.0.0.1' lacks a port; write host:port",
        f"{f}:7: actions.dry_run: expected true or false, found text",
        f"{f}:8: actions.fleet_incident_share: 30 is more than 100%; write 30% if you mean a percentage",
        f"{f}:9: unknown key 'recievers' (did you mean 'receivers'?)",
        f"{f}:10: state_dir: expected a file system path, found a list",
        f"{f}:12: silences[0]: a silence needs match or match_re (it would mute every alert)",
        f"{f}:14: silences[1].until: expected a date and time such as 2026-12-01T00:00:00Z, found text",
    ]


def test_rule_problems_point_at_the_offending_key(tmp_path: Path) -> None:
    rules = write(
        tmp_path / "r.yaml",
        """\
        rules:
          - name: A
            type: hashrate_dorp
          - name: B
            type: hashrate_drop
            belw: 50%
          - name: C
            type: device_status
            status: [Daed]
          - name: D
            type: threshold
            field: temperature.max
          - name: E
            type: pool_stale
            for: ten minutes
            actions: [{do: exec}, {do: powercycle}]
          - type: unreachable
          - name: G
          - name: H
            type: threshold
            field: hashrate
            above: 1 TH/s
            below: 2 TH/s
          - name: I
            type: unreachable
            annotations: {summary: "{{ labels.miner }"}
        """,
    )
    f = str(rules)
    with pytest.raises(ConfigError) as caught:
        load_rule_file(rules)
    assert [str(p) for p in caught.value.problems] == [
        f"{f}:3: rules[0].type: unknown rule type 'hashrate_dorp'; expected one of: device_status, "
        "hardware_errors, hashrate_drop, pool_stale, threshold, unreachable",
        f"{f}:6: rules[1]: unknown key 'belw' (did you mean 'below'?)",
        f"{f}:9: rules[2].status[0]: must be one of 'Alive', 'Sick', 'Dead', 'NoStart', 'Initialising', "
        "'Disabled', 'Rejecting' or 'Unknown'",
        f"{f}:10: rules[3]: a threshold rule needs above, below or both",
        f"{f}:15: rules[4].for: 'ten minutes' is not a duration; write e.g. 500ms, 30s, 5m, 4h, 1d or 1h30m",
        f"{f}:16: rules[4].actions[0]: do: exec needs argv (the program and its arguments, no shell)",
        f"{f}:16: rules[4].actions[1].do: must be one of 'restart', 'reboot', 'switchpool', "
        "'disable', 'enable', 'sleep', 'wake' or 'exec'",
        f"{f}:17: rules[5]: missing required key 'name'",
        f"{f}:18: rules[6]: missing required key 'type' (one of: device_status, hardware_errors, "
        "hashrate_drop, pool_stale, threshold, unreachable)",
        f"{f}:19: rules[7]: below must be less than above (the rule fires outside below..above)",
        f"{f}:26: rules[8].annotations.summary: template syntax error: unexpected '}}' (template line 1)",
    ]


def test_missing_rule_file_glob_points_at_rule_files_entry(tmp_path: Path) -> None:
    write(tmp_path / "rules" / "a.yaml", "rules: [{name: A, type: unreachable}]\n")
    config = write(
        tmp_path / "c.yaml",
        """\
        rule_files:
          - rules/*.yaml
          - rules/*.yml
          - /nonexistent/cgwatchdog/rules.yaml
        """,
    )
    f = str(config)
    assert problems_of(config) == [
        f"{f}:3: rule_files[1]: 'rules/*.yml' matches no file (looked for {tmp_path}/rules/*.yml)",
        f"{f}:4: rule_files[2]: '/nonexistent/cgwatchdog/rules.yaml' matches no file",
    ]


def test_rule_files_are_relative_to_the_config_and_rules_may_be_inline(tmp_path: Path) -> None:
    write(tmp_path / "etc" / "rules" / "b.yaml", "rules: [{name: B, type: unreachable}]\n")
    write(tmp_path / "etc" / "rules" / "a.yaml", "rules: [{name: A, type: device_status}]\n")
    config = write(
        tmp_path / "etc" / "c.yaml",
        """\
        rule_files: rules/*.yaml
        rules: [{name: Inline, type: pool_stale}]
        """,
    )
    cfg = load_config(config)
    assert [r.name for r in cfg.rules] == ["Inline", "A", "B"]
    assert cfg.rule_files == (tmp_path / "etc/rules/a.yaml", tmp_path / "etc/rules/b.yaml")


def test_duplicate_rule_name_points_at_the_second(tmp_path: Path) -> None:
    first = write(tmp_path / "rules" / "a.yaml", "rules:\n  - name: Dup\n    type: unreachable\n")
    second = write(
        tmp_path / "rules" / "b.yaml",
        "rules:\n  - name: Other\n    type: unreachable\n  - name: Dup\n    type: device_status\n",
    )
    config = write(tmp_path / "c.yaml", "rule_files: [rules/*.yaml]\n")
    assert only_problem(config) == f"{second}:4: rule name 'Dup' is already used at {first}:2"


def test_yaml_syntax_error_reports_its_line(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        """\
        poll:
          interval: 30s
        miners:
          - name: a
            host: 10.0.0.1
           port: 4028
        """,
    )
    problem = only_problem(config)
    assert problem.startswith(f"{config}:6: YAML syntax error: ")
    unclosed = write(tmp_path / "u.yaml", 'poll:\n  interval: "30s\n  timeout: 5s\n')
    assert only_problem(unclosed).startswith(
        f"{unclosed}:4: YAML syntax error: found unexpected end of stream"
    )
    tabs = write(tmp_path / "t.yaml", "poll:\n\tinterval: 30s\n")
    assert only_problem(tabs).startswith(f"{tabs}:2: YAML syntax error: ")


def test_files_that_are_missing_empty_or_not_a_mapping(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert only_problem(missing) == f"{missing}: cannot read config file: No such file or directory"
    empty = write(tmp_path / "empty.yaml", "# only a comment\n")
    assert only_problem(empty) == f"{empty}: config file is empty"
    listed = write(tmp_path / "list.yaml", "\n- a\n- b\n")
    assert (
        only_problem(listed)
        == f"{listed}:2: the top level must be a mapping of keys (key: value), found a list"
    )
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"poll:\n  interval: \xff\n")
    assert only_problem(binary) == f"{binary}:2: config file is not UTF-8 text"
    two = write(tmp_path / "two.yaml", "a: 1\n---\nb: 2\n")
    assert only_problem(two) == (
        f"{two}:2: YAML syntax error: found another document "
        "(expected a single document in the stream at line 1)"
    )
    with pytest.raises(ConfigError) as caught:
        load_rule_file(tmp_path / "rules-missing.yaml")
    assert (
        str(caught.value)
        == f"{tmp_path / 'rules-missing.yaml'}: cannot read rule file: No such file or directory"
    )


def test_rule_file_shape(tmp_path: Path) -> None:
    rules = write(tmp_path / "r.yaml", "rule:\n  - name: A\n")
    with pytest.raises(ConfigError) as caught:
        load_rule_file(rules)
    assert [str(p) for p in caught.value.problems] == [
        f"{rules}:1: unknown key 'rule' (did you mean 'rules'?)",
        f"{rules}:1: missing required key 'rules' (a list of rules)",
    ]
    mapping = write(tmp_path / "m.yaml", "rules: {name: A}\n")
    with pytest.raises(ConfigError) as caught:
        load_rule_file(mapping)
    assert str(caught.value) == f"{mapping}:1: rules: expected a list ('- ' items), found a mapping"


def test_duplicate_yaml_keys_are_errors_but_merge_keys_work(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        """\
        poll:
          interval: 30s
          interval: 60s
        miners:
          - &base {host: 10.0.0.1, labels: {site: north}, port: 4028}
          - <<: *base
            host: 10.0.0.2
        """,
    )
    assert only_problem(config) == f"{config}:3: duplicate key 'interval' (first at line 2)"
    config.write_text(config.read_text().replace("  interval: 60s\n", ""))
    cfg = load_config(config)
    assert [(m.host, m.labels) for m in cfg.miners] == [
        ("10.0.0.1", {"site": "north"}),
        ("10.0.0.2", {"site": "north"}),
    ]


def test_receiver_shapes_are_checked(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        """\
        receivers:
          - name: r0
          - name: r1
            webhook: {url: "ftp://example.org/x", format: slak}
          - name: r2
            webhook: {url: "https://api.telegram.example.org/bot1/sendMessage", format: telegram}
          - name: r3
            webhook: {url: "https://example.org/", format: custom}
          - name: r4
            email: {smtp: "smtp.example.org:587", tls: true, starttls: true, from: nobody, to: []}
          - name: r5
            alertmanager: {url: "http://user:pw@127.0.0.1:9093"}
          - name: r6
            apprise: {urls: ["not a url"]}
          - name: r7
            webhook: {url: "https://example.org/", auth: {basic: {user: a, password: b}, bearer: {token: c}}}
        route: {receiver: r0}
        """,
    )
    f = str(config)
    assert problems_of(config) == [
        f"{f}:2: receivers[0]: a receiver takes exactly one of alertmanager, apprise, email, telegram, webhook (found none)",
        f"{f}:4: receivers[1].webhook.url: must be an http:// or https:// URL",
        f"{f}:4: receivers[1].webhook.format: must be one of 'alertmanager', 'custom', 'discord', "
        "'mattermost', 'ntfy', 'slack', 'teams' or 'telegram'",
        f"{f}:6: receivers[2].webhook: format: telegram needs chat_id",
        f"{f}:8: receivers[3].webhook: format: custom needs template",
        f"{f}:10: receivers[4].email.from: 'nobody' is not an email address",
        f"{f}:10: receivers[4].email.to: needs at least 1 item(s)",
        f"{f}:12: receivers[5].alertmanager: put credentials under auth:, not in the URL (the URL is logged)",
        f"{f}:14: receivers[6].apprise.urls[0]: must be an Apprise URL such as pover://user@token",
        f"{f}:16: receivers[7].webhook.auth: auth takes exactly one of basic, bearer (found basic and bearer)",
    ]
    assert "pw@" not in "\n".join(problems_of(config))


def test_email_tls_defaults(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        """\
        receivers:
          - {name: a, email: {smtp: smtp.example.org, tls: true, from: a@example.org, to: b@example.org}}
          - {name: b, email: {smtp: "[2001:db8::25]", starttls: false, from: a@example.org, to: [b@example.org]}}
        route: {receiver: a}
        """,
    )
    a, b = load_config(config).receivers
    assert a.email is not None and b.email is not None
    assert (a.email.tls, a.email.starttls, a.email.smtp_port, a.email.to) == (
        True,
        False,
        465,
        ("b@example.org",),
    )
    assert (b.email.smtp_host, b.email.smtp_port) == ("2001:db8::25", 25)


# --------------------------------------------------------------------------- secrets


def test_undefined_env_var_names_the_variable(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        """\
        receivers:
          - name: chat
            webhook:
              url: "${SLACK_WEBHOOK_URL}"
              headers: {X-Token: "${MISSING_TOKEN}", X-Literal: "$${NOT_A_VAR}"}
        """,
    )
    f = str(config)
    assert problems_of(config) == [
        f"{f}:4: receivers[0].webhook.url: environment variable SLACK_WEBHOOK_URL is not set",
        f"{f}:5: receivers[0].webhook.headers.X-Token: environment variable MISSING_TOKEN is not set",
    ]
    cfg = load_config(
        config, environ={"SLACK_WEBHOOK_URL": SLACK_URL, "MISSING_TOKEN": "tok-123456"}
    )
    webhook = cfg.receivers[0].webhook
    assert webhook is not None
    assert webhook.headers["X-Literal"].get_secret_value() == "${NOT_A_VAR}"
    assert webhook.headers["X-Token"].get_secret_value() == "tok-123456"


def test_environ_defaults_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CGW_TEST_PORT", "4031")
    config = write(tmp_path / "c.yaml", 'miners: [{host: 10.0.0.1, port: "${CGW_TEST_PORT}"}]\n')
    assert load_config(config).miners[0].port == 4031


def test_missing_or_empty_password_file(tmp_path: Path) -> None:
    write(tmp_path / "empty-secret", "\n")
    config = write(
        tmp_path / "c.yaml",
        """\
        receivers:
          - name: mail
            email:
              smtp: smtp.example.org:587
              username: alerts
              password_file: smtp-password
              from: alerts@example.org
              to: [ops@example.org]
          - name: hook
            webhook:
              url: "https://example.org/"
              auth: {bearer: {token_file: empty-secret}}
          - name: both
            webhook: {url: "https://example.org/", url_file: empty-secret}
        route: {receiver: mail}
        """,
    )
    f = str(config)
    assert problems_of(config) == [
        f"{f}:6: receivers[0].email.password_file: cannot read {tmp_path}/smtp-password: No such file or directory",
        f"{f}:12: receivers[1].webhook.auth.bearer.token_file: {tmp_path}/empty-secret is empty",
        f"{f}:14: give url or url_file, not both",
    ]


def test_secrets_never_print(tmp_path: Path) -> None:
    token = "bearer-token-0123456789"
    write(tmp_path / "token", token + "\n")
    write(tmp_path / "smtp-password", SMTP_PASSWORD)
    config = write(
        tmp_path / "c.yaml",
        """\
        receivers:
          - name: chat
            webhook:
              url: "${SLACK_WEBHOOK_URL}"
              headers: {X-Api-Key: "${API_KEY}"}
              auth: {bearer: {token_file: token}}
          - name: mail
            email: {smtp: "smtp.example.org:587", username: u, password_file: smtp-password,
                    from: a@example.org, to: [b@example.org]}
          - name: phone
            apprise: {urls: ["pover://user@apprisetoken1234"]}
        route: {receiver: chat}
        heartbeat: {url: "https://hc-ping.example.com/ping/heartbeat-uuid-77"}
        """,
    )
    environ = {"SLACK_WEBHOOK_URL": SLACK_URL, "API_KEY": "api-key-abcdef"}
    cfg = load_config(config, environ=environ)
    secrets = [
        SLACK_URL,
        "api-key-abcdef",
        token,
        SMTP_PASSWORD,
        "apprisetoken1234",
        "heartbeat-uuid-77",
    ]
    for shown in (
        repr(cfg),
        str(cfg),
        cfg.model_dump_json(),
        str(cfg.model_dump()),
        repr(cfg.receivers),
    ):
        for secret in secrets:
            assert secret not in shown

    leaky = (
        f"POST {SLACK_URL} failed; HTTPSConnectionPool(host='hooks.slack.example.com', port=443): "
        f"Max retries exceeded with url: /services/T0001/B0002/s3cr3tWebhookToken; auth {token} "
        f"key api-key-abcdef pass {SMTP_PASSWORD} apprise pover://user@apprisetoken1234"
    )
    scrubbed = cfg.redact(leaky)
    for secret in secrets:
        assert secret not in scrubbed
    assert "/services/T0001" not in scrubbed
    assert scrubbed.startswith(
        "POST <redacted> failed; HTTPSConnectionPool(host='hooks.slack.example.com'"
    )
    assert cfg.redact("nothing secret here") == "nothing secret here"

    # A secret that lands where it does not belong shows up in no error message.
    bad = write(
        tmp_path / "bad.yaml", 'poll: {interval: "${API_KEY}"}\nheartbeat: {url_file: token}\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(bad, environ=environ)
    assert "api-key-abcdef" not in str(caught.value)
    assert str(caught.value) == (
        f"{bad}:1: poll.interval: '<redacted>' is not a duration; write e.g. 500ms, 30s, 5m, 4h, 1d or 1h30m\n"
        f"{bad}:2: heartbeat.url: must be an http:// or https:// URL"
    )


def test_world_readable_secrets_warn(tmp_path: Path) -> None:
    write(tmp_path / "smtp-password", SMTP_PASSWORD, mode=0o644)
    inline = write(
        tmp_path / "inline.yaml",
        f"""\
        receivers:
          - {{name: chat, webhook: {{url: "{SLACK_URL}"}}}}
          - {{name: mail, email: {{smtp: "smtp.example.org:587", username: u, password_file: smtp-password,
                                  from: a@example.org, to: [b@example.org]}}}}
        route: {{receiver: chat}}
        rules: [{{name: A, type: unreachable}}]
        """,
        mode=0o644,
    )
    cfg = load_config(inline)
    assert cfg.warnings == (
        f"{inline}: holds secrets inline and is readable by group or others (mode 0644); "
        "chmod 600 it, or move the secrets to *_file or ${ENV}",
        f"{tmp_path}/smtp-password (password_file at {inline}:3) is readable by group or others "
        "(mode 0644); chmod 600 it",
        "receiver 'mail' is not used by any route",
    )
    for warning in cfg.warnings:
        assert SLACK_URL not in warning and SMTP_PASSWORD not in warning

    os.chmod(tmp_path / "smtp-password", 0o600)
    inline.chmod(0o600)
    assert load_config(inline).warnings == ("receiver 'mail' is not used by any route",)
    # A loopback webhook carries no credentials worth a warning; the secret came from ${ENV}.
    env_only = write(
        tmp_path / "env.yaml",
        """\
        receivers:
          - {name: local, webhook: {url: "http://127.0.0.1:5001/hook"}}
          - {name: chat, webhook: {url: "${SLACK_WEBHOOK_URL}"}}
        route: {receiver: local, routes: [{receiver: chat, match: {severity: critical}}]}
        rules: [{name: A, type: unreachable}]
        """,
        mode=0o644,
    )
    assert load_config(env_only, environ={"SLACK_WEBHOOK_URL": SLACK_URL}).warnings == ()


# ------------------------------------------------------- shipped files and direct use


def test_default_rules_ship_the_core_conditions() -> None:
    path = default_rules_path()
    assert path == REPO / "rules" / "default.yaml"
    rules = {rule.name: rule for rule in load_rule_file(path)}
    assert list(rules) == [
        "HashrateDrop",
        "DeviceDead",
        "HardwareErrorsRising",
        "PoolStale",
        "MinerUnreachable",
        "TooHot",
    ]
    assert (
        isinstance(rules["HashrateDrop"], HashrateDropRule) and rules["HashrateDrop"].below == 0.8
    )
    assert (
        isinstance(rules["DeviceDead"], DeviceStatusRule)
        and rules["DeviceDead"].severity == "critical"
    )
    assert isinstance(rules["HardwareErrorsRising"], HardwareErrorsRule)
    assert (
        isinstance(rules["PoolStale"], PoolStaleRule)
        and rules["PoolStale"].actions[0].do == "switchpool"
    )
    assert isinstance(rules["MinerUnreachable"], UnreachableRule)
    hot = rules["TooHot"]
    assert isinstance(hot, ThresholdRule) and (hot.field, hot.above) == ("temperature.max", 85)
    for rule in rules.values():
        assert "{{ labels.miner }}" in rule.annotations["summary"]
        assert rule.annotations["description"]


def test_example_operator_config_loads(tmp_path: Path) -> None:
    shutil.copy(REPO / "systemd" / "config.yaml", tmp_path / "config.yaml")
    # The secrets as the unit's LoadCredential= gives them: $CREDENTIALS_DIRECTORY.
    credentials = tmp_path / "credentials"
    write(credentials / "smtp-password", SMTP_PASSWORD)
    write(credentials / "slack-webhook-url", SLACK_URL)
    environ = {"CREDENTIALS_DIRECTORY": str(credentials)}
    cfg = load_config(tmp_path / "config.yaml", environ=environ)
    assert cfg.warnings == ()
    assert cfg.notes and "packaged rules" in cfg.notes[0]  # no rule_files: the shipped ones
    assert cfg.actions.dry_run  # the example never acts unasked
    assert len(cfg.miners) == 1 + 254 + 62 + 1
    assert cfg.miners[1].name == "south-001" and cfg.miners[-1].host == "avalon-1.example.net"
    assert [r.name for r in cfg.receivers] == ["chat", "mail", "am"]
    assert len(cfg.rules) == 6 and cfg.heartbeat is None


def test_config_built_in_code_is_checked_too() -> None:
    chat = receiver_model()(name="chat", webhook=WebhookConfig(url="http://127.0.0.1:5001/"))  # type: ignore[call-arg]
    cfg = Config(
        miners=(MinerConfig(name="m1", host="10.0.0.1"),),
        receivers=(chat,),
        route=RouteConfig(receiver="chat"),
    )
    assert cfg.poll.interval_s == 30 and cfg.miners[0].port == 4028
    with pytest.raises(ValidationError, match="unknown receiver 'pager'"):
        Config(receivers=(chat,), route=RouteConfig(receiver="pager"))
    with pytest.raises(ValidationError, match="miner name 'm1' is used twice"):
        Config(
            miners=(
                MinerConfig(name="m1", host="10.0.0.1"),
                MinerConfig(name="m1", host="10.0.0.2"),
            )
        )
    with pytest.raises(ValidationError):
        cfg.poll.interval_s = 5


def test_default_rules_path_finds_the_wheel_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An installed wheel holds rules/ as cgwatchdog/_rules (pyproject force-include).
    import importlib.util

    package = tmp_path / "site-packages" / "cgwatchdog"
    (package / "config").mkdir(parents=True)
    shutil.copy(REPO / "cgwatchdog" / "config" / "loader.py", package / "config" / "loader.py")
    shutil.copytree(REPO / "rules", package / "_rules")
    spec = importlib.util.spec_from_file_location("wheel_config", package / "config" / "loader.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "wheel_config", module)
    spec.loader.exec_module(module)
    assert module.default_rules_path() == package / "_rules" / "default.yaml"


def test_problems_in_several_files_come_config_first(tmp_path: Path) -> None:
    rules = write(
        tmp_path / "rules" / "a.yaml",
        "rules:\n  - name: A\n    type: unreachable\n    for: soon\n",
    )
    config = write(
        tmp_path / "c.yaml",
        """\
        rule_files: [rules/a.yaml]
        receivers:
          - name: hook
            webhook: {format: slack}
        poll: {concurrency: 0}
        """,
    )
    assert problems_of(config) == [
        f"{config}:4: receivers[0].webhook: missing required key 'url'",
        f"{config}:5: poll.concurrency: must be at least 1",
        f"{rules}:4: rules[0].for: 'soon' is not a duration; write e.g. 500ms, 30s, 5m, 4h, 1d or 1h30m",
    ]


def test_odd_but_valid_yaml(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        """\
        state_dir: state
        miners:
          - {name: 101, host: 10.0.0.1, labels: {rack: 7, cold: yes}}
        cluster: {shard: 1-of-2}
        """,
    )
    cfg = load_config(config)
    assert cfg.state_dir == tmp_path / "state"  # relative to the config file
    assert cfg.miners[0].name == "101"
    assert cfg.miners[0].labels == {"rack": "7", "cold": "true"}
    assert cfg.cluster.shard == Shard(1, 2)

    bad_regex = write(
        tmp_path / "s.yaml", "silences:\n  - match_re: {miner: 'rack(1'}\n    until: 2027-01-01\n"
    )
    assert only_problem(bad_regex) == (
        f"{bad_regex}:2: silences[0].match_re.miner: 'rack(1' is not a valid regular expression: "
        "missing ), unterminated subpattern"
    )

    recursive = write(tmp_path / "r.yaml", "miners: &m [*m]\n")
    assert only_problem(recursive) == (
        f"{recursive}:1: miners[0]: an alias refers to a node that contains it"
    )


# --- what check catches before it silently never works ------------------------------------


def test_a_connect_timeout_default_follows_a_short_timeout(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "poll: {interval: 10s, timeout: 900ms}\nrule_files: []\n")
    cfg = load_config(config)
    assert (cfg.poll.timeout_s, cfg.poll.connect_timeout_s) == (0.9, 0.9)
    longer = write(tmp_path / "d.yaml", "poll: {timeout: 3s}\nrule_files: []\n")
    assert load_config(longer).poll.connect_timeout_s == 1.0
    too_long = write(tmp_path / "e.yaml", "poll: {timeout: 1s, connect_timeout: 2s}\n")
    assert "connect_timeout must not exceed timeout" in only_problem(too_long)


def test_the_packaged_rules_apply_unless_the_config_says_otherwise(tmp_path: Path) -> None:
    bare = write(tmp_path / "a.yaml", "miners: [{host: 127.0.0.1}]\n")
    cfg = load_config(bare)
    assert {r.name for r in cfg.rules} >= {"DeviceDead", "MinerUnreachable", "PoolStale"}
    assert cfg.rule_files == (default_rules_path(),)
    assert "packaged rules are used" in cfg.notes[0] and "rule_files: []" in cfg.notes[0]
    opted_out = write(tmp_path / "b.yaml", "miners: [{host: 127.0.0.1}]\nrule_files: []\n")
    assert load_config(opted_out).rules == () and load_config(opted_out).notes == ()
    inline = write(
        tmp_path / "c.yaml",
        "miners: [{host: 127.0.0.1}]\nrules: [{name: Down, type: unreachable}]\n",
    )
    assert [r.name for r in load_config(inline).rules] == ["Down"]


def test_actions_are_a_dry_run_until_the_operator_says_otherwise(tmp_path: Path) -> None:
    bare = write(tmp_path / "a.yaml", "miners: [{host: 127.0.0.1}]\n")
    cfg = load_config(bare)
    assert cfg.actions.dry_run is True
    assert cfg.actions_summary().startswith("actions: DRY RUN:")
    live = write(tmp_path / "b.yaml", "miners: [{host: 127.0.0.1}]\nactions: {dry_run: false}\n")
    assert load_config(live).actions_summary().startswith("actions: LIVE: 3 rule(s)")
    none = write(tmp_path / "c.yaml", "rules: [{name: Down, type: unreachable}]\n")
    assert load_config(none).actions_summary() == "actions: no rule has repair steps"


def test_an_unknown_threshold_field_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        "rules:\n  - {name: TooHot, type: threshold, field: temprature.max, above: 85}\n",
    )
    assert only_problem(config) == (
        f"{config}:2: rules[0].field: unknown field 'temprature.max' (did you mean "
        "'temperature.max'?); the fields are listed in docs/RULES.md"
    )


def test_a_rule_matching_a_label_no_miner_has_is_an_error(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        """\
        miners: [{host: 127.0.0.1, labels: {site: north}}]
        rules:
          - name: Down
            type: unreachable
            match: {sitte: north}
        """,
    )
    assert only_problem(config) == (
        f"{config}:5: rules[0].match.sitte: no miner has a label 'sitte' (did you mean "
        "'site'?): the rule would select none"
    )


def test_a_severity_no_route_knows_is_caught(tmp_path: Path) -> None:
    text = """\
        miners: [{host: 127.0.0.1}]
        rules: [{name: Down, type: unreachable, severity: critcal}]
        receivers: [{name: a, webhook: {url: "http://127.0.0.1:9/a"}},
                    {name: b, webhook: {url: "http://127.0.0.1:9/b"}}]
        route: {receiver: a, routes: [{match: {severity: critical}, receiver: b}]}
        """
    warned = load_config(write(tmp_path / "c.yaml", text))
    assert any(
        "severity 'critcal', which no route matches" in w and "did you mean 'critical'" in w
        for w in warned.warnings
    )
    declared = write(tmp_path / "d.yaml", text + "severities: [critical, warning]\n")
    assert "severity 'critcal' is not among severities: critical, warning (did you mean " in (
        only_problem(declared)
    )
    fine = write(tmp_path / "e.yaml", text.replace("critcal", "warning"))
    assert not any("severity" in w for w in load_config(fine).warnings)


def test_no_receivers_and_a_route_on_an_unknown_label_are_warned_about(tmp_path: Path) -> None:
    alone = write(tmp_path / "a.yaml", "miners: [{host: 127.0.0.1}]\n")
    assert any("no receivers are configured" in w for w in load_config(alone).warnings)
    typo = write(
        tmp_path / "b.yaml",
        """\
        miners: [{host: 127.0.0.1, labels: {site: north}}]
        receivers: [{name: a, webhook: {url: "http://127.0.0.1:9/a"}},
                    {name: b, webhook: {url: "http://127.0.0.1:9/b"}}]
        route: {receiver: a, routes: [{match: {sitee: north}, receiver: b}]}
        """,
    )
    assert any(
        "no alert carries a label 'sitee' (did you mean 'site'?)" in w
        for w in load_config(typo).warnings
    )
