"""Regenerate the parts of docs/ that are drawn from the code.

    python docs/generate.py           rewrite them in place
    python docs/generate.py --check   exit 1 (and say which) if any is out of date

A generated part sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` in
a Markdown file; everything outside the markers is written by hand. The tests run the
check, so a change to the code that changes a generated part fails until this is run.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import inspect
import pkgutil
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

import cgwatchdog  # noqa: E402 - after the path: the checkout's package, not an installed one

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr):`~?([^`]+)`")


def _summary(module: object) -> str:
    """The first paragraph of a module's docstring, on one line, without Sphinx roles."""
    doc = (getattr(module, "__doc__", None) or "").strip().split("\n\n")[0]
    text = " ".join(doc.split())
    return _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text).replace("|", "\\|")


def modules_table() -> str:
    """Every module of the package and what it owns, from its docstring."""
    names = sorted(
        info.name
        for info in pkgutil.walk_packages(cgwatchdog.__path__, "cgwatchdog.")
        if not info.name.endswith("__main__")
    )
    rows = ["| module | owns |", "|---|---|"]
    for name in names:
        module = importlib.import_module(name)
        path = name.replace(".", "/")
        is_package = hasattr(module, "__path__")
        shown = f"`{path}/`" if is_package else f"`{path}.py`"
        rows.append(f"| {shown} | {_summary(module)} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- config keys


def _validators(field: FieldInfo) -> set[Callable[..., Any]]:
    found: set[Callable[..., Any]] = set()
    for item in field.metadata:
        func = getattr(item, "func", None)
        if callable(func):
            found.add(func)
    return found


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if len(members) == 1:
            return members[0], True
    return tp, False


def _type_text(tp: Any, field: FieldInfo | None = None) -> str:
    """A field's type in words."""
    from pydantic import BaseModel, SecretStr

    from cgwatchdog.units import parse_duration, parse_hashrate, parse_ratio

    funcs = _validators(field) if field is not None else set()
    if parse_duration in funcs:
        return "duration"
    if parse_ratio in funcs:
        return "percentage"
    if parse_hashrate in funcs:
        return "hashrate"
    while True:
        tp, _ = _unwrap_optional(tp)
        if typing.get_origin(tp) is not typing.Annotated:
            break
        args = typing.get_args(tp)
        inner_funcs = {getattr(m, "func", None) for m in args[1:]}
        if parse_duration in inner_funcs:
            return "duration"
        if parse_ratio in inner_funcs:
            return "percentage"
        if parse_hashrate in inner_funcs:
            return "hashrate"
        tp = args[0]
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin in (tuple, list):
        return f"list of {_type_text(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {_type_text(typing.get_args(tp)[1])}"
    if isinstance(tp, type):
        if issubclass(tp, SecretStr):
            return "secret (or `*_file`, `${ENV}`)"
        if issubclass(tp, BaseModel):
            return f"mapping ({tp.__name__})"
        if tp is bool:
            return "true/false"
        if tp is int:
            return "whole number"
        if tp is float:
            return "number"
        if tp is str:
            return "text"
        if tp.__name__ == "datetime":
            return "date and time (UTC)"
        if issubclass(tp, Path):
            return "path"
        return tp.__name__
    return str(tp)


def _default_text(field: FieldInfo, kind: str) -> str:
    from pydantic_core import PydanticUndefined

    from cgwatchdog.units import format_duration, format_hashrate, format_percent

    if field.is_required():
        return "required"
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    if value is None:
        return "—"
    if value in ({}, (), []):
        return "none"
    if kind == "duration" and isinstance(value, int | float):
        return format_duration(value)
    if kind == "percentage" and isinstance(value, int | float):
        return format_percent(value)
    if kind == "hashrate" and isinstance(value, int | float):
        return format_hashrate(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return "`[" + ", ".join(str(item) for item in value) + "]`"
    return f"`{value}`"


def _key(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    return alias if isinstance(alias, str) else name.rstrip("_")


def model_table(model: type[Any], skip: tuple[str, ...] = ()) -> str:
    """Every key of a config model: type, default, what it does."""
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = _key(name, field)
        if key in skip:
            continue
        kind = _type_text(field.annotation, field)
        doc = _md(" ".join(_field_doc(model, name, field).split())).replace("|", "\\|")
        rows.append(f"| `{key}` | {kind} | {_default_text(field, kind)} | {doc} |")
    return "\n".join(rows)


def _field_doc(model: type[Any], name: str, field: FieldInfo) -> str:
    """What a field does: its ``Field(description=...)``, else the docstring under it in
    the class that declares it, as pydantic's ``use_attribute_docstrings`` would find it
    (the models leave that off: it reads and parses their source on every import)."""
    if field.description:
        return field.description
    for cls in model.__mro__:
        if name in vars(cls).get("__annotations__", {}):
            return _attribute_docs(cls).get(name, "")
    return ""


@functools.cache
def _attribute_docs(cls: type[Any]) -> dict[str, str]:
    """The string written right under each annotated attribute of ``cls``'s own body."""
    [tree] = ast.parse(textwrap.dedent(inspect.getsource(cls))).body
    assert isinstance(tree, ast.ClassDef)
    docs = {}
    for statement, after in zip(tree.body, tree.body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[statement.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _md(text: str) -> str:
    """reStructuredText literals as Markdown code."""
    return text.replace("``", "`")


def _model_doc(model: type[Any]) -> str:
    return _md(" ".join((model.__doc__ or "").strip().split("\n\n")[0].split()))


def configuration_reference() -> str:
    """Every section and key of the config file, from the models."""
    from cgwatchdog.config import models
    from cgwatchdog.notify import RECEIVER_KINDS, WEBHOOK_FORMATS

    sections: list[tuple[str, type[Any], str]] = [
        ("poll", models.PollConfig, ""),
        ("http", models.HttpConfig, ""),
        (
            "miners (each item)",
            models.MinerEntry,
            "`miners:` is a list; each item is one miner or a range.",
        ),
        ("miners[].credentials", models.Credentials, ""),
        ("actions", models.ActionsConfig, ""),
        ("route (and each of its routes)", models.RouteSpec, ""),
        ("silences (each item)", models.SilenceConfig, ""),
        ("cluster", models.ClusterConfig, ""),
        ("heartbeat", models.HeartbeatConfig, ""),
    ]
    out: list[str] = [
        "| top-level key | what it holds |",
        "|---|---|",
        "| `poll` | how the fleet is polled |",
        "| `state_dir` | where the state file lives (default `/var/lib/cgwatchdog`; relative: "
        "beside the config) |",
        "| `http` | the local HTTP endpoint |",
        "| `miners` | the miners, one by one or by ranges |",
        "| `rule_files` | globs of rule files (relative: beside the config); absent (and no "
        "`rules`): the packaged rules; `[]`: none |",
        "| `rules` | rules written in the config itself (see docs/RULES.md) |",
        "| `receivers` | where notifications go |",
        "| `route` | which receiver gets which alerts, grouped how |",
        "| `actions` | the safeguards around every repair |",
        "| `silences` | alerts muted for a while |",
        "| `cluster` | shards and replicas |",
        "| `heartbeat` | the dead man's switch ping |",
        "| `severities` | the severities rules may use (then any other is an error) |",
        "",
    ]
    for title, model, intro in sections:
        out += [f"### `{title}`", "", _model_doc(model)]
        if intro:
            out += ["", intro]
        out += ["", model_table(model), ""]
    out += [
        "### `receivers` (each item)",
        "",
        _model_doc(models.ReceiverConfig),
        "",
        model_table(models.ReceiverConfig),
        "",
        "and exactly one of these keys, each configured as below: "
        + ", ".join(f"`{kind}`" for kind in RECEIVER_KINDS.names())
        + ".",
        "",
    ]
    for kind in RECEIVER_KINDS.values():
        out += [
            f"#### `{kind.name}`",
            "",
            _model_doc(kind.config),
            "",
            model_table(kind.config),
            "",
        ]
        if kind.name == "webhook":
            out += ["Formats (`format:`):", "", "| format | needs |", "|---|---|"]
            for fmt in WEBHOOK_FORMATS.values():
                needs = ", ".join(f"`{n}`" for n in fmt.needs) or "—"
                out.append(f"| `{fmt.name}` | {needs} |")
            out.append("")
    out += [
        "#### `auth` (webhook and alertmanager)",
        "",
        model_table(models.AuthConfig),
        "",
        "`basic`: " + model_table(models.BasicAuth).replace("\n", "\n"),
        "",
        "`bearer`:",
        "",
        model_table(models.BearerAuth),
        "",
    ]
    return "\n".join(out).rstrip()


# --------------------------------------------------------------------------- rule types


def rules_reference() -> str:
    """Each rule type, its keys and an example; the threshold fields; the actions."""
    from cgwatchdog.config import models
    from cgwatchdog.rules import RULE_TYPES
    from cgwatchdog.snapshot import FIELD_DOCS, FIELD_PATHS

    common = set(models.RuleBase.model_fields)
    out = [
        "Every rule has these keys, whatever its type:",
        "",
        model_table(models.RuleBase),
        "",
    ]
    for rule_type in RULE_TYPES.values():
        module = sys.modules[rule_type.evaluate.__module__]
        out += [f"### `{rule_type.name}`", "", _module_text(module), ""]
        base_fields = models.RuleBase.model_fields
        fields = rule_type.config.model_fields
        # Its own keys, and the common ones whose default it changes (unreachable's for).
        skip = tuple(
            _key(n, f)
            for n, f in fields.items()
            if n in common and (n == "type" or f.default == base_fields[n].default)
        )
        if len(skip) < len(fields):
            out += [model_table(rule_type.config, skip=skip), ""]
        example = _example(rule_type.name)
        if example:
            out += ["```yaml", example, "```", ""]
    out += [
        "### Fields a `threshold` rule may read",
        "",
        "| field | what it holds |",
        "|---|---|",
    ]
    for path in sorted(FIELD_PATHS):
        out.append(f"| `{path}` | {FIELD_DOCS[path]} |")
    out += [
        "",
        "### Repair steps (`actions:` of a rule)",
        "",
        model_table(models.RuleAction),
        "",
        "Which firmware can do which step, and how, is in docs/FIRMWARE.md.",
    ]
    return "\n".join(out).rstrip()


def _module_text(module: object) -> str:
    doc = (getattr(module, "__doc__", None) or "").strip()
    return _md(_ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", doc))


def _example(type_name: str) -> str:
    """The shipped rule of this type, as written in rules/default.yaml."""
    text = (DOCS.parent / "rules" / "default.yaml").read_text()
    blocks = re.split(r"\n(?=  - name: )", text)
    for block in blocks:
        if re.search(rf"^    type: {re.escape(type_name)}$", block, re.M):
            body = block[block.index("  - name: ") :] if "  - name: " in block else block
            lines = [line for line in body.rstrip().splitlines() if not line.startswith("  #")]
            return "rules:\n" + "\n".join(lines)
    return ""


# --------------------------------------------------------------------------- firmware


def _cell(text: str) -> str:
    return _md(" ".join(text.split())).replace("|", "\\|")


def firmware_reference() -> str:
    """Each firmware family: its channel, authentication, actions and sources, from the
    family modules (the registry and their docstrings)."""
    import copy
    import sys as _sys

    from cgwatchdog.firmware import ACTIONS, FAMILIES

    families = [FAMILIES[name] for name in sorted(FAMILIES.names())]
    out = [
        "| family (`firmware:`) | firmware | control channel | authentication | default "
        "control port | restart / reboot window |",
        "|---|---|---|---|---|---|",
    ]
    for family in families:
        port = "the API port" if family.control_port is None else str(family.control_port)
        extra = f" (needs the `[{family.extra}]` extra)" if family.extra else ""
        out.append(
            f"| `{family.name}` | {_cell(family.title)} | {_cell(family.channel_title)}{extra} "
            f"| {_cell(family.auth_title)} | {port} | "
            f"{family.restart_window_s:g} s / {family.reboot_window_s:g} s |"
        )
    out += [
        "",
        "### Actions",
        "",
        "yes: the family's channel carries the action out; otherwise why not (the plan "
        "says so and the ladder moves on). Some actions also depend on the miner's "
        "configuration (a pool password, the alert's device): `poll --json` lists "
        "`capabilities` and `unsupported` per miner.",
        "",
        "| family | " + " | ".join(ACTIONS) + " |",
        "|---|" + "---|" * len(ACTIONS),
    ]
    for family in families:
        judged = copy.copy(family)
        judged.extra_missing = lambda: None  # type: ignore[method-assign]  # as documented
        cells = []
        for action in ACTIONS:
            why = judged.why_not(action)
            cells.append("yes" if why is None else f"no: {_cell(why)}")
        out.append(f"| `{family.name}` | " + " | ".join(cells) + " |")
    out += ["", "### How each repair is verified", "", "| family | verified by |", "|---|---|"]
    for family in families:
        out.append(f"| `{family.name}` | {_cell(family.verification)} |")
    for family in families:
        module = _sys.modules[type(family).__module__]
        out += ["", f"## `{family.name}`: {_md(family.title)}", "", _module_text(module)]
    return "\n".join(out).rstrip()


# --------------------------------------------------------------------------- metrics


def metrics_reference() -> str:
    """The fleet's metric families and the series budget, from ``web/metrics.py``."""
    from cgwatchdog.web.metrics import SERIES, series_budget

    out = [
        "| metric | type | labels | series | a typical miner |",
        "|---|---|---|---|---|",
    ]
    for series in SERIES:
        labels = ", ".join(f"`{label}`" if not label.startswith("<") else _md(label)
                           for label in series.labels)  # fmt: skip
        switch = " (with `http.per_device_metrics`)" if series.per_device else ""
        out.append(
            f"| `{series.sample}` | {series.kind} | {labels} | {_cell(series.count)}{switch} "
            f"| {series.typical} |"
        )
    default, detailed = series_budget(per_device=False), series_budget(per_device=True)
    out += [
        "",
        f"A typical miner (3 devices or boards, 3 pools, 4 fans, no alert) makes **{default} "
        f"series**, **{detailed}** with `http.per_device_metrics: true`; an alert adds one "
        "series while it is pending or firing.",
    ]
    return "\n".join(out)


SECTIONS: dict[str, tuple[str, Callable[[], str]]] = {
    "metrics": ("STATUS-PAGE.md", metrics_reference),
    "modules": ("ARCHITECTURE.md", modules_table),
    "configuration": ("CONFIGURATION.md", configuration_reference),
    "rules": ("RULES.md", rules_reference),
    "firmware": ("FIRMWARE.md", firmware_reference),
}


def render(text: str, name: str, body: str) -> str:
    """``text`` with the generated section ``name`` replaced by ``body``."""
    start, end = f"<!-- generated: {name} -->", f"<!-- end: {name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"docs/generate.py: no {start} ... {end} markers found")
    return pattern.sub(lambda _: f"{start}\n{body}\n{end}", text)


def stale() -> list[str]:
    """The generated sections that differ from what the code gives now."""
    found = []
    for name, (file, make) in SECTIONS.items():
        text = (DOCS / file).read_text()
        if render(text, name, make()) != text:
            found.append(f"docs/{file} ({name})")
    return found


def write() -> None:
    """Rewrite every generated section."""
    for name, (file, make) in SECTIONS.items():
        path = DOCS / file
        path.write_text(render(path.read_text(), name, make()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say what is out of date")
    args = parser.parse_args()
    if args.check:
        out_of_date = stale()
        for what in out_of_date:
            print(f"out of date: {what}; run python docs/generate.py")
        return 1 if out_of_date else 0
    write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
