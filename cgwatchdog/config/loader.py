"""Reading the config: YAML files in, a validated :class:`~cgwatchdog.config.Config` out.

``load_config(path)`` reads the operator's config file and the rule files it names.
Everything wrong in them is collected first and raised once as a
:class:`~cgwatchdog.errors.ConfigError` whose ``problems`` each carry ``file:line``;
nothing here prints a traceback or a secret::

    text ──yaml.compose (SafeLoader)──> node tree (every node knows its line)
         ──_TreeBuilder──> plain dicts/lists + {path: line}, ${ENV} and *_file resolved
         ──pydantic, one section or list item at a time──> typed models
         ──cross checks (host ranges, duplicate names, route receivers)──> Config

The ``rules:`` and ``receivers:`` items are validated against the models the rule
types and receiver kinds registered (:mod:`cgwatchdog.rules`, :mod:`cgwatchdog.notify`),
which this module imports so that the built-in ones are there.
"""

from __future__ import annotations

import difflib
import glob
import ipaddress
import os
import re
import stat
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, TypeAdapter, ValidationError

from cgwatchdog.config.fields import ENGINE_LABELS, Severity, check_path_text, listify, usable_path
from cgwatchdog.config.hosts import default_miner_name, expand_hosts
from cgwatchdog.config.models import (
    ActionsConfig,
    ClusterConfig,
    Config,
    HeartbeatConfig,
    HttpConfig,
    Loc,
    MinerConfig,
    MinerEntry,
    PollConfig,
    RouteConfig,
    RouteSpec,
    RuleBase,
    SilenceConfig,
    cluster_problems,
    dotted,
    name_template_fields,
    receiver_problems,
    resolve_route,
    route_problems,
)
from cgwatchdog.config.secrets import Redactor, secret_values
from cgwatchdog.errors import ConfigError, ConfigProblem
from cgwatchdog.firmware import FAMILIES
from cgwatchdog.gcpause import gc_paused
from cgwatchdog.notify import RECEIVER_KINDS, receiver_model
from cgwatchdog.rules import RULE_TYPES, rule_union
from cgwatchdog.units import value_kind

__all__ = ["default_rules_path", "load_config", "load_rule_file", "read_http_listen"]

# An alias bomb ("billion laughs") expands past this; no real config comes near it.
_MAX_YAML_NODES = 2_000_000
_SECRET_FILE_KEYS = frozenset({"password_file", "token_file", "url_file", "pool_password_file"})
# systemd's LoadCredential= puts the service's secrets here; a relative *_file is looked
# up in it first, then beside the config file.
CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"


def default_rules_path() -> Path:
    """The shipped ``rules/default.yaml``: in the wheel (``cgwatchdog/_rules``) or the
    source checkout (``rules/`` beside the package)."""
    package = Path(__file__).resolve().parents[1]
    candidates = (package / "_rules" / "default.yaml", package.parent / "rules" / "default.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        [
            ConfigProblem(
                str(candidates[0]), None, "shipped default rules not found; reinstall cgwatchdog"
            )
        ]
    )


@dataclass(slots=True)
class _Doc:
    """A parsed file: plain data and the line of every key and list item."""

    file: str
    data: dict[str, Any]
    lines: dict[Loc, int]

    def locate(self, loc: Loc) -> tuple[int | None, Loc, object]:
        """Line, path and value of the deepest node of ``loc`` present in the file.
        Parts not in the document (pydantic's union tags, "[key]") are skipped."""
        node: object = self.data
        found: list[str | int] = []
        for part in loc:
            in_mapping = isinstance(node, dict) and isinstance(part, str) and part in node
            in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            if in_mapping or in_list:
                node = node[part]  # type: ignore[index]
                found.append(part)
        path = tuple(found)
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        return self.lines.get(probe), path, node


class _TooLarge(Exception):
    pass


_ENV_REF = re.compile(r"\$(\$?)\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_STR_TAG = "tag:yaml.org,2002:str"
# Keys SafeConstructor.flatten_mapping rewrites: `<<` merges and `=` value keys.
_FLATTENED_TAGS = frozenset({"tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"})
_ALL_OWN: frozenset[int] = frozenset({-1})  # a sentinel: no id() is -1


class _TreeBuilder:
    """Node tree -> plain data, recording lines, substituting ${ENV}, reading *_file."""

    def __init__(
        self, session: _Loader, loader: yaml.SafeLoader, file: str, base_dir: Path
    ) -> None:
        self.session = session
        self.loader = loader
        self.file = file
        self.base_dir = base_dir
        self.lines: dict[Loc, int] = {}
        self.count = 0
        self.active: set[int] = set()
        self.own_keys: dict[int, frozenset[int]] = {}

    def problem(
        self, line: int | None, message: str, loc: Loc | None = None, shown: Loc | None = None
    ) -> None:
        if shown or loc:
            message = f"{dotted(shown or loc or ())}: {message}"
        self.session.reader_problem(self.file, line, message, loc)

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.count += 1
        if self.count > _MAX_YAML_NODES:
            raise _TooLarge
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, line, loc)
        if id(node) in self.active:
            self.problem(line, "an alias refers to a node that contains it", loc)
            return None
        self.active.add(id(node))
        try:
            if node.tag not in (_SEQ_TAG, _MAP_TAG):
                self.problem(line, f"unsupported YAML tag {node.tag!r}", loc)
                return None
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[(*loc, index)] = item.start_mark.line + 1
                    items.append(self.build(item, (*loc, index)))
                return items
            assert isinstance(node, yaml.MappingNode)
            return self.mapping(node, loc)
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, line: int, loc: Loc) -> Any:
        try:
            # A plain string is its own value (what SafeConstructor would return for it,
            # a lookup and three calls later); every other tag goes to the constructor.
            value = node.value if node.tag == _STR_TAG else self.loader.construct_object(node)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "unsupported"
            self.problem(line, f"cannot read this value: {problem}", loc)
            return None
        except Exception as exc:
            # PyYAML's constructors also fail with plain exceptions: 2026-13-45 and an
            # integer past Python's 4300 digits (ValueError), `!!bool word` (KeyError),
            # `!!timestamp word` (AttributeError). This is where they enter.
            kind = node.tag.rpartition(":")[2]
            reason = str(exc).split(":")[0] if isinstance(exc, ValueError) else "not valid"
            self.problem(line, f"cannot read this value as {kind}: {reason}", loc)
            return None
        if isinstance(value, str) and "$" in value:
            value = self.substitute(value, line, loc)
        return value

    def substitute(self, text: str, line: int, loc: Loc) -> str:
        used = False

        def replace(ref: re.Match[str]) -> str:
            nonlocal used
            if ref[1]:
                return "${" + ref[2] + "}"
            used = True
            name = ref[2]
            if not _ENV_NAME.fullmatch(name):
                self.problem(
                    line,
                    f"${{{name}}} is not an environment variable reference; "
                    "write $${...} for a literal ${...}",
                    loc,
                )
                return ""
            value = self.session.environ.get(name)
            if value is None:
                self.problem(line, f"environment variable {name} is not set", loc)
                return ""
            self.session.derived.add(value)
            return value

        result = _ENV_REF.sub(replace, text)
        if used:
            self.session.derived.add(result)
        return result

    def mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        own = self.own_keys.get(id(node))
        if own is None:
            if any(key.tag in _FLATTENED_TAGS for key, _ in node.value):
                own = frozenset(id(key) for key, _ in node.value)
                try:
                    self.loader.flatten_mapping(node)  # `<<: *defaults` merges
                except yaml.YAMLError as exc:
                    self.problem(
                        node.start_mark.line + 1,
                        f"cannot merge: {getattr(exc, 'problem', None) or exc}",
                    )
            else:
                own = _ALL_OWN  # nothing merged in: every key is the mapping's own
            self.own_keys[id(node)] = own
        written: set[str] | None = None  # the own keys, for the *_file checks
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(line, "a key must be a plain word, not a list or mapping")
                continue
            key = str(key_node.value)
            is_own = own is _ALL_OWN or id(key_node) in own
            # Keys merged in with `<<` (-1 here) may be overridden by the mapping's own.
            if is_own and first_line.get(key, -1) != -1:
                self.problem(line, f"duplicate key {key!r} (first at line {first_line[key]})")
                continue
            first_line[key] = line if is_own else -1
            value = self.build(value_node, (*loc, key))
            if key in _SECRET_FILE_KEYS:
                target = key.removesuffix("_file")
                if written is None:
                    written = {
                        key.value
                        for key, _ in node.value
                        if (own is _ALL_OWN or id(key) in own) and isinstance(key, yaml.ScalarNode)
                    }
                if target in written:
                    self.problem(line, f"give {target} or {key}, not both")
                    continue
                key = target
                value = self.read_secret(value, line, (*loc, key))
            self.lines[(*loc, key)] = line
            out[key] = value
        return out

    def secret_path(self, text: str) -> Path:
        """Where a ``*_file`` value points: an absolute path as is; a relative one in
        ``$CREDENTIALS_DIRECTORY`` (systemd credentials) if it is there, else beside the
        config file."""
        path = _local_path(text, self.base_dir)
        credentials = self.session.environ.get(CREDENTIALS_DIRECTORY)
        if credentials and not Path(text).expanduser().is_absolute():
            candidate = _local_path(text, Path(credentials))
            if candidate.exists():
                return candidate
        return path

    def read_secret(self, value: object, line: int, loc: Loc) -> str:
        """The stripped content of the file a ``*_file`` key names; ``loc`` is the key it
        stands for (``password`` for ``password_file``)."""
        shown = (*loc[:-1], f"{loc[-1]}_file")
        if not isinstance(value, str) or not value.strip():
            self.problem(line, "must be the path of a file", loc, shown)
            return ""
        try:
            path = self.secret_path(value)
        except ValueError as exc:
            self.problem(line, str(exc), loc, shown)
            return ""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            self.problem(line, f"cannot read {path}: {reason}", loc, shown)
            return ""
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.problem(line, f"{path} is not UTF-8 text", loc, shown)
            return ""
        if not text:
            self.problem(line, f"{path} is empty", loc, shown)
            return ""
        self.session.derived.add(text)
        self.session.secret_files.append((path, f"{self.file}:{line}", str(shown[-1])))
        return text


# ----------------------------------------------------------------------- loading

_TYPE_MESSAGES = {
    "dict_type": "expected a mapping (key: value)",
    "model_type": "expected a mapping (key: value)",
    "model_attributes_type": "expected a mapping (key: value)",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "string_type": "expected text",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "path_type": "expected a file system path",
    "datetime_type": "expected a date and time such as 2026-12-01T00:00:00Z",
    "datetime_parsing": "expected a date and time such as 2026-12-01T00:00:00Z",
    "datetime_from_date_parsing": "expected a date and time such as 2026-12-01T00:00:00Z",
}


_CONSTRAINT_MESSAGES = {
    "literal_error": "must be one of {expected}",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "too_short": "needs at least {min_length} item(s)",
    "string_too_short": "must not be empty",
}


def _has_fields(template: str, values: Mapping[str, Any]) -> bool:
    return name_template_fields(template) <= values.keys()


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(tp) if arg is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _field_key(name: str, info: Any) -> str:
    alias = info.validation_alias
    return alias if isinstance(alias, str) else name


def _step(tp: Any, part: str | int) -> Any:
    tp = _unwrap(tp)
    if _is_model(tp):
        for name, info in tp.model_fields.items():
            if part in (name, _field_key(name, info)):
                return info.annotation
        return None
    origin = typing.get_origin(tp)
    if origin in (tuple, list) and isinstance(part, int):
        return typing.get_args(tp)[0]
    if origin is dict:
        return typing.get_args(tp)[1]
    if origin in (typing.Union, types.UnionType):  # a discriminated union: the tag picks
        for member in typing.get_args(tp):
            member = _unwrap(member)
            tag = member.model_fields.get("type") if _is_model(member) else None
            if tag is not None and part in typing.get_args(tag.annotation):
                return member
    return None


def _keys_of(root: Any, loc: Loc) -> list[str]:
    """The keys the model at ``loc`` (below ``root``) accepts, for "did you mean"."""
    tp = root
    for part in loc:
        nxt = _step(tp, part)
        if nxt is not None:
            tp = nxt
    tp = _unwrap(tp)
    if not _is_model(tp):
        return []
    keys = [_field_key(name, info) for name, info in tp.model_fields.items()]
    return keys + [f"{key}_file" for key in keys if f"{key}_file" in _SECRET_FILE_KEYS]


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    return f"unknown key {key!r}; expected one of: {', '.join(sorted(allowed))}"


def _list_sections() -> dict[str, Any]:
    """The list sections and the model of one item, from the registries as they are now."""
    return {
        "miners": MinerEntry,
        "rules": rule_union(),
        "receivers": receiver_model(),
        "silences": SilenceConfig,
    }


_LIST_KEYS = ("miners", "rules", "receivers", "silences")
# Labels the engine sets besides ENGINE_LABELS, which routes may match on.
_ALERT_LABELS = ("severity", "fleet_incident", "original_alertname", "action")
# Severities every route tree understands; another word, unless a route matches it, is
# probably a typo ("critcal" silently misses the critical route).
_USUAL_SEVERITIES = ("critical", "error", "warning", "info", "none")
_SECTIONS: dict[str, Any] = {
    "poll": PollConfig,
    "state_dir": Annotated[Path, AfterValidator(usable_path)],
    "http": HttpConfig,
    "rule_files": Annotated[tuple[str, ...], BeforeValidator(listify)],
    "route": RouteSpec,
    "actions": ActionsConfig,
    "cluster": ClusterConfig,
    "heartbeat": HeartbeatConfig,
    "severities": Annotated[tuple[Severity, ...], BeforeValidator(listify)],
}
_TOP_LEVEL = tuple(_SECTIONS) + _LIST_KEYS
_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(id(tp))
    if adapter is None:
        adapter = _ADAPTERS[id(tp)] = TypeAdapter(tp)
    return adapter


_RuleEntry = tuple[Any, _Doc, Loc]  # (a rule model, where it was read, its path there)


class _Loader:
    """One load: every problem, warning and secret seen along the way."""

    def __init__(self, environ: Mapping[str, str] | None) -> None:
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.problems: list[ConfigProblem] = []
        self.warnings: list[str] = []
        self.derived: set[str] = set()  # strings that came from ${ENV} or a *_file
        self.secret_files: list[tuple[Path, str, str]] = []  # (file, where named, key)
        self.notes: list[str] = []
        self.reader_locs: set[tuple[str, Loc]] = set()
        self.file_order: dict[str, int] = {}

    # problems ------------------------------------------------------------------

    def reader_problem(
        self, file: str, line: int | None, message: str, loc: Loc | None = None
    ) -> None:
        """A problem found while reading the file (an unset ${VAR}, a missing *_file).
        Validation then sees an empty value there; complaints about it are echoes."""
        if loc is not None:
            self.reader_locs.add((file, loc))
        self.problems.append(ConfigProblem(file, line, message))

    def problem(self, file: str, line: int | None, message: str, path: Loc | None = None) -> None:
        if path is not None and (file, path) in self.reader_locs:
            return
        self.problems.append(ConfigProblem(file, line, message))

    def problem_at(self, doc: _Doc, loc: Loc, message: str) -> None:
        line, path, _ = doc.locate(loc)
        self.problem(doc.file, line, f"{dotted(path)}: {message}", path)

    def validation_problems(self, doc: _Doc, loc: Loc, root: Any, exc: ValidationError) -> None:
        errors = exc.errors(include_url=False, include_input=False, include_context=True)
        locs = [tuple(error["loc"]) for error in errors]
        for error in errors:
            own = tuple(error["loc"])
            # A list that fails its length check because an item failed repeats the item.
            if any(len(other) > len(own) and other[: len(own)] == own for other in locs):
                continue
            err_loc = loc + own
            kind = error["type"]
            ctx = error.get("ctx") or {}
            if kind == "union_tag_invalid":
                line, path, _ = doc.locate((*err_loc, "type"))
                message = f"unknown rule type {ctx.get('tag')!r}; expected one of: {', '.join(RULE_TYPES)}"
            elif kind == "union_tag_not_found":
                line, path, _ = doc.locate(err_loc)
                message = f"missing required key 'type' (one of: {', '.join(RULE_TYPES)})"
            elif kind == "extra_forbidden":
                line, path, _ = doc.locate(err_loc)
                path = path[:-1] if path and path[-1] == err_loc[-1] else path
                message = _unknown_key(str(err_loc[-1]), _keys_of(root, tuple(error["loc"])[:-1]))
            elif kind == "missing":
                line, path, _ = doc.locate(err_loc[:-1])
                message = f"missing required key {err_loc[-1]!r}"
            else:
                line, path, value = doc.locate(err_loc)
                if kind in _TYPE_MESSAGES:
                    message = f"{_TYPE_MESSAGES[kind]}, found {value_kind(value)}"
                elif kind == "value_error":
                    message = str(ctx.get("error", error["msg"]))
                elif kind in _CONSTRAINT_MESSAGES and _has_fields(_CONSTRAINT_MESSAGES[kind], ctx):
                    message = _CONSTRAINT_MESSAGES[kind].format(**ctx)
                else:
                    message = error["msg"][:1].lower() + error["msg"][1:]
            self.problem(doc.file, line, f"{dotted(path)}: {message}", path)

    def error(self) -> ConfigError:
        order = self.file_order
        problems = sorted(
            dict.fromkeys(self.problems),
            key=lambda p: (order.get(p.file, len(order)), p.line or 0),
        )
        # A URL's path leaks on its own (url_file: ${URL} shows it as a file name).
        scrub = Redactor(self.derived)
        return ConfigError([ConfigProblem(p.file, p.line, scrub(p.message)) for p in problems])

    # reading -------------------------------------------------------------------

    def read(self, path: Path, what: str) -> _Doc | None:
        file = str(path)
        self.file_order.setdefault(file, len(self.file_order))
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except OSError as exc:
            self.reader_problem(
                file, None, f"cannot read {what}: {exc.strerror or type(exc).__name__}"
            )
            return None
        except UnicodeDecodeError as exc:
            self.reader_problem(file, _text_line(exc), f"{what} is not UTF-8 text")
            return None
        fast = _compose_fast(text)
        try:
            loader = yaml.SafeLoader(text) if fast is None else fast[0]
        except yaml.reader.ReaderError as exc:  # a control character, checked up front
            char = exc.character if isinstance(exc.character, int) else ord(exc.character)
            where = text[: exc.position].count("\n") + 1
            self.reader_problem(
                file, where, f"{what} holds a control character YAML does not allow (#x{char:04x})"
            )
            return None
        try:
            root = loader.get_single_node() if fast is None else fast[1]
            if root is None:
                self.reader_problem(file, None, f"{what} is empty")
                return None
            if not isinstance(root, yaml.MappingNode):
                found = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
                self.reader_problem(
                    file,
                    root.start_mark.line + 1,
                    f"the top level must be a mapping of keys (key: value), found {found}",
                )
                return None
            builder = _TreeBuilder(self, loader, file, path.parent)
            data = builder.build(root, ())
        except yaml.MarkedYAMLError as exc:
            # Only problem and context: str(exc) quotes the source, which may hold a secret.
            mark = exc.problem_mark or exc.context_mark
            problem = (exc.problem or exc.context or "unreadable").removeprefix("but ")
            message = f"YAML syntax error: {problem}"
            if exc.problem and exc.context and exc.context_mark and exc.problem_mark:
                where = exc.context_mark.line + 1
                if where != exc.problem_mark.line + 1:
                    message += f" ({exc.context} at line {where})"
                else:
                    message += f" ({exc.context})"
            self.reader_problem(file, mark.line + 1 if mark else None, message)
            return None
        except yaml.YAMLError:
            self.reader_problem(file, None, "YAML syntax error")
            return None
        except _TooLarge:
            self.reader_problem(
                file, None, f"more than {_MAX_YAML_NODES:,} values after expanding aliases"
            )
            return None
        except RecursionError:
            self.reader_problem(file, None, "nested too deeply")
            return None
        except ValueError as exc:  # PyYAML's scanner passes "\U1e999fff" to chr() unchecked
            line = loader.get_mark().line + 1
            self.reader_problem(file, line, f"YAML syntax error: {exc}")
            return None
        finally:
            loader.dispose()
        if not isinstance(data, dict):
            return None  # the root mapping had an unsupported tag: a problem says so
        builder.lines[()] = root.start_mark.line + 1
        return _Doc(file, data, builder.lines)

    def validate(self, doc: _Doc, loc: Loc, tp: Any, value: object) -> Any | None:
        try:
            return _adapter(tp).validate_python(value)
        except ValidationError as exc:
            self.validation_problems(doc, loc, tp, exc)
            return None

    def items(self, doc: _Doc, key: str) -> list[tuple[int, Any]]:
        value = doc.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem_at(doc, (key,), f"expected a list ('- ' items), found {value_kind(value)}")
            return []
        out = []
        sections = _list_sections()
        for index, item in enumerate(value):
            model = self.validate(doc, (key, index), sections[key], item)
            if model is not None:
                out.append((index, model))
        return out

    def unknown_keys(self, doc: _Doc, allowed: Sequence[str]) -> None:
        for key in doc.data:
            if key not in allowed:
                line, _, _ = doc.locate((key,))
                self.problem(doc.file, line, _unknown_key(key, allowed))

    # miners --------------------------------------------------------------------

    def miners(self, doc: _Doc, entries: list[tuple[int, MinerEntry]]) -> list[MinerConfig]:
        miners: list[MinerConfig] = []
        names: dict[str, int | None] = {}
        endpoints: dict[tuple[str, int], str] = {}
        for index, entry in entries:
            loc: Loc = ("miners", index)
            line, _, _ = doc.locate(loc)
            if entry.firmware != "auto" and entry.firmware not in FAMILIES:
                known = ("auto", *FAMILIES.names())
                close = difflib.get_close_matches(entry.firmware, known, n=1)
                hint = (
                    f" (did you mean {close[0]!r}?)" if close else f"; one of: {', '.join(known)}"
                )
                self.problem_at(
                    doc, (*loc, "firmware"), f"unknown firmware {entry.firmware!r}{hint}"
                )
                continue
            hosts: list[str] = []
            if entry.host is not None:
                hosts = [entry.host]
            else:
                for number, spec in enumerate(entry.hosts or ()):
                    try:
                        hosts += expand_hosts(spec)
                    except ValueError as exc:
                        self.problem_at(doc, (*loc, "hosts", number), str(exc))
            template = entry.name if entry.hosts is not None else None
            if template is not None and len(hosts) > 1 and not name_template_fields(template):
                self.problem_at(
                    doc,
                    (*loc, "name"),
                    f"{template!r} would name {len(hosts):,} miners alike; add {{host}} or {{index}}",
                )
                continue
            clashes: list[str] = []
            for number, host in enumerate(hosts, 1):
                if template is not None:
                    name = template.format(host=host, port=entry.port, index=number)
                else:
                    name = entry.name or default_miner_name(host, entry.port)
                if name in names:
                    clashes.append(f"miner name {name!r} is already used (line {names[name]})")
                    continue
                if (host, entry.port) in endpoints:
                    clashes.append(
                        f"{host}:{entry.port} is already listed as miner {endpoints[host, entry.port]!r}"
                    )
                    continue
                names[name] = line
                endpoints[host, entry.port] = name
                miners.append(
                    MinerConfig.model_construct(
                        name=name,
                        host=host,
                        port=entry.port,
                        labels=entry.labels,  # shared across a range: one dict, not 10,000
                        expected_hashrate_hs=entry.expected_hashrate,
                        firmware=entry.firmware,
                        control_port=entry.control_port,
                        credentials=entry.credentials,
                    )
                )
            if clashes:
                more = f" (and {len(clashes) - 1:,} more in this entry)" if len(clashes) > 1 else ""
                named = "name" if entry.name is not None else "host" if entry.host else "hosts"
                self.problem_at(doc, (*loc, named), clashes[0] + more)
        return miners

    # rules ---------------------------------------------------------------------

    def rule_file(self, path: Path) -> list[_RuleEntry]:
        doc = self.read(path, "rule file")
        if doc is None:
            return []
        self.unknown_keys(doc, ("rules",))
        if "rules" not in doc.data:
            self.problem(doc.file, doc.lines[()], "missing required key 'rules' (a list of rules)")
        return [(rule, doc, ("rules", index)) for index, rule in self.items(doc, "rules")]

    def rule_files(
        self, doc: _Doc, patterns: Sequence[str], base_dir: Path, config_path: Path
    ) -> list[Path]:
        seen = {config_path.resolve()}
        found: list[Path] = []
        for index, pattern in enumerate(patterns):
            try:
                full = _local_path(pattern, base_dir)
            except ValueError as exc:
                self.problem_at(doc, ("rule_files", index), str(exc))
                continue
            matches = [Path(m) for m in sorted(glob.glob(str(full))) if Path(m).is_file()]
            if not matches:
                where = "" if str(full) == pattern else f" (looked for {full})"
                self.problem_at(doc, ("rule_files", index), f"{pattern!r} matches no file{where}")
            for match in matches:
                key = match.resolve()
                if key not in seen:
                    seen.add(key)
                    found.append(match)
        return found

    def check_rule_names(self, entries: Sequence[_RuleEntry]) -> None:
        first: dict[str, str] = {}
        for rule, doc, loc in entries:
            line, _, _ = doc.locate((*loc, "name"))
            where = doc.file if line is None else f"{doc.file}:{line}"
            if rule.name in first:
                self.problem(
                    doc.file, line, f"rule name {rule.name!r} is already used at {first[rule.name]}"
                )
            else:
                first[rule.name] = where

    # the whole config ----------------------------------------------------------

    def config(self, path: Path) -> Config:
        doc = self.read(path, "config file")
        if doc is None:
            raise self.error()
        base_dir = path.parent
        self.unknown_keys(doc, _TOP_LEVEL)
        parts: dict[str, Any] = {}
        for key, tp in _SECTIONS.items():
            if doc.data.get(key) is not None:
                parts[key] = self.validate(doc, (key,), tp, doc.data[key])

        miners = self.miners(doc, self.items(doc, "miners"))
        rules: list[_RuleEntry] = [
            (rule, doc, ("rules", i)) for i, rule in self.items(doc, "rules")
        ]
        patterns = parts.get("rule_files") or ()
        if "rule_files" not in doc.data and "rules" not in doc.data:
            packaged = default_rules_path()
            patterns = (str(packaged),)
            self.notes.append(
                f"rules: none configured, so the packaged rules are used ({packaged}); "
                "write rule_files: [] to have none"
            )
        files = self.rule_files(doc, patterns, base_dir, path)
        for file in files:
            rules += self.rule_file(file)
        self.check_rule_names(rules)
        self.check_rule_labels(rules, miners)
        self.check_severities(doc, rules, parts.get("severities"), parts.get("route"))
        self.check_route_labels(doc, parts.get("route"), rules, miners)
        receivers = [model for _, model in self.items(doc, "receivers")]
        silences = [model for _, model in self.items(doc, "silences")]

        # Names and kinds from the raw entries, so one invalid receiver does not make
        # every route that names it an error too.
        raw_receivers = (
            [
                (
                    str(item["name"]),
                    next((k for k in RECEIVER_KINDS if item.get(k) is not None), None),
                )
                for item in doc.data.get("receivers") or ()
                if isinstance(item, dict) and isinstance(item.get("name"), str)
            ]
            if isinstance(doc.data.get("receivers"), list)
            else []
        )
        kinds = dict(raw_receivers)
        found = receiver_problems(raw_receivers)
        route: RouteConfig | None = None
        if isinstance(parts.get("route"), RouteSpec):
            route = resolve_route(parts["route"], None, ("route",), found)
            found += route_problems(route, kinds)
        elif doc.data.get("route") is None and len(raw_receivers) == 1:
            route = RouteConfig(receiver=raw_receivers[0][0])
        elif doc.data.get("route") is None and raw_receivers:
            found.append((("receivers",), "a route: is needed to choose among several receivers"))
        if isinstance(parts.get("cluster"), ClusterConfig):
            state_kinds = {kind.name for kind in RECEIVER_KINDS.values() if kind.pushes_state}
            found += cluster_problems(parts["cluster"], kinds, state_kinds)
        for loc, message in found:
            self.problem_at(doc, loc, message)

        if self.problems:
            raise self.error()
        state_dir = parts.get("state_dir")
        if state_dir is not None and not state_dir.is_absolute():
            parts["state_dir"] = base_dir / state_dir
        parts.pop("route", None)
        parts["rule_files"] = tuple(files)
        try:
            cfg = Config(
                **parts,
                miners=tuple(miners),
                rules=tuple(rule for rule, _, _ in rules),
                receivers=tuple(receivers),
                silences=tuple(silences),
                route=route,
            )
        except ValidationError as exc:  # a check above should have caught it first
            for error in exc.errors(include_url=False, include_input=False):
                self.problem(doc.file, None, str(error["msg"]))
            raise self.error() from None
        self.add_warnings(cfg, path, rules)
        cfg._warnings = tuple(self.warnings)
        cfg._notes = tuple(self.notes)
        return cfg

    def check_rule_labels(
        self, entries: Sequence[_RuleEntry], miners: Sequence[MinerConfig]
    ) -> None:
        """A rule's ``match`` on a label no miner has selects nothing, silently: an error,
        with "did you mean" (only when there are miners to compare with)."""
        if not miners:
            return
        known = {"miner"}
        for labels in {id(m.labels): m.labels for m in miners}.values():
            known.update(labels)
        for rule, doc, loc in entries:
            for key in ("match", "match_re"):
                for name in getattr(rule, key):
                    if name not in known:
                        close = difflib.get_close_matches(name, sorted(known), n=1)
                        hint = f" (did you mean {close[0]!r}?)" if close else ""
                        self.problem_at(
                            doc, (*loc, key, name),
                            f"no miner has a label {name!r}{hint}: the rule would select none",
                        )  # fmt: skip

    def check_route_labels(
        self,
        doc: _Doc,
        route: RouteSpec | None,
        entries: Sequence[_RuleEntry],
        miners: Sequence[MinerConfig],
    ) -> None:
        """A route matching on a label no alert carries never matches: a warning, with
        "did you mean" (alerts carry the miners' labels, the rules' and the engine's)."""
        if route is None or not entries or not miners:
            return
        known = set(ENGINE_LABELS) | set(_ALERT_LABELS)
        for labels in {id(m.labels): m.labels for m in miners}.values():
            known.update(labels)
        for rule, _, _ in entries:
            known.update(rule.labels)
        pending: list[tuple[RouteSpec, Loc]] = [(route, ("route",))]
        while pending:
            node, loc = pending.pop()
            for key in ("match", "match_re"):
                for name in getattr(node, key):
                    if name not in known:
                        close = difflib.get_close_matches(name, sorted(known), n=1)
                        hint = f" (did you mean {close[0]!r}?)" if close else ""
                        line, path, _ = doc.locate((*loc, key, name))
                        where = doc.file if line is None else f"{doc.file}:{line}"
                        self.warnings.append(
                            f"{where}: {dotted(path)}: no alert carries a label {name!r}{hint}: "
                            "this route never matches"
                        )
            pending.extend((child, (*loc, "routes", i)) for i, child in enumerate(node.routes))

    def check_severities(
        self,
        doc: _Doc,
        entries: Sequence[_RuleEntry],
        declared: Sequence[str] | None,
        route: RouteSpec | None,
    ) -> None:
        """A rule's severity must be one the config declares (``severities:``), else one
        some route matches on, when the routes match on severity at all (``critcal``
        would silently miss the ``severity: critical`` route)."""
        if declared is not None:
            for rule, rule_doc, loc in entries:
                if rule.severity not in declared:
                    close = difflib.get_close_matches(rule.severity, declared, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    self.problem_at(
                        rule_doc, (*loc, "severity"),
                        f"severity {rule.severity!r} is not among severities: "
                        f"{', '.join(declared)}{hint}",
                    )  # fmt: skip
            return
        routed: set[str] = set()
        pending = [route] if route is not None else []
        while pending:
            node = pending.pop()
            if "severity" in node.match:
                routed.add(node.match["severity"])
            pending.extend(node.routes)
        known = routed | set(_USUAL_SEVERITIES)
        for rule, rule_doc, loc in entries:
            severity = rule.severity
            if severity in known:
                continue
            close = difflib.get_close_matches(severity, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            line, _, _ = rule_doc.locate((*loc, "severity"))
            where = rule_doc.file if line is None else f"{rule_doc.file}:{line}"
            self.warnings.append(
                f"{where}: rule {rule.name!r} has severity {severity!r}, which no route "
                f"matches and is not a usual severity{hint} (declare severities: to make "
                "this an error)"
            )

    def factory_passwords(self, cfg: Config) -> None:
        """Warn about miners whose control channel logs in with its family's factory
        default (no password configured): an operator wants to know; no secret shown."""
        counts: dict[str, list[str]] = {}
        for miner in cfg.miners:
            family = FAMILIES.get(miner.firmware)
            if family is None or family.default_password is None:
                continue
            credentials = miner.credentials
            given = credentials.password if credentials is not None else None
            if given is None or given.get_secret_value() == family.default_password:
                counts.setdefault(family.name, []).append(miner.name)
        for name, miners in counts.items():
            shown = ", ".join(miners[:3]) + (
                f" and {len(miners) - 3:,} more" if len(miners) > 3 else ""
            )
            self.warnings.append(
                f"{len(miners):,} {name} miner{'s' if len(miners) != 1 else ''} ({shown}) "
                f"log in to {FAMILIES[name].channel_title or 'the control channel'} with the "
                "factory-default password: set credentials.password_file"
            )

    def add_warnings(self, cfg: Config, path: Path, rules: Sequence[_RuleEntry]) -> None:
        self.factory_passwords(cfg)
        inline = [
            secret
            for secret in secret_values(cfg.receivers, cfg.heartbeat)
            if secret not in self.derived and not _loopback_url(secret)
        ]
        if inline:
            mode = _loose_mode(path)
            if mode is not None:
                self.warnings.append(
                    f"{path}: holds secrets inline and is readable by group or others "
                    f"(mode {mode:04o}); chmod 600 it, or move the secrets to *_file or ${{ENV}}"
                )
        for secret_file, where, key in self.secret_files:
            mode = _loose_mode(secret_file)
            if mode is not None:
                self.warnings.append(
                    f"{secret_file} ({key} at {where}) is readable by group or others "
                    f"(mode {mode:04o}); chmod 600 it"
                )
        used = {cfg.cluster.alertmanager}
        pending = [cfg.route] if cfg.route is not None else []
        while pending:
            node = pending.pop()
            used.add(node.receiver)
            pending.extend(node.routes)
        for receiver in cfg.receivers:
            if receiver.name not in used:
                self.warnings.append(f"receiver {receiver.name!r} is not used by any route")
        if not rules:
            self.warnings.append("no rules are configured: nothing will alert (add rule_files:)")
        if not cfg.receivers:
            self.warnings.append(
                "no receivers are configured: alerts are only logged and shown by "
                "/api/alerts and cgwatchdog status (add receivers: and a route:)"
            )


_CLoader: type[Any] | None = getattr(yaml, "CSafeLoader", None)


def _compose_fast(text: str) -> tuple[Any, yaml.Node | None] | None:
    """(loader, root node) composed by libyaml, or None where the pure-Python loader must
    read the text: libyaml absent, or the text is not plainly valid YAML (the pure loader
    then words the error exactly as it always has). The same SafeConstructor builds the
    values either way; libyaml only finds the nodes, about 20x faster (a 10,000-miner
    config: ~0.1 s instead of ~2 s)."""
    if _CLoader is None or yaml.reader.Reader.NON_PRINTABLE.search(text):
        return None
    loader = _CLoader(text)
    try:
        root = loader.get_single_node()
    except Exception:  # any complaint: the pure loader says it in its own words
        loader.dispose()
        return None
    return loader, root


def _text_line(exc: UnicodeDecodeError) -> int:
    """The 1-based line of the first byte that is not UTF-8."""
    return exc.object[: exc.start].count(b"\n") + 1


def _local_path(text: str, base_dir: Path) -> Path:
    """A path from the config, ``~`` expanded, relative to ``base_dir``; ValueError if the
    operating system could not use it."""
    check_path_text(text)
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # ~name of a user that does not exist
        raise ValueError(f"cannot expand ~ in {text!r}: no such user") from None
    return path if path.is_absolute() else base_dir / path


def _loose_mode(path: Path) -> int | None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & 0o044 else None


def _loopback_url(value: str) -> bool:
    # A webhook on loopback is the operator's own relay, not a bearer of credentials.
    try:
        parts = urlsplit(value)
        host = parts.hostname
        if parts.password or host is None:
            return False
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, validate and cross-check the config file and its rule files.

    ``environ`` (default ``os.environ``) supplies ``${VAR}`` values. Raises ConfigError
    listing every problem with its ``file:line``; warnings are on ``Config.warnings``.
    """
    with gc_paused():  # 10,000 miners: ~200,000 containers (YAML nodes, values, lines)
        return _Loader(environ).config(Path(path))


def read_http_listen(
    path: str | Path, *, environ: Mapping[str, str] | None = None
) -> tuple[str, int]:
    """The ``http.listen`` host and port of a config file, reading nothing else (what
    ``cgwatchdog status`` needs, even where the service's secrets are unreadable).
    Raises ConfigError when the file cannot be read or the value is invalid."""
    loader = _Loader(environ)
    doc = loader.read(Path(path), "config file")
    section = doc.data.get("http") if doc is not None else None
    # Only the reading and http.listen matter: an unset ${VAR} elsewhere, or a token file
    # only the service may read, does not.
    loader.problems = [
        p
        for p in loader.problems
        if doc is None
        or (p.message.startswith(("http:", "http.")) and not p.message.startswith("http.token"))
    ]
    if doc is not None and not loader.problems:
        http = loader.validate(doc, ("http",), HttpConfig, section if section is not None else {})
        if http is not None:
            return http.host, http.port
    raise loader.error()


def load_rule_file(path: str | Path, *, environ: Mapping[str, str] | None = None) -> list[RuleBase]:
    """Read and validate one rule file (``rules: [...]``). Raises ConfigError."""
    loader = _Loader(environ)
    entries = loader.rule_file(Path(path))
    loader.check_rule_names(entries)
    if loader.problems:
        raise loader.error()
    return [rule for rule, _, _ in entries]
