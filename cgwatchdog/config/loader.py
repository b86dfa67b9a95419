"""Reading the config: YAML files in, a validated :class:`~cgwatchdog.config.Config` out.

``load_config(path)`` reads the operator's config file and the rule files it names.
Everything wrong in them is collected first and raised once as a
:class:`~cgwatchdog.errors.ConfigError` whose ``problems`` each carry ``file:line``;
nothing here prints a traceback or a secret::

    text ──libyaml's events──> _EventBuilder ──> plain dicts/lists, ${ENV} and *_file resolved
           (or, for a text that is not plainly written, the exact reading:
            yaml.compose (SafeLoader) ──> node tree (every node knows its line)
            ──_TreeBuilder──> the same data + {path: line})
         ──pydantic, one section or list item at a time──> typed models
         ──cross checks (host ranges, duplicate names, route receivers)──> Config

The fast reading (:class:`_EventBuilder`) makes no node tree and no line map: for
10,000 miners 0.08 s instead of 0.15 s, and a peak of 6 MB instead of 34 (tracemalloc). It takes only
what the exact reading would take without a word, and gives up on anything else, which
the exact reading then reads and words as it always has; the lines of a file read fast
are found (the exact way, from its text) only when a problem or a warning needs one.

The ``rules:`` and ``receivers:`` items are validated against the models the rule
types and receiver kinds registered (:mod:`cgwatchdog.rules`, :mod:`cgwatchdog.notify`),
which this module imports so that the built-in ones are there: the rules always, the
receiver kinds and the firmware families (:mod:`cgwatchdog.firmware`) only for a config
that names one, since importing them is most of what ``check`` would otherwise spend on
imports.
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, TypeAdapter, ValidationError
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)

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
    miner_config,
    name_template_fields,
    receiver_problems,
    resolve_route,
    route_problems,
)
from cgwatchdog.config.secrets import Redactor, secret_values
from cgwatchdog.errors import ConfigError, ConfigProblem
from cgwatchdog.gcpause import gc_paused
from cgwatchdog.rules import RULE_TYPES, rule_union
from cgwatchdog.units import value_kind

if TYPE_CHECKING:
    from cgwatchdog.firmware import Family
    from cgwatchdog.notify.base import ReceiverKind
    from cgwatchdog.registry import Registry

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


class _Doc:
    """A parsed file: plain data and the line of every key and list item.

    A file read the fast way (:class:`_EventBuilder`) has no lines until a message first
    needs one: ``lines`` then makes them from the text, as the exact reading would have.
    """

    __slots__ = ("_lines", "_lines_from", "data", "file")

    def __init__(
        self,
        file: str,
        data: dict[str, Any],
        lines: dict[Loc, int] | None = None,
        lines_from: Callable[[], dict[Loc, int]] | None = None,
    ) -> None:
        self.file = file
        self.data = data
        self._lines = lines
        self._lines_from = lines_from

    @property
    def lines(self) -> dict[Loc, int]:
        """The line of every key and list item, by its path (``()``: the document's)."""
        if self._lines is None:
            assert self._lines_from is not None
            self._lines, self._lines_from = self._lines_from(), None
        return self._lines

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


class _Fallback(Exception):
    """The fast reading met something that only the exact reading may read or word."""


# The tags a plain scalar may resolve to that the fast reading constructs; the others
# (`<<`, `=`, and `!`, `&` or `*` alone) are special or problems: the exact reading's.
_FAST_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("bool", "float", "int", "null", "timestamp")
)
# No config nests this deep; a document that does is the exact reading's to judge.
_FAST_DEPTH = 64
_UNSEEN = object()


class _EventBuilder(_TreeBuilder):
    """libyaml's events -> plain data, for a plainly written document: no node tree (for
    10,000 miners: 28 MB more at the peak, and twice the time) and no line map.

    The data, ``${ENV}`` substitution and ``*_file`` secrets are what :class:`_TreeBuilder`
    makes of the same text. Anything that reading would complain about or treat specially
    (an anchor, alias or explicit tag, a ``<<`` merge, a duplicate key, a key that is not
    a scalar, an unset variable, a secret file it cannot use, another document, deep
    nesting, a value a constructor refuses) raises :class:`_Fallback` instead: the text
    is then read the exact way, which words every problem as it always has.
    """

    def problem(
        self, line: int | None, message: str, loc: Loc | None = None, shown: Loc | None = None
    ) -> NoReturn:
        raise _Fallback

    def document(self, loader: Any) -> dict[str, Any]:
        """The data of the document ``loader`` (a libyaml parser) holds."""
        next_event = loader.get_event
        resolve = loader.resolve
        constructors = loader.yaml_constructors
        plain: dict[str, Any] = {}  # a plain scalar's text -> its value (all immutable)
        key_tags: dict[str, str] = {}  # a plain key's text -> its tag

        def value_of(event: Any) -> Any:
            if event.anchor is not None or event.tag is not None:
                raise _Fallback
            value = event.value
            if event.implicit[0]:  # a plain scalar, typed by its text as the composer does
                text = value
                value = plain.get(text, _UNSEEN)
                if value is _UNSEEN:
                    tag = resolve(yaml.ScalarNode, text, event.implicit)
                    if tag == _STR_TAG:
                        value = text
                    elif tag in _FAST_TAGS:
                        try:
                            value = constructors[tag](loader, yaml.ScalarNode(tag, text))
                        except Exception:  # 2026-13-45 and the like: the exact reading says
                            raise _Fallback from None
                    else:
                        raise _Fallback
                    plain[text] = value
            if isinstance(value, str) and "$" in value:
                value = self.substitute(value, 0, ())  # no line: a problem only raises
            return value

        if type(next_event()) is not StreamStartEvent:
            raise _Fallback
        if type(next_event()) is not DocumentStartEvent:
            raise _Fallback  # an empty file
        event = next_event()
        if type(event) is not MappingStartEvent or event.anchor or event.tag:
            raise _Fallback  # a list or a single value at the top
        root: dict[str, Any] = {}
        container: dict[str, Any] | list[Any] = root
        stack: list[dict[str, Any] | list[Any]] = []
        key: str | None = None  # in a mapping, the key whose value comes next
        count = 1  # the nodes _TreeBuilder.build would count (every one but keys)
        while True:
            event = next_event()
            kind = type(event)
            if kind is ScalarEvent:
                if key is None and isinstance(container, dict):
                    if event.anchor is not None or event.tag is not None:
                        raise _Fallback
                    key = event.value
                    if key in container:  # a duplicate, or both password and password_file
                        raise _Fallback
                    if event.implicit[0]:
                        tag = key_tags.get(key)
                        if tag is None:
                            tag = key_tags[key] = resolve(yaml.ScalarNode, key, event.implicit)
                        if tag in _FLATTENED_TAGS:
                            raise _Fallback
                    if key in _SECRET_FILE_KEYS:
                        target = key.removesuffix("_file")
                        if target in container:
                            raise _Fallback
                        given = next_event()
                        if type(given) is not ScalarEvent:
                            raise _Fallback
                        count += 1
                        line = event.start_mark.line + 1
                        container[target] = self.read_secret(value_of(given), line, (target,))
                        key = None
                    continue
                value = value_of(event)
                count += 1
                if isinstance(container, list):
                    container.append(value)
                else:
                    assert key is not None
                    container[key] = value
                    key = None
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                if event.anchor is not None or event.tag is not None:
                    raise _Fallback
                new: dict[str, Any] | list[Any] = {} if kind is MappingStartEvent else []
                if isinstance(container, list):
                    container.append(new)
                elif key is None:
                    raise _Fallback  # a mapping or a list as a key
                else:
                    container[key] = new
                count += 1
                stack.append(container)
                if len(stack) > _FAST_DEPTH:
                    raise _Fallback
                container, key = new, None
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                if not stack:
                    break
                container, key = stack.pop(), None
            else:  # an alias
                raise _Fallback
        if type(next_event()) is not DocumentEndEvent or type(next_event()) is not StreamEndEvent:
            raise _Fallback  # another document follows
        if count > _MAX_YAML_NODES:
            raise _Fallback
        return root


class _LineBuilder(_TreeBuilder):
    """The exact reading's walk for its line map alone, over a document the fast reading
    took (so one without problems): no value is made and no secret file is read again."""

    def scalar(self, node: yaml.ScalarNode, line: int, loc: Loc) -> Any:
        return None

    def read_secret(self, value: object, line: int, loc: Loc) -> str:
        return ""


def _line_map(text: str, file: str, base_dir: Path) -> dict[Loc, int]:
    """The line of every key and list item of a document the fast reading took, as the
    exact reading records them: what a problem or a warning needs, made only then."""
    composed = _compose_fast(text)
    if composed is None:  # the fast reading took it, so libyaml reads it: not expected
        pure = yaml.SafeLoader(text)
        composed = pure, pure.get_single_node()
    loader, root = composed
    try:
        assert root is not None
        builder = _LineBuilder(_Loader({}), loader, file, base_dir)
        builder.build(root, ())
    finally:
        loader.dispose()
    builder.lines[()] = root.start_mark.line + 1
    return builder.lines


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


def _item_model(key: str) -> Any:
    """The model of one item of the list section ``key``, from the registries as they are
    now."""
    if key == "miners":
        return MinerEntry
    if key == "rules":
        return rule_union()
    if key == "silences":
        return SilenceConfig
    from cgwatchdog.notify import receiver_model

    return receiver_model()


def _families() -> Registry[Family]:
    """The firmware families, imported only once a miner names one (``auto`` needs none)."""
    from cgwatchdog.firmware import FAMILIES

    return FAMILIES


def _receiver_kinds() -> Registry[ReceiverKind]:
    """The receiver kinds, imported only for a config with receivers or a cluster."""
    from cgwatchdog.notify import RECEIVER_KINDS

    return RECEIVER_KINDS


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
    """One load: every problem, warning and secret seen along the way. ``fast=False``
    reads every file the exact way (the tests compare the two readings)."""

    def __init__(self, environ: Mapping[str, str] | None, *, fast: bool = True) -> None:
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.fast = fast
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
        data = self.read_fast(text, file, path.parent) if self.fast else None
        if data is not None:
            return _Doc(file, data, lines_from=lambda: _line_map(text, file, path.parent))
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

    def read_fast(self, text: str, file: str, base_dir: Path) -> dict[str, Any] | None:
        """The data of a plainly written document, read from libyaml's events
        (:class:`_EventBuilder`); None where the exact reading must read the text."""
        libyaml = _libyaml_for(text)
        if libyaml is None:
            return None
        scratch = _Loader(self.environ)  # what ${ENV} and *_file add, kept if it succeeds
        loader = libyaml(text)
        try:
            data = _EventBuilder(scratch, loader, file, base_dir).document(loader)
        except Exception:  # _Fallback, or libyaml's complaint: the exact reading words it
            return None
        finally:
            loader.dispose()
        self.derived |= scratch.derived
        self.secret_files += scratch.secret_files
        return data

    def validate(self, doc: _Doc, loc: Loc, tp: Any, value: object) -> Any | None:
        try:
            return _adapter(tp).validate_python(value)
        except ValidationError as exc:
            self.validation_problems(doc, loc, tp, exc)
            return None

    def items(self, doc: _Doc, key: str) -> list[tuple[int, Any]]:
        return list(self.iter_items(doc, key))

    def iter_items(self, doc: _Doc, key: str) -> Iterator[tuple[int, Any]]:
        """(index, model) of each valid item of the list section ``key``, each validated
        when it is taken; the problems of the others are recorded."""
        value = doc.data.get(key)
        if value is None:
            return
        if not isinstance(value, list):
            self.problem_at(doc, (key,), f"expected a list ('- ' items), found {value_kind(value)}")
            return
        model_type = _item_model(key)
        for index, item in enumerate(value):
            model = self.validate(doc, (key, index), model_type, item)
            if model is not None:
                yield index, model

    def unknown_keys(self, doc: _Doc, allowed: Sequence[str]) -> None:
        for key in doc.data:
            if key not in allowed:
                line, _, _ = doc.locate((key,))
                self.problem(doc.file, line, _unknown_key(key, allowed))

    # miners --------------------------------------------------------------------

    def miners(self, doc: _Doc, entries: Iterable[tuple[int, MinerEntry]]) -> list[MinerConfig]:
        """The miners of the entries, taken one at a time (10,000 entries are not held as
        models at once: ~9 MB). Their problems are recorded after those of validating
        the entries, in the order a list of entries would give."""
        miners: list[MinerConfig] = []
        names: dict[str, int] = {}  # name -> the index of the entry that named it first
        endpoints: dict[tuple[str, int], str] = {}
        found: list[tuple[Loc, str]] = []
        # Entries with the same labels (or none, the usual one entry a miner) give their
        # miners one dict, not one each: 64 bytes a miner for an empty one.
        labels_alike: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        for index, entry in entries:
            loc: Loc = ("miners", index)
            if entry.firmware != "auto" and entry.firmware not in _families():
                known = ("auto", *_families().names())
                close = difflib.get_close_matches(entry.firmware, known, n=1)
                hint = (
                    f" (did you mean {close[0]!r}?)" if close else f"; one of: {', '.join(known)}"
                )
                found.append(((*loc, "firmware"), f"unknown firmware {entry.firmware!r}{hint}"))
                continue
            hosts: list[str] = []
            if entry.host is not None:
                hosts = [entry.host]
            else:
                for number, spec in enumerate(entry.hosts or ()):
                    try:
                        hosts += expand_hosts(spec)
                    except ValueError as exc:
                        found.append(((*loc, "hosts", number), str(exc)))
            template = entry.name if entry.hosts is not None else None
            if template is not None and len(hosts) > 1 and not name_template_fields(template):
                found.append(
                    (
                        (*loc, "name"),
                        f"{template!r} would name {len(hosts):,} miners alike; add {{host}} or {{index}}",
                    )
                )
                continue
            labels = labels_alike.setdefault(tuple(entry.labels.items()), entry.labels)
            clashes: list[str] = []
            for number, host in enumerate(hosts, 1):
                if template is not None:
                    name = template.format(host=host, port=entry.port, index=number)
                else:
                    name = entry.name or default_miner_name(host, entry.port)
                if name in names:
                    line, _, _ = doc.locate(("miners", names[name]))
                    clashes.append(f"miner name {name!r} is already used (line {line})")
                    continue
                if (host, entry.port) in endpoints:
                    clashes.append(
                        f"{host}:{entry.port} is already listed as miner {endpoints[host, entry.port]!r}"
                    )
                    continue
                names[name] = index
                endpoints[host, entry.port] = name
                miners.append(miner_config(name, host, entry, labels))
            if clashes:
                more = f" (and {len(clashes) - 1:,} more in this entry)" if len(clashes) > 1 else ""
                named = "name" if entry.name is not None else "host" if entry.host else "hosts"
                found.append(((*loc, named), clashes[0] + more))
        for loc, message in found:
            self.problem_at(doc, loc, message)
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
        first: dict[str, tuple[_Doc, Loc]] = {}
        for rule, doc, loc in entries:
            if rule.name not in first:
                first[rule.name] = doc, loc
                continue
            line, _, _ = doc.locate((*loc, "name"))
            first_doc, first_loc = first[rule.name]
            first_line, _, _ = first_doc.locate((*first_loc, "name"))
            where = first_doc.file if first_line is None else f"{first_doc.file}:{first_line}"
            self.problem(doc.file, line, f"rule name {rule.name!r} is already used at {where}")

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

        miners = self.miners(doc, self.iter_items(doc, "miners"))
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
                    next((k for k in _receiver_kinds() if item.get(k) is not None), None),
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
            state_kinds = {kind.name for kind in _receiver_kinds().values() if kind.pushes_state}
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
        named = [miner for miner in cfg.miners if miner.firmware != "auto"]
        if not named:
            return  # `auto` miners have no family until polled: nothing to import for them
        families = _families()
        counts: dict[str, list[str]] = {}
        for miner in named:
            family = families.get(miner.firmware)
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
                f"log in to {families[name].channel_title or 'the control channel'} with the "
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


def _libyaml_for(text: str) -> type[Any] | None:
    """libyaml's loader where it may read ``text``: it is installed, and the text holds no
    character YAML forbids (the pure-Python reader words that problem, with its line)."""
    if yaml.reader.Reader.NON_PRINTABLE.search(text):
        return None
    return _CLoader


def _compose_fast(text: str) -> tuple[Any, yaml.Node | None] | None:
    """(loader, root node) composed by libyaml, or None where the pure-Python loader must
    read the text: libyaml absent, or the text is not plainly valid YAML (the pure loader
    then words the error exactly as it always has). The same SafeConstructor builds the
    values either way; libyaml only finds the nodes, about 10x faster (a 10,000-miner
    config: ~0.1 s instead of ~1 s)."""
    libyaml = _libyaml_for(text)
    if libyaml is None:
        return None
    loader = libyaml(text)
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
    with gc_paused():  # 10,000 miners: ~100,000 containers (values, models; nodes, lines)
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
