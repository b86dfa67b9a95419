"""The config loader's two readings of YAML agree: the fast one (libyaml's events, no node
tree, lines found only when a message needs them) gives the same data, the same lines
and the same messages as the exact one, and gives way to it for anything it does not
take plainly."""

from __future__ import annotations

import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgwatchdog.config import MinerConfig
from cgwatchdog.config.loader import MinerEntry, _Loader, load_config
from cgwatchdog.config.models import miner_config
from cgwatchdog.errors import ConfigError

ENV = {"SITE": "north", "TOKEN": "s3cr3t-token", "EMPTY": ""}

# Plainly written documents: the fast reading takes each of them.
PLAIN = {
    "block and flow": """\
        poll: {interval: 30s, timeout: 5s, concurrency: 64}
        miners:
          - name: a
            host: 127.0.0.1
            port: 4028
            labels: {site: "${SITE}", rack: 'r1', note: "a $$ sign"}
            expected_hashrate: 13.5 TH/s
          - {name: b, host: 127.0.0.2, port: 4029, firmware: antminer}
          - hosts: [127.0.1.1-3]
            name: "r-{index}"
        rule_files: []
        """,
    "every scalar kind": """\
        http: {listen: "127.0.0.1:9841", per_device_metrics: yes}
        actions: {dry_run: false, max_actions_per_hour: 0x10, restart_grace_s: 1_000}
        miners:
          - {name: "on", host: 127.0.0.3, expected_hashrate: 1.5e3 GH/s, labels: {when: 2026-12-07, none: ~, n: 12, f: .5, b: True}}
        rule_files: []
        """,
    "a secret file and comments": """\
        # a comment
        miners:  # trailing
          - name: c
            host: 127.0.0.4
            credentials:
              username: root
              password_file: pw.txt
        rule_files: []
        """,
}

# Documents the fast reading leaves to the exact one: odd, or with a problem to word.
ODD = {
    "anchor and alias": """\
        x: &labels {site: a}
        miners:
          - {name: a, host: 127.0.0.1, labels: *labels}
        """,
    "merge": """\
        base: &base {port: 4028}
        miners:
          - <<: *base
            name: a
            host: 127.0.0.1
        """,
    "explicit tag": "miners:\n  - {name: !!str 12, host: 127.0.0.1}\n",
    "duplicate key": "poll: {interval: 30s}\npoll: {interval: 10s}\nminers: []\n",
    "both password orders": """\
        miners:
          - name: a
            host: 127.0.0.1
            credentials: {password_file: pw.txt, password: x}
        """,
    "unset variable": "miners:\n  - {name: '${NOPE}', host: 127.0.0.1}\n",
    "missing secret file": """\
        miners:
          - {name: a, host: 127.0.0.1, credentials: {password_file: absent.txt}}
        """,
    "two documents": "miners: []\n---\nminers: []\n",
    "a list at the top": "- a\n- b\n",
    "empty": "",
    "bad timestamp": "miners:\n  - {name: a, host: 127.0.0.1, labels: {d: 2026-13-45}}\n",
    "complex key": "? [a, b]\n: c\nminers: []\n",
    "syntax error": "miners: [a, b\n",
}

# Plain YAML that the models refuse: read fast, its lines found for the messages.
REFUSED = """\
    poll: {interval: soon}
    miners:
      - {name: a, host: 127.0.0.1}
      - {name: a, host: 127.0.0.2}
      - {host: 127.0.0.3, port: 99999}
    rule_files: []
    """


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pw.txt").write_text("hunter2\n")
    (tmp_path / "pw.txt").chmod(0o600)
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    path.chmod(0o600)
    return path


def outcome(path: Path, *, fast: bool) -> tuple[object, list[str]]:
    """The loaded config (its values, and what its redactor hides) and its warnings, or
    the problems' text."""
    loader = _Loader(ENV, fast=fast)
    try:
        config = loader.config(path)
    except ConfigError as exc:
        return None, [str(p) for p in exc.problems]
    hides = config.redact("hunter2 s3cr3t-token north")
    return (config.model_dump(), config.miners, hides), list(loader.warnings)


def read_both(path: Path) -> tuple[object, object]:
    fast = _Loader(ENV).read_fast(path.read_text(), str(path), path.parent)
    exact = _Loader(ENV, fast=False).read(path, "the config")
    return fast, exact


@pytest.mark.parametrize("name", PLAIN)
def test_a_plain_document_is_read_fast_with_the_same_data_and_lines(
    tmp_path: Path, name: str
) -> None:
    path = write(tmp_path, PLAIN[name])
    data, exact = read_both(path)
    assert data is not None, "the fast reading should take this document"
    assert exact is not None and data == exact.data
    fast_doc = _Loader(ENV).read(path, "the config")
    assert fast_doc is not None and fast_doc.lines == exact.lines  # made when asked
    assert outcome(path, fast=True) == outcome(path, fast=False)


@pytest.mark.parametrize("name", ODD)
def test_anything_else_is_left_to_the_exact_reading_with_the_same_messages(
    tmp_path: Path, name: str
) -> None:
    path = write(tmp_path, ODD[name])
    data, _ = read_both(path)
    assert data is None, "the fast reading should give way"
    assert outcome(path, fast=True) == outcome(path, fast=False)


def test_problems_found_after_a_fast_read_name_the_same_lines(tmp_path: Path) -> None:
    # Read fast (nothing odd in the YAML), but the models refuse it: lines come late.
    path = write(tmp_path, REFUSED)
    assert read_both(path)[0] is not None
    _, problems = outcome(path, fast=True)
    assert problems == outcome(path, fast=False)[1]
    assert [p.split(":", 1)[1] for p in problems] == [
        "1: poll.interval: 'soon' is not a duration; write e.g. 500ms, 30s, 5m, 4h, 1d or 1h30m",
        "4: miners[1].name: miner name 'a' is already used (line 3)",
        "5: miners[2].port: must be at most 65535",
    ]


def test_a_secret_read_fast_is_redacted_like_one_read_exactly(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        miners:
          - {name: a, host: 127.0.0.1, port: 70000,
             credentials: {password_file: pw.txt}, labels: {t: "${TOKEN}"}}
        rule_files: []
        """,
    )
    with pytest.raises(ConfigError) as fast:
        load_config(path, environ=ENV)
    assert "hunter2" not in str(fast.value) and "s3cr3t-token" not in str(fast.value)
    assert outcome(path, fast=True) == outcome(path, fast=False)


# Small documents from a grammar of what configs are made of, plain and odd alike.
_words = st.sampled_from(["a", "b", "name", "host", "port", "x_file", "<<", "on", "$HOME"])
_scalars = st.one_of(
    st.sampled_from(
        ["1", "0x1f", "1.5", "-.inf", "null", "~", "yes", "No", "2026-12-07", "a b", "'q'",
         '"d${SITE}"', '"$${X}"', "${EMPTY}", "${NOPE}", "*a", "&a v", "!!str 5", "[]", "{}"]
    ),
    _words,
)  # fmt: skip
_values: st.SearchStrategy[str] = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(_words, inner), max_size=3).map(
            lambda pairs: "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
        ),
    ),
    max_leaves=8,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(_words, _values), min_size=1, max_size=4))
def test_the_two_readings_agree_on_any_small_document(
    tmp_path: Path, pairs: list[tuple[str, str]]
) -> None:
    path = tmp_path / "doc.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in pairs))
    fast = _Loader(ENV).read(path, "the file")
    exact_loader = _Loader(ENV, fast=False)
    exact = exact_loader.read(path, "the file")
    if fast is None or exact is None:
        assert fast is None and exact is None
        return
    if exact_loader.problems:  # the exact reading complained: the fast one must not take it
        assert _Loader(ENV).read_fast(path.read_text(), str(path), path.parent) is None
        return
    assert fast.data == exact.data
    assert fast.lines == exact.lines


def test_a_miner_made_without_validation_equals_the_validated_one() -> None:
    entry = MinerEntry.model_validate(
        {"name": "a", "host": "127.0.0.1", "port": 4029, "labels": {"site": "n"},
         "expected_hashrate": "13.5 TH/s", "firmware": "antminer", "control_port": 8080}
    )  # fmt: skip
    made = miner_config("a", "127.0.0.1", entry)
    constructed = MinerConfig.model_construct(
        name="a", host="127.0.0.1", port=4029, labels={"site": "n"},
        expected_hashrate_hs=entry.expected_hashrate, firmware="antminer", control_port=8080,
        credentials=None,
    )  # fmt: skip
    validated = MinerConfig.model_validate(constructed.model_dump())
    assert made == constructed == validated
    assert made.model_fields_set == constructed.model_fields_set
    assert made.model_dump() == validated.model_dump()
    assert made.model_copy(update={"port": 1}).port == 1 and made.port == 4029
    with pytest.raises(ValueError):
        made.port = 5  # type: ignore[misc]  # frozen, as a validated one


def test_miners_made_without_validation_share_their_keys() -> None:
    """Before 3.13 the miners share one table of keys, each holding only its values:
    about half the memory of a dict of its own each, whatever was made before them
    (CPython gives a class less room for new keys with every object made). On 3.13,
    which shares none for this class, each has the dict it is given."""
    validated = [MinerConfig(name=f"v{i}", host="127.0.0.1", labels={"a": "b"}) for i in range(100)]
    assert len(validated) == 100
    entry = MinerEntry.model_validate({"host": "127.0.0.1"})
    names = [f"rack1-{i:04d}" for i in range(500)]

    def traced(make: Callable[[str], object]) -> int:
        tracemalloc.start()
        try:
            made = [make(name) for name in names]
            return tracemalloc.get_traced_memory()[0] // len(made)
        finally:
            tracemalloc.stop()

    def own_dict(name: str) -> object:
        miner = MinerConfig.__new__(MinerConfig)
        object.__setattr__(miner, "__dict__", {**miner_config(name, "h", entry).__dict__})
        return miner

    shared, separate = traced(lambda name: miner_config(name, "127.0.0.1", entry)), traced(own_dict)
    print(f"\nminers from entries: {shared} bytes a miner, {separate} with a dict each")
    if sys.version_info < (3, 13):
        assert shared < 0.7 * separate, (shared, separate)
    else:
        assert shared < 1.1 * separate, (shared, separate)  # the same, give or take


def test_miners_with_equal_labels_share_one_dict(tmp_path: Path) -> None:
    """One entry a miner, as scripts write them: equal labels (or none) are one dict."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "miners:\n"
        "  - {name: a, host: 127.0.0.1}\n"
        "  - {name: b, host: 127.0.0.2}\n"
        "  - {name: c, host: 127.0.0.3, labels: {site: north, rack: '1'}}\n"
        "  - {name: d, host: 127.0.0.4, labels: {site: north, rack: '1'}}\n"
        "  - {name: e, host: 127.0.0.5, labels: {site: north, rack: '2'}}\n"
        "  - {name: 'f{index}', hosts: [127.0.1.1-2], labels: {site: north, rack: '1'}}\n"
    )
    a, b, c, d, e, f1, f2 = load_config(config).miners
    assert a.labels == {} and a.labels is b.labels
    assert c.labels == {"site": "north", "rack": "1"}
    assert c.labels is d.labels is f1.labels is f2.labels
    assert e.labels == {"site": "north", "rack": "2"} and e.labels is not c.labels
