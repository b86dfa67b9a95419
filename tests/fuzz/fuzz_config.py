"""Fuzz target: the config loader (``cgwatchdog.config``).

Seeds are the repository's own ``systemd/config.yaml`` and ``rules/default.yaml`` (read
at run time) and configs written here that use every section, receiver kind, rule type
and YAML feature the loader handles (anchors and merges, ``${ENV}``, ``*_file``, flow
style). An input is one of:

- the seed's bytes mutated (bit flips, YAML tokens, splices, truncation, ...);
- the seed's lines shuffled, duplicated, re-indented or spliced with another seed's;
- the seed parsed, its tree mutated (values swapped for awkward ones of every YAML type,
  keys dropped, renamed or added, items duplicated), and dumped back to YAML.

Each input is written to a file (mode 600 or 644) in a scratch directory that also
holds ``*_file`` secrets and rule files, then read with ``load_config`` (or
``load_rule_file``); ConfigError is the only error allowed. Some inputs' trees also go
straight to the pydantic models (ValidationError allowed) and their scalars to the unit
parsers (``parse_duration`` ..., ValueError allowed). Invariants: a load returns a
Config (a list of rules); no ``${ENV}`` secret appears in an error or a warning;
``redact`` scrubs every secret of a loaded config.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from cgwatchdog.config import (
    ActionsConfig,
    ClusterConfig,
    Config,
    HeartbeatConfig,
    HttpConfig,
    MinerConfig,
    PollConfig,
    ReceiverConfig,
    RouteConfig,
    SilenceConfig,
    expand_hosts,
    parse_duration,
    parse_hashrate,
    parse_ratio,
    parse_shard,
)
from cgwatchdog.config.loader import load_config, load_rule_file
from cgwatchdog.errors import ConfigError
from cgwatchdog.rules import rule_config

from .engine import Invariant
from .mutators import Mutator

NAME: Final = "config"
ROOT: Final = Path(__file__).resolve().parents[2]

ENVIRON: Final = {
    "SLACK_WEBHOOK_URL": "https://hooks.slack.example.com/services/T0FUZZ/B0FUZZ/fuzzWebhookSecret1",
    "API_KEY": "fuzz-api-key-0123456789",
    "SMTP_PASSWORD": "fuzz-smtp-password-42",
    "PORT": "4029",
    "EMPTY": "",
}
FILE_SECRETS: Final = {
    "smtp-password": "file-smtp-password-77",
    "token": "file-bearer-token-0123456789",
    "heartbeat-url": "https://hc-ping.example.com/file-heartbeat-uuid",
}
# Secrets that come from ${ENV} or a *_file: known to be secrets wherever they land.
DERIVED_SECRETS: Final = (
    "fuzzWebhookSecret1",
    "fuzz-api-key-0123456789",
    "fuzz-smtp-password-42",
    "file-smtp-password-77",
    "file-bearer-token-0123456789",
    "file-heartbeat-uuid",
)

FULL: Final = """\
poll:
  interval: 30s
  timeout: 5s
  connect_timeout: 1s
  concurrency: 512
  jitter: 10%
  max_reply_bytes: 4194304
state_dir: state
http:
  listen: 127.0.0.1:9841
defaults: &defaults
  port: 4028
  labels: {site: north, rack: "1"}
miners:
  - name: rack1-s9-01
    host: 192.0.2.21
    <<: *defaults
    expected_hashrate: 13.5 TH/s
  - hosts: 198.51.100.1-198.51.100.20
    name: "south-{index:03d}"
    labels: {site: south}
    expected_hashrate: 95 TH/s
  - hosts: [203.0.113.0/29, avalon-1.example.net, "2001:db8::1-2001:db8::4"]
    port: ${PORT}
  - {host: "::1", port: 4030, name: v6}
rule_files: [rules/*.yaml]
rules:
  - name: TooHot
    type: threshold
    field: temperature.max
    above: 85
    below: 5
    for: 1m
    labels: {team: ops}
    annotations: {summary: "{{ labels.miner }} at {{ value }}"}
    match: {site: north}
    match_re: {rack: "[0-9]+"}
  - name: Stale
    type: pool_stale
    no_accepted_share_for: 10m
    stale_above: 5%
    actions: [{do: switchpool, pool: 1}, {do: switchpool}]
  - name: Hw
    type: hardware_errors
    above: 1%
    window: 15m
  - name: Drop
    type: hashrate_drop
    below: 0.8
    baseline: 1h
    startup_grace: 10m
    keep_firing_for: 5m
    actions:
      - {do: restart, after: 20m, verify_within: 15m, dry_run: true}
      - do: exec
        argv: [/usr/local/bin/pdu-cycle, "{{ labels.miner }}", "a b; $(id)"]
        timeout: 30s
  - {name: Gone, type: unreachable, for: 3m, severity: critical}
  - name: Dead
    type: device_status
    status: [dead, Sick, NoStart]
    actions: [{do: disable}, {do: enable, after: 1m}]
receivers:
  - name: chat
    webhook:
      url: "${SLACK_WEBHOOK_URL}"
      format: slack
      headers: {X-Api-Key: "${API_KEY}", X-Literal: "$${NOT_A_VAR}"}
      timeout: 10s
    send_resolved: true
  - name: mail
    email:
      smtp: smtp.example.org:587
      starttls: true
      username: alerts
      password_file: smtp-password
      from: "cgwatchdog <alerts@example.org>"
      to: [ops@example.org, oncall@example.org]
      subject: "[{{ status }}] {{ title }}"
  - name: am
    alertmanager:
      urls: [http://127.0.0.1:9093, http://127.0.0.2:9093]
      auth: {basic: {user: am, password: am-basic-password}}
  - name: bot
    webhook:
      url: https://api.telegram.example.org/bot123456:ABCdefSECRET/sendMessage
      format: telegram
      chat_id: -1001234567890
  - name: custom
    webhook:
      url: http://127.0.0.1:5001/hook
      format: custom
      template: '{"text": {{ title | tojson }}, "n": {{ alerts | length }}}'
      auth: {bearer: {token_file: token}}
      verify_tls: false
  - name: phone
    apprise: {urls: ["pover://user@apprisetoken1234", "gotify://host/tokenABCD"]}
route:
  receiver: chat
  group_by: [alertname, site]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - {match: {severity: critical}, receiver: mail, continue: true}
    - {match_re: {site: "south|west"}, receiver: am, group_by: ["..."]}
    - {receiver: bot, routes: [{receiver: custom, match: {team: ops}}, {receiver: phone}]}
actions:
  dry_run: false
  cooldown: 15m
  max_per_miner_per_hour: 3
  max_in_flight: 5
  fleet_incident_share: 30%
  restart_grace: 5m
silences:
  - match: {miner: rack1-s9-01}
    starts: 2026-01-01
    until: 2026-12-01T00:00:00Z
    comment: board swap
  - {match_re: {alertname: "Hw|Drop"}, until: 2030-01-01 12:00:00}
cluster:
  shard: 1/2
  replica: a
  alertmanager: am
heartbeat:
  url_file: heartbeat-url
  interval: 1m
  timeout: 10s
"""

SMALL: Final = (
    "miners: [{host: 127.0.0.1}]\nrules: [{name: A, type: unreachable}]\n",
    "receivers: [{name: r, webhook: {url: 'https://example.org/hook/tok-123456'}}]\n"
    "heartbeat: {url: 'https://hc-ping.example.com/0000-uuid'}\n",
    "poll: {interval: 1h30m, timeout: 500ms, connect_timeout: 0.1s, jitter: 0.5}\n"
    'http: {listen: "[::1]:9841"}\ncluster: {shard: 2-of-4}\n',
    "rules:\n  - name: X\n    type: threshold\n    field: hashrate\n    below: 50 TH/s\n",
    "miners:\n  - hosts: 10.0.0.0/30\n    name: 'm-{host}-{port}'\n"
    "silences: [{match: {a: b}, until: 2026-12-01}]\n",
    "# only a comment\n",
    "{}\n",
    "- a\n- b\n",
    "---\nminers: []\n---\nrules: []\n",
)
RULES_FILE: Final = """\
rules:
  - name: Extra
    type: device_status
    status: Dead
    for: 2m
    annotations: {summary: "{{ labels.miner }} {{ value }}"}
"""

YAML_TOKENS: Final = (
    b": ", b"- ", b"  ", b"\t", b"\n", b"\r\n", b"#", b"&a ", b"*a", b"<<: *a\n", b"<<: ",
    b"!!str ", b"!!int ", b"!!float ", b"!!bool ", b"!!binary ", b"!!timestamp ", b"!!set ",
    b"!!omap ", b"!!map ", b"!!seq ", b"!!null ", b"!!python/object/apply:os.system ",
    b"!custom ", b"? ", b"|\n", b">-\n", b"---\n", b"...\n", b"%YAML 1.1\n", b"%TAG ! x:\n",
    b"'", b'"', b"\\", b'"\\x00"', b'"\\ud800"', b'"\\U0010FFFF"', b"${", b"$${X}",
    b"${SLACK_WEBHOOK_URL}", b"${API_KEY}", b"${UNSET_VAR}", b"${1BAD}", b"${}", b"${EMPTY}",
    b"{{", b"}}", b"{%", b"%}", b"{#", b"{{ 7*7 }}", b"{{ labels.miner }}", b"{% for %}",
    b"{host}", b"{index:03d}", b"{0}", b"{x}", b"{host:>9}", b"{", b"[", b"]", b",", b"~",
    b"null", b"true", b"yes", b"on", b"no", b".inf", b"-.inf", b".nan", b"0x1F", b"0o17",
    b"0b101", b"1_000", b"1:20:30", b"2026-12-01", b"2026-13-45", b"2026-02-30",
    b"2026-02-28T25:61:61Z", b"2001-12-14t21:59:43.10-05:00", b"1e999", b"9" * 400,
    b"9" * 5000, b"-1", b"0", b"80%", b"150%", b"-5%", b"nan%", b"1h30m", b"500ms", b"5x",
    b"1e3h", b"13.5 TH/s", b"1e30 EH/s", b"-5 TH/s", b"10.0.0.1-10.0.0.254", b"10.0.0.0/8",
    b"10.0.0.1/24", b"::1", b"[::1]:9841", b"fe80::1%eth0", b"0.0.0.0:9841", b"256.1.1.1",
    b"10.0.0.5-3", b"10.0.0.1-fe80::1", b"a..b", b"x" * 300, b"\xff", b"\xef\xbb\xbf",
    b"\x00", b"\xc2\x85", b"\xe2\x80\xa8", b"1/2", b"0/0", b"3/2", b"password_file: ",
    b"token_file: ", b"url_file: ", b"url: ", b"do: exec", b"argv: [", b"type: threshold",
    b"field: ", b"format: custom", b"template: ", b"receiver: ", b"routes: [", b"match: {",
    b"match_re: {", b"hosts: ", b"host: ", b"name: ", b"labels: {", b"severity: ",
)  # fmt: skip

KEYS: Final = (
    "poll", "interval", "timeout", "connect_timeout", "concurrency", "jitter",
    "max_reply_bytes", "state_dir", "http", "listen", "miners", "name", "host", "hosts",
    "port", "labels", "expected_hashrate", "rule_files", "rules", "type", "for",
    "keep_firing_for", "severity", "annotations", "match", "match_re", "actions", "do",
    "after", "verify_within", "argv", "pool", "dry_run", "below", "above", "baseline",
    "startup_grace", "status", "window", "no_accepted_share_for", "stale_above", "field",
    "receivers", "send_resolved", "webhook", "email", "alertmanager", "apprise", "url",
    "urls", "url_file", "format", "template", "headers", "auth", "basic", "bearer", "user",
    "password", "password_file", "token", "token_file", "verify_tls", "chat_id", "smtp",
    "starttls", "tls", "username", "from", "to", "subject", "route", "receiver", "group_by",
    "group_wait", "group_interval", "repeat_interval", "continue", "routes", "cooldown",
    "max_per_miner_per_hour", "max_in_flight", "fleet_incident_share", "restart_grace",
    "silences", "starts", "until", "comment", "cluster", "shard", "replica", "heartbeat",
    "<<", "", "1", "Name", "colour",
)  # fmt: skip

VALUES: Final[tuple[Any, ...]] = (
    None, True, False, 0, 1, -1, 2**31, 2**64, 10**400, 10**5000, -(10**400), 0.5, -0.0,
    1e308, float("inf"), float("-inf"), float("nan"), "", " ", "0", "30s", "1h30m", "500ms",
    "5x", "-5m", "1e999s", "80%", "150%", "nan", "inf", "13.5 TH/s", "1e30 EH/s", "1/2", "0/1",
    "10.0.0.1", "10.0.0.0/8", "10.0.0.1-10.0.255.255", "10.0.0.1-10.1.0.0", "::1",
    "fe80::1%eth0", "[::1]:1", "127.0.0.1:0", "host:99999", "a" * 300, "x\ny", "x\x00y",
    "\ud800", "${SLACK_WEBHOOK_URL}", "${UNSET}", "$${LIT}", "{{ 7*7 }}", "{{", "{% if %}",
    "{{ ''.__class__.__mro__ }}", "{host}-{index:03d}", "{index:>99}", "{0}", "{host.real}",
    "http://", "https://user:pw@example.org/x", "mailto:x", "pover://u@t", "a@b", "<>", "@",
    "[", "(?P<x", ".*", "Dead", "dead", "restart", "exec", "threshold", "custom", "telegram",
    "...", "smtp-password", "token", "/nonexistent/file", ".", "rules/*.yaml", "[!]",
    dt.date(2026, 1, 1), dt.datetime(2026, 1, 1, 12, 0), dt.datetime(1, 1, 1),
    b"\x00\xff", [], {}, [None], ["a", 1], {"a": None}, {"1": 2}, [[[]]], {"a": {"b": {}}},
)  # fmt: skip

MODELS: Final[dict[str, Callable[[Any], Any]]] = {
    "poll": PollConfig.model_validate,
    "http": HttpConfig.model_validate,
    "actions": ActionsConfig.model_validate,
    "cluster": ClusterConfig.model_validate,
    "heartbeat": HeartbeatConfig.model_validate,
    "route": RouteConfig.model_validate,
}
ITEM_MODELS: Final[dict[str, Callable[[Any], Any]]] = {
    "miners": MinerConfig.model_validate,
    "rules": rule_config,
    "receivers": ReceiverConfig.model_validate,
    "silences": SilenceConfig.model_validate,
}


def seed_texts() -> list[bytes]:
    """The repository's example config and rules, and the configs written above."""
    texts = [FULL, *SMALL, RULES_FILE]
    for shipped in (ROOT / "systemd" / "config.yaml", ROOT / "rules" / "default.yaml"):
        if shipped.is_file():
            texts.append(shipped.read_text(encoding="utf-8"))
    return [text.encode() for text in texts]


def prepare_scratch(scratch: Path) -> Path:
    """The files the seeds name: secrets (mode 600) and rule files; returns the config path."""
    (scratch / "rules").mkdir(exist_ok=True)
    (scratch / "rules" / "extra.yaml").write_text(RULES_FILE)
    default = ROOT / "rules" / "default.yaml"
    if default.is_file():
        (scratch / "rules" / "default.yaml").write_text(default.read_text(encoding="utf-8"))
    for name, secret in FILE_SECRETS.items():
        (scratch / name).write_text(secret + "\n")
        (scratch / name).chmod(0o600)
    return scratch / "config.yaml"


# -- tree mutations ---------------------------------------------------------------------


def _slots(tree: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in ``tree``, depth first."""
    found: list[tuple[Any, Any]] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                found.append((node, key))
                pending.append(value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                found.append((node, index))
                pending.append(value)
    return found


def _awkward(rng: random.Random) -> Any:
    return _copy(rng.choice(VALUES))  # a copy: later mutations must not change VALUES


def mutate_tree(tree: Any, rng: random.Random, donors: list[Any]) -> Any:
    """Apply one to four structural mutations to ``tree`` (in place where it can)."""
    if not isinstance(tree, dict | list):
        return _awkward(rng)
    for _ in range(rng.randint(1, 4)):
        slots = _slots(tree)
        if not slots:
            return tree
        container, key = rng.choice(slots)
        kind = rng.randrange(8)
        if kind <= 1:
            container[key] = _awkward(rng)
        elif kind == 2 and isinstance(container, dict):
            del container[key]
        elif kind == 3 and isinstance(container, dict):
            container[rng.choice(KEYS)] = _awkward(rng) if rng.random() < 0.7 else container[key]
        elif kind == 4 and isinstance(container, dict):
            container[rng.choice(KEYS)] = container.pop(key)
        elif kind == 5 and isinstance(container, list):
            container.insert(rng.randrange(len(container) + 1), container[key])
        elif kind == 6:
            container[key] = [container[key]] if rng.random() < 0.5 else {"x": container[key]}
        else:
            donor_slots = _slots(rng.choice(donors))
            if donor_slots:
                donor, donor_key = rng.choice(donor_slots)
                container[key] = _copy(donor[donor_key])
    return tree


def _dump(tree: Any, rng: random.Random) -> bytes | None:
    flow = rng.choice((None, False, True))
    try:
        text = yaml.safe_dump(
            tree, default_flow_style=flow, sort_keys=False, allow_unicode=rng.random() < 0.5
        )
    except (ValueError, yaml.YAMLError):  # e.g. an int past str()'s digit limit
        return None
    return text.encode("utf-8", "surrogatepass")


def mutate_lines(data: bytes, rng: random.Random, other: bytes) -> bytes:
    """Line-level edits: drop, duplicate, swap, re-indent, or splice another seed's lines."""
    lines = data.split(b"\n")
    theirs = other.split(b"\n")
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(lines))
        kind = rng.randrange(5)
        if kind == 0 and len(lines) > 1:
            del lines[at]
        elif kind == 1:
            lines.insert(at, lines[at])
        elif kind == 2:
            other_at = rng.randrange(len(lines))
            lines[at], lines[other_at] = lines[other_at], lines[at]
        elif kind == 3:
            stripped = lines[at].lstrip(b" ")
            lines[at] = b" " * rng.choice((0, 1, 2, 3, 4, 6, 8)) + stripped
        else:
            start = rng.randrange(len(theirs))
            lines[at:at] = theirs[start : start + rng.randint(1, 6)]
    return b"\n".join(lines)


# -- the target -------------------------------------------------------------------------


def _secret_strings(value: Any) -> list[str]:
    """Every SecretStr value held in a config (walked through the public models)."""
    found: list[str] = []
    if isinstance(value, SecretStr):
        found.append(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            found += _secret_strings(getattr(value, name))
    elif isinstance(value, tuple | list):
        for item in value:
            found += _secret_strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            found += _secret_strings(item)
    return found


class ConfigFuzzer:
    """The config target: YAML inputs written to a file and loaded."""

    name = NAME

    def __init__(self, scratch: Path) -> None:
        self.path = prepare_scratch(scratch)
        texts = seed_texts()
        # Deep flow nesting costs PyYAML about a second per input past ~500 levels (it
        # stops at Python's recursion limit): a few such inputs, not thousands.
        self.mutator = Mutator(
            texts, YAML_TOKENS, max_len=256 * 1024, nest_depths=(2, 8, 64, 64, 600)
        )
        self.trees = [tree for tree in map(_safe_load, texts) if isinstance(tree, dict | list)]

    def generate(self, rng: random.Random) -> bytes:
        mode = rng.random()
        if mode < 0.45:
            return self.mutator.generate(rng)
        if mode < 0.55:
            return mutate_lines(self.mutator.pick(rng), rng, self.mutator.pick(rng))
        tree = _copy(rng.choice(self.trees))
        out = _dump(mutate_tree(tree, rng, self.trees), rng)
        if out is None:
            return self.mutator.generate(rng)
        if rng.random() < 0.2:
            data = bytearray(out)
            rng.choice((Mutator.insert_token, Mutator.replace_with_token, Mutator.flip_bit))(
                self.mutator, rng, data
            )
            out = bytes(data)
        return out

    def check(self, data: bytes, rng: random.Random) -> None:
        self.path.write_bytes(data)
        os.chmod(self.path, 0o644 if rng.random() < 0.3 else 0o600)
        if rng.random() < 0.75:
            self.check_config()
        else:
            self.check_rule_file()
        if rng.random() < 0.2:
            check_models(data)
        check_scalars(data, rng)

    def check_config(self) -> None:
        try:
            cfg = load_config(self.path, environ=ENVIRON)
        except ConfigError as exc:
            _no_env_secret("error", str(exc))
            return
        if not isinstance(cfg, Config):
            raise Invariant("config-type", f"load_config returned {type(cfg).__name__}")
        for warning in cfg.warnings:
            if not isinstance(warning, str):
                raise Invariant("warning-type", "a warning is not text")
            _no_env_secret("warning", warning)
        for secret in _secret_strings(cfg):
            if len(secret) >= 4 and secret in cfg.redact(f"<< {secret} >>"):
                raise Invariant("redact", "redact left a secret of the config in place")

    def check_rule_file(self) -> None:
        try:
            rules = load_rule_file(self.path, environ=ENVIRON)
        except ConfigError as exc:
            _no_env_secret("error", str(exc))
            return
        if not isinstance(rules, list):
            raise Invariant("rules-type", f"load_rule_file returned {type(rules).__name__}")


def _no_env_secret(where: str, text: str) -> None:
    for secret in DERIVED_SECRETS:
        if secret in text:
            raise Invariant(f"secret-in-{where}", "an ${ENV} secret was shown")


def _safe_load(data: bytes) -> Any:
    """PyYAML's own reading, or None where it fails (how it fails is not ours to judge)."""
    try:
        return yaml.safe_load(data)
    except Exception:
        return None


def _copy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _copy(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_copy(value) for value in tree]
    return tree


def check_models(data: bytes) -> None:
    """Each section of the input's tree straight into its pydantic model."""
    tree = _safe_load(data)
    if not isinstance(tree, dict):
        return
    for key, validate in MODELS.items():
        if key in tree:
            _validate(validate, tree[key])
    for key, validate in ITEM_MODELS.items():
        items = tree.get(key)
        if isinstance(items, list):
            for item in items[:8]:
                _validate(validate, item)
    _validate(Config.model_validate, {k: v for k, v in tree.items() if k in Config.model_fields})


def _validate(validate: Callable[[Any], Any], value: Any) -> None:
    with contextlib.suppress(ValidationError):
        validate(value)


def check_scalars(data: bytes, rng: random.Random) -> None:
    """A value of the input through the unit parsers: ValueError is their only error."""
    lines = data.split(b"\n")
    line = lines[rng.randrange(len(lines))]
    text = line.partition(b":")[2].strip().decode("utf-8", "replace").strip("'\"[]{} ,")
    values: list[Any] = [text]
    if text.lstrip("-").isdigit():
        with contextlib.suppress(ValueError):  # past int()'s digit limit
            values.append(int(text))
    for parse in (parse_duration, parse_hashrate, parse_ratio):
        for value in values:
            with contextlib.suppress(ValueError):
                parse(value)
    for parse_text in (parse_shard, expand_hosts):
        with contextlib.suppress(ValueError):
            parse_text(text)
