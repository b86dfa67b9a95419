"""The fuzzers of tests/fuzz/ in short seeded runs, and every crash they found, kept.

The long runs (``python tests/fuzz/run.py --target decoder --inputs 1000000``) are not
part of the suite; here each target runs a few thousand inputs of a fixed seed, the
harness itself is checked (reproducible inputs, crashes saved and reported), and each
input that once crashed is decoded or loaded again and must now give the typed error.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cgwatchdog import protocol
from cgwatchdog.config.loader import load_config, load_rule_file
from cgwatchdog.errors import ConfigError, ProtocolError
from cgwatchdog.protocol import decode_reply
from tests.fuzz import run
from tests.fuzz.engine import FuzzerFactory, Invariant, Result, fuzz, input_rngs, run_batch
from tests.fuzz.fuzz_config import ConfigFuzzer
from tests.fuzz.fuzz_decoder import DecoderFuzzer, fixture_replies

ROOT = Path(__file__).resolve().parents[1]


# -- short runs ---------------------------------------------------------------------------


def crashes_of(result: Result) -> list[str]:
    return [f"{c.signature} (#{c.index}): {c.message}" for c in result.crashes.values()]


def test_decoder_fuzz_short_run() -> None:
    if not fixture_replies():
        pytest.skip("field captures not found: the decoder's seeds would lack them")
    result = fuzz(DecoderFuzzer, inputs=3000, seed=1)
    assert result.inputs == 3000
    assert crashes_of(result) == []


def test_config_fuzz_short_run() -> None:
    result = fuzz(ConfigFuzzer, inputs=600, seed=1)
    assert result.inputs == 600
    assert crashes_of(result) == []


@pytest.mark.parametrize("factory", [DecoderFuzzer, ConfigFuzzer], ids=["decoder", "config"])
def test_input_i_is_the_same_whatever_came_before(factory: FuzzerFactory, tmp_path: Path) -> None:
    fuzzer = factory(tmp_path)
    in_order = [fuzzer.generate(input_rngs(7, i)[0]) for i in range(150)]
    again = {i: fuzzer.generate(input_rngs(7, i)[0]) for i in reversed(range(0, 150, 7))}
    assert all(again[i] == in_order[i] for i in again)
    assert len(set(in_order)) > 100  # and they differ from one another


class Brittle:
    """A target that crashes on inputs holding "!" and breaks an invariant on "?"."""

    name = "brittle"

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch

    def generate(self, rng: random.Random) -> bytes:
        return bytes(rng.choice(b"ab!?") for _ in range(4))

    def check(self, data: bytes, rng: random.Random) -> None:
        if b"!" in data:
            {b"ab": 1}[data]  # a KeyError, as a real bug would raise
        if b"?" in data:
            raise Invariant("no-question", "a question mark")


def test_crashes_are_grouped_saved_and_fail_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_batch(Brittle(tmp_path), 3, 0, 200)
    key_error, invariant = sorted(result.crashes)
    assert invariant == "invariant no-question"
    assert key_error.startswith("KeyError in test_fuzz.py:") and key_error.endswith(" check")
    assert result.crashing_inputs == sum(
        1 for i in range(200) if set(Brittle(tmp_path).generate(input_rngs(3, i)[0])) & set(b"!?")
    )
    monkeypatch.setitem(run.TARGETS, "brittle", Brittle)
    crashes = tmp_path / "crashes"
    code = run.main(["--target", "brittle", "--inputs", "200", "--seed", "3",
                     "--crashes", str(crashes), "--quiet"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert "fuzz brittle: 200 inputs in " in out and ": 2 distinct crashes (" in out
    saved = sorted(crashes.glob("*.bin"))
    assert len(saved) == 2
    for path in saved:
        data = path.read_bytes()
        assert b"!" in data or b"?" in data
        text = path.with_suffix(".txt").read_text()
        index = int(re.search(r"first: #(\d+)", text)[1])  # type: ignore[index]
        assert run.replay(Brittle, data, 3, index) == 1  # the replay command reproduces it


def test_the_command_line_runs_and_summarises(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "tests/fuzz/run.py", "--target", "decoder", "--inputs", "300",
         "--seed", "2", "--crashes", str(tmp_path), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.fullmatch(
        r"fuzz decoder: 300 inputs in [\d.]+ s \(\d+ inputs/s, seed 2, 1 job\): "
        r"0 distinct crashes \(0 inputs\); slowest input [\d.]+ s \(#\d+\)\n",
        done.stdout,
    ), done.stdout
    assert list(tmp_path.iterdir()) == []


# -- crashes found by the config fuzzer, now ConfigErrors ---------------------------------

HUGE = "9" * 400  # an integer YAML reads exactly, past a float's range
TOO_LONG = "1" * 5000  # past Python's 4300-digit limit for int()


@pytest.mark.parametrize(
    "text, problem",
    [
        # OverflowError from float(int) in parse_duration / parse_hashrate / parse_ratio
        (f"poll: {{interval: {HUGE}}}\n", "1: poll.interval: that number is too large for a duration"),
        (f"miners: [{{host: 10.0.0.1, expected_hashrate: {HUGE}}}]\n",
         "1: miners[0].expected_hashrate: that number is too large for a hashrate"),
        (f"actions: {{fleet_incident_share: {HUGE}}}\n",
         f"1: actions.fleet_incident_share: {HUGE} is not a ratio; write a percentage such "
         "as 80% or a fraction such as 0.8"),
        # PyYAML's constructors: ValueError, KeyError, AttributeError
        ("silences: [{match: {a: b}, until: 2026-13-45}]\n",
         "1: silences[0].until: cannot read this value as timestamp: month must be in 1..12"),
        ("silences:\n  - match: {a: b}\n    until: 2026-02-30\n",
         "3: silences[0].until: cannot read this value as timestamp: day is out of range for month"),
        (f"poll: {{concurrency: {TOO_LONG}}}\n",
         "1: poll.concurrency: cannot read this value as int: Exceeds the limit (4300 digits) "
         "for integer string conversion"),
        ("actions: {dry_run: !!bool ops@example.org}\n",
         "1: actions.dry_run: cannot read this value as bool: not valid"),
        ("silences: [{match: {a: b}, until: !!timestamp 'next tuesday'}]\n",
         "1: silences[0].until: cannot read this value as timestamp: not valid"),
        # a control character PyYAML refuses before parsing (ReaderError)
        ("poll:\n  interval: 30s\x00\n", "2: config file holds a control character YAML does not allow (#x0000)"),
        ("poll: {interval: 30s}\nhttp: {listen: '127.0.0.1:1\x07'}\n",
         "2: config file holds a control character YAML does not allow (#x0007)"),
        # a NUL byte in a *_file path (ValueError from open)
        ('heartbeat: {url_file: "hb\\0url"}\n', "1: heartbeat.url_file: the path holds a NUL byte"),
        # a root mapping with an unsupported tag built to None (TypeError)
        ("!!set\n? a\n? b\n", "1: unsupported YAML tag 'tag:yaml.org,2002:set'"),
        # PyYAML's scanner hands a \U escape past U+10FFFF to chr() (ValueError)
        ('poll: {interval: "\\U1e999fff"}\n',
         "1: YAML syntax error: chr() arg not in range(0x110000)"),
        # a lone surrogate in a *_file path (UnicodeEncodeError from open)
        ('heartbeat: {url_file: "\\ud800"}\n', "1: heartbeat.url_file: the path is not valid text"),
        # 400 digits and a unit: an infinite duration (ValidationError out of the route)
        (f"route: {{receiver: a, group_wait: {HUGE}s}}\nreceivers: [{{name: a, apprise: {{urls: 'x://y'}}}}]\n",
         f"1: route.group_wait: '{HUGE}s' is not a duration: it must be a finite number, not negative"),
        (f"poll: {{interval: {HUGE}h}}\n",
         f"1: poll.interval: '{HUGE}h' is not a duration: it must be a finite number, not negative"),
        # a {field} inside a miner name's format spec (KeyError from str.format), and the
        # widths that would build a gigabyte per name
        ('miners: [{hosts: 10.0.0.0/30, name: "south-{index:03d{x}}"}]\n',
         "1: miners[0]: name template 'south-{index:03d{x}}': a format spec may not hold a "
         "{field} or a width past 999"),
        ('miners: [{hosts: 10.0.0.0/30, name: "m-{index:>999999999}"}]\n',
         "1: miners[0]: name template 'm-{index:>999999999}': a format spec may not hold a "
         "{field} or a width past 999"),
        # a template nested past the recursion limit (RecursionError in Jinja's parser)
        ("rules: [{name: A, type: unreachable, annotations: {summary: '{{ " + "(" * 2000 + "1"
         + ")" * 2000 + " }}'}}]\n", "1: rules[0].annotations.summary: template nested too deeply"),
    ],
    ids=["duration", "hashrate", "ratio", "month-13", "feb-30", "int-5000-digits", "bool-word",
         "timestamp-word", "nul-char", "bell-char", "nul-in-file-path", "tagged-root",
         "unicode-escape-past-10ffff", "surrogate-in-file-path", "infinite-route-timer",
         "infinite-interval", "field-in-name-spec", "name-padding",
         "deep-template"],
)  # fmt: skip
def test_config_fuzz_crashes_are_config_errors(tmp_path: Path, text: str, problem: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_bytes(text.encode())
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={})
    assert f"{config}:{problem}" in [str(p) for p in caught.value.problems]


def test_a_rule_file_with_a_control_character_is_a_config_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_bytes(b"rules:\n  - {name: A, type: unreachable}\x1b\n")
    with pytest.raises(ConfigError) as caught:
        load_rule_file(rules)
    assert str(caught.value) == (
        f"{rules}:2: rule file holds a control character YAML does not allow (#x001b)"
    )


def test_a_secret_url_given_as_a_file_name_is_not_shown(tmp_path: Path) -> None:
    # Found by the fuzzer: url_file: ${URL} showed the URL's path as a file name.
    config = tmp_path / "c.yaml"
    config.write_text('heartbeat: {url_file: "${HB}/x"}\n')
    url = "https://hc-ping.example.com/ping/5e3c0b7e-secret-uuid"
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={"HB": url})
    (problem,) = caught.value.problems
    assert "5e3c0b7e-secret-uuid" not in str(problem)
    assert problem.message.startswith("heartbeat.url_file: cannot read ")
    assert problem.message.endswith("<redacted>: No such file or directory")


@pytest.mark.parametrize(
    "text",
    [
        "rule_files: ['~no-such-user-cgw/rules.yaml']\n",
        "heartbeat: {url_file: '~no-such-user-cgw/url'}\n",
        'rule_files: ["rules\\0/*.yaml"]\n',  # YAML reads \0 in double quotes as a NUL
        'state_dir: "/var/lib/cgw\\0"\n',  # the store's open() raised ValueError at start
        'state_dir: "/var/lib/\\ud800"\n',
    ],
    ids=["tilde-user-in-rule-files", "tilde-user-in-url-file", "nul-in-rule-files",
         "nul-in-state-dir", "surrogate-in-state-dir"],
)  # fmt: skip
def test_unusable_paths_are_config_errors(tmp_path: Path, text: str) -> None:
    # Found next to the fuzzer's NUL crash: these paths reached Path and glob unchecked.
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={})
    message = str(caught.value)
    assert any(why in message for why in ("no such user", "NUL byte", "not valid text")), message


# -- found by the decoder fuzzer ----------------------------------------------------------


@pytest.mark.skipif(protocol._fast_loads is None, reason="orjson (the [fast] extra) not installed")
@pytest.mark.parametrize("depth", [600, 900, 990, 1020])
def test_deep_nesting_reads_the_same_with_and_without_orjson(depth: int) -> None:
    # orjson reads 1024 levels, json fewer (the recursion limit less the caller's frames):
    # a reply between the two decoded with orjson and failed without it.
    body = b'{"STATUS":[{"STATUS":"S"}],"x":' + b"[" * depth + b"]" * depth + b"}"
    try:
        lenient: object = protocol._decode_json(body.decode())
    except ProtocolError as exc:
        lenient = type(exc)
    try:
        decoded: object = decode_reply(body)
    except ProtocolError as exc:
        decoded = type(exc)
    assert decoded == lenient
