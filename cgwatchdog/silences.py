"""Silences and maintenance, like Alertmanager's: what the operator holds back, until when.

A :class:`Silence` mutes the notifications of every alert all of whose :class:`Matcher`
s match its labels (``name="value"`` or ``name=~"regex"``, the regex anchored at both
ends as Alertmanager anchors it; a missing label matches as ""), from ``starts_at``
until ``ends_at``. A *maintenance* silence also holds back the remediation actions on
what it matches (``sim-001`` is having a board swapped: do not restart it).

The daemon owns one :class:`SilenceBook`: the config file's ``silences:`` (source
``config``), the silences added through the HTTP API, the CLI or the Telegram bot, and,
with ``cluster.alertmanager`` configured, the Alertmanager cluster's silences. Where
they live:

- ``local``: no cluster; the book itself is the record, saved in the state file at
  every change (``persist``), so it survives restarts.
- ``alertmanager``: with a :class:`SilenceRemote` (the cluster's Alertmanager
  receiver) a new silence is created in the cluster (``POST /api/v2/silences``; peers
  gossip it to one another), expired there (``DELETE /api/v2/silence/{id}``), and
  :meth:`SilenceBook.sync` reads them all back each cycle, those made in
  Alertmanager's own UI or with ``amtool`` included, so every replica honours the same
  silences. When the cluster cannot be read, the last-known silences (also saved in
  the state file) stay in force: a maintenance silence keeps holding actions back.
  Alertmanager has no maintenance flag: the comment starts with ``[maintenance]``.

No I/O here and no clock: times are arguments; the remote and ``persist`` are objects
the caller hands in. Methods are safe to call from several threads (the HTTP API calls
the remote in a worker thread).
"""

from __future__ import annotations

import builtins
import enum
import math
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from cgwatchdog.errors import NotifyError
from cgwatchdog.jsonstate import check_version
from cgwatchdog.units import parse_rfc3339, rfc3339, short_time

__all__ = [
    "EXPIRED_RETENTION_S",
    "MAINTENANCE_TAG",
    "MAX_SILENCES",
    "MIN_ID_PREFIX",
    "SOURCE_ALERTMANAGER",
    "SOURCE_CONFIG",
    "SOURCE_LOCAL",
    "Matcher",
    "Silence",
    "SilenceBook",
    "SilenceRemote",
    "SilenceState",
]

SOURCE_CONFIG: Final = "config"
SOURCE_LOCAL: Final = "local"
SOURCE_ALERTMANAGER: Final = "alertmanager"

# Alertmanager has no field for it: a maintenance silence says so at the head of its
# comment, which also lets an operator make one in Alertmanager's own UI.
MAINTENANCE_TAG: Final = "[maintenance]"
# An expired silence stays listed this long (who silenced what, and when it ended),
# then is forgotten; Alertmanager keeps them 5 days by default.
EXPIRED_RETENTION_S: Final = 24 * 3600.0
# A silence may be named by the start of its id, from this many characters on (ids are
# UUIDs: typing 36 characters into a chat is error-prone).
MIN_ID_PREFIX: Final = 8
# Bounds what an API client can make the daemon keep and save each change.
MAX_SILENCES: Final = 10_000
MAX_COMMENT: Final = 2_000

_STATE_VERSION: Final = 1
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OPS: Final = {(True, False): "=", (True, True): "=~", (False, False): "!=", (False, True): "!~"}
_MATCHER_TEXT: Final = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)(.*)", re.S)


# --- matchers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label condition: ``name="value"``, or ``name=~"regex"`` with ``regex``.

    The regex must match the whole value (Alertmanager anchors it the same way); a
    missing label matches as "". ``equal`` False makes it ``!=`` / ``!~``: silences
    read from Alertmanager may carry those, cgwatchdog never makes one. ValueError
    (with a message for the operator) for a bad name or regex.
    """

    name: str
    value: str
    regex: bool = False
    equal: bool = True
    _pattern: re.Pattern[str] | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _LABEL_NAME.fullmatch(self.name):
            raise ValueError(
                f"{self.name!r} is not a label name (letters, digits and _, not starting "
                "with a digit)"
            )
        if not isinstance(self.value, str):
            raise ValueError(f"the value of matcher {self.name!r} must be text")
        if self.regex:
            try:
                pattern = re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"{self.name}=~{self.value!r}: invalid regex: {exc}") from None
            object.__setattr__(self, "_pattern", pattern)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """A matcher as people write it: ``miner=sim-001``, ``alertname=~"Dev.*"``
        (quotes optional), ``severity!=info``. ValueError when it is none."""
        found = _MATCHER_TEXT.fullmatch(text)
        if found is None:
            raise ValueError(
                f"{text!r} is not a matcher: write name=value or name=~regex "
                '(e.g. miner=sim-001 or alertname=~"Device.*")'
            )
        name, op, value = found[1], found[2], found[3].strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        return cls(name, value, regex=op in ("=~", "!~"), equal=op in ("=", "=~"))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this matcher."""
        value = labels.get(self.name, "")
        if self._pattern is not None:
            hit = self._pattern.fullmatch(value) is not None
        else:
            hit = value == self.value
        return hit if self.equal else not hit

    @property
    def op(self) -> str:
        """``=``, ``=~``, ``!=`` or ``!~``."""
        return _OPS[(self.equal, self.regex)]

    def __str__(self) -> str:
        value = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{value}"'

    def to_json(self) -> dict[str, Any]:
        """The matcher as Alertmanager's API writes it."""
        return {
            "name": self.name,
            "value": self.value,
            "isRegex": self.regex,
            "isEqual": self.equal,
        }

    @classmethod
    def from_json(cls, data: Any) -> Matcher:
        """Inverse of :meth:`to_json` (``isEqual`` defaults to true); ValueError if malformed."""
        if not isinstance(data, Mapping):
            raise ValueError("a matcher must be an object with name and value")
        name, value = data.get("name"), data.get("value")
        regex, equal = data.get("isRegex", False), data.get("isEqual", True)
        if not isinstance(name, str) or not name:
            raise ValueError("a matcher needs a name (a label name)")
        if not isinstance(value, str):
            raise ValueError(f"matcher {name!r} needs a value (text)")
        if not isinstance(regex, bool) or not isinstance(equal, bool):
            raise ValueError(f"matcher {name!r}: isRegex and isEqual are true or false")
        return cls(name, value, regex=regex, equal=equal)


# --- silences ------------------------------------------------------------------------


class SilenceState(enum.Enum):
    """Where a silence is in its life, at a given time."""

    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes the alerts all of whose matchers match, from ``starts_at`` until ``ends_at``
    (epoch seconds; start inclusive, end exclusive); ``maintenance`` also holds back
    actions on what it matches. ``source``: ``config``, ``local`` or ``alertmanager``."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    comment: str
    created_by: str
    maintenance: bool = False
    source: str = SOURCE_LOCAL

    def state(self, now: float) -> SilenceState:
        """Pending, active or expired at ``now``."""
        if now >= self.ends_at:
            return SilenceState.EXPIRED
        if now < self.starts_at:
            return SilenceState.PENDING
        return SilenceState.ACTIVE

    def active(self, now: float) -> bool:
        """Whether the silence is in force at ``now``."""
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every matcher matches ``labels`` (time is the caller's to check)."""
        return all(m.matches(labels) for m in self.matchers)

    def silences(self, labels: Mapping[str, str], now: float) -> bool:
        """Whether this silence mutes an alert with ``labels`` at ``now``."""
        return self.active(now) and self.matches(labels)

    def describe(self) -> str:
        """One line for people: ``silence 3f2a9c1d (maintenance) by alice until ...: why``."""
        kind = " (maintenance)" if self.maintenance else ""
        until = short_time(self.ends_at) if math.isfinite(self.ends_at) else "ever"
        shown = self.id if self.source == SOURCE_CONFIG else self.id[:MIN_ID_PREFIX]
        text = f"silence {shown}{kind} by {self.created_by} until {until}"
        return f"{text}: {self.comment}" if self.comment else text

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """JSON-safe form (the state file, the HTTP API); with ``now``, its ``state`` too."""
        data: dict[str, Any] = {
            "id": self.id,
            "matchers": [m.to_json() for m in self.matchers],
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
            "comment": self.comment,
            "createdBy": self.created_by,
            "maintenance": self.maintenance,
            "source": self.source,
        }
        if now is not None:
            data["status"] = {"state": self.state(now).value}
        return data

    @classmethod
    def from_json(cls, data: Any) -> Silence:
        """Inverse of :meth:`to_json`; ValueError on a malformed record."""
        if not isinstance(data, Mapping):
            raise ValueError("a silence must be an object")
        try:
            starts = parse_rfc3339(data["startsAt"])
            ends = parse_rfc3339(data["endsAt"])
            if starts is None or ends is None:
                raise ValueError("startsAt and endsAt must be RFC 3339 times")
            matchers = data["matchers"]
            if not isinstance(matchers, list) or not matchers:
                raise ValueError("a silence needs at least one matcher")
            return cls(
                id=str(data["id"]),
                matchers=tuple(Matcher.from_json(m) for m in matchers),
                starts_at=starts,
                ends_at=ends,
                comment=str(data.get("comment", "")),
                created_by=str(data.get("createdBy", "")),
                maintenance=bool(data.get("maintenance", False)),
                source=str(data.get("source", SOURCE_LOCAL)),
            )
        except KeyError as exc:
            raise ValueError(f"malformed silence: {exc.args[0]} is missing") from None

    def to_alertmanager(self) -> dict[str, Any]:
        """The ``postableSilence`` of Alertmanager's API v2 (without ``id``: a new one)."""
        comment = f"{MAINTENANCE_TAG} {self.comment}" if self.maintenance else self.comment
        return {
            "matchers": [m.to_json() for m in self.matchers],
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
            "createdBy": self.created_by,
            "comment": comment,
        }

    @classmethod
    def from_alertmanager(cls, data: Any) -> Silence:
        """A ``gettableSilence`` of Alertmanager's API v2; ValueError if malformed."""
        if not isinstance(data, Mapping):
            raise ValueError("a silence must be an object")
        comment = str(data.get("comment") or "")
        maintenance = comment.lower().startswith(MAINTENANCE_TAG)
        if maintenance:
            comment = comment[len(MAINTENANCE_TAG) :].strip()
        record = {
            **data,
            "comment": comment,
            "maintenance": maintenance,
            "source": SOURCE_ALERTMANAGER,
        }
        if not isinstance(data.get("id"), str) or not data.get("id"):
            raise ValueError("an Alertmanager silence without an id")
        return cls.from_json(record)


class SilenceRemote(Protocol):
    """Where silences live when they are shared: the Alertmanager cluster.

    Each method blocks and raises :class:`~cgwatchdog.errors.NotifyError` when no peer
    could do it (the Alertmanager receiver implements them)."""

    def get_silences(self) -> builtins.list[dict[str, Any]]:
        """Every silence the cluster holds, as ``gettableSilence`` documents."""
        ...

    def post_silence(self, document: Mapping[str, Any]) -> str:
        """Create a silence from a ``postableSilence``; its id."""
        ...

    def delete_silence(self, silence_id: str) -> None:
        """Expire a silence (one already gone is not an error)."""
        ...


def _new_id() -> str:
    return str(uuid.uuid4())


def _one_line(text: str) -> str:
    return " ".join(text.split())


class SilenceBook:
    """Every silence the daemon honours; see the module docstring.

    ``persist`` is called with :meth:`to_json`'s document after each change (the
    watchdog saves it in the state file); ``new_id`` makes ids of local silences.
    """

    def __init__(
        self,
        *,
        persist: Callable[[dict[str, Any]], None] | None = None,
        remote: SilenceRemote | None = None,
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        self._lock = threading.RLock()
        self._persist_lock = threading.Lock()
        self._persist = persist
        self._remote = remote
        self._new_id = new_id
        self._config: tuple[Silence, ...] = ()
        self._kept: dict[str, Silence] = {}  # local and alertmanager ones, by id
        self._generation = 0
        self._touched: dict[str, int] = {}  # id -> generation of its last change here
        self.remote_error: str | None = None
        """Why the last :meth:`sync` could not read the cluster (None: it could)."""

    # -- configuration ------------------------------------------------------------------

    @property
    def remote(self) -> SilenceRemote | None:
        """The cluster the silences live in, if any."""
        return self._remote

    def set_remote(self, remote: SilenceRemote | None) -> None:
        """Keep silences in this cluster from now on (None: in the book alone)."""
        with self._lock:
            self._remote = remote
            if remote is None:
                self.remote_error = None

    def set_config(self, silences: Iterable[Silence]) -> None:
        """Replace the silences from the config file (``source`` ``config``)."""
        with self._lock:
            self._config = tuple(replace(s, source=SOURCE_CONFIG) for s in silences)

    # -- changes ------------------------------------------------------------------------

    def add(
        self,
        matchers: Sequence[Matcher],
        ends_at: float,
        comment: str,
        created_by: str,
        maintenance: bool,
        now: float,
        *,
        starts_at: float | None = None,
    ) -> Silence:
        """Make a silence from ``starts_at`` (default ``now``) until ``ends_at``.

        ValueError, with a message for the operator, for bad input; with a remote, the
        remote's NotifyError when the cluster could not take it (nothing is made then).
        """
        matchers = tuple(matchers)
        starts = now if starts_at is None else starts_at
        comment, created_by = _one_line(comment), _one_line(created_by)
        if not matchers:
            raise ValueError("a silence needs at least one matcher, e.g. miner=sim-001")
        if not all(isinstance(m, Matcher) for m in matchers):
            raise ValueError("matchers must be Matcher objects")
        if all(m.matches({}) for m in matchers):
            raise ValueError(
                "these matchers also match alerts without those labels (every matcher "
                "matches the empty value): the silence would mute every alert; name a miner "
                "or an alertname"
            )
        if not (math.isfinite(ends_at) and math.isfinite(starts)):
            raise ValueError("a silence needs a finite start and end")
        if ends_at <= now:
            raise ValueError(f"the end ({short_time(ends_at)}) is not in the future")
        if starts >= ends_at:
            raise ValueError("a silence must start before it ends")
        if not comment:
            raise ValueError("say why in a comment (people reading the alerts see it)")
        if len(comment) > MAX_COMMENT:
            raise ValueError(f"the comment is longer than {MAX_COMMENT} characters")
        if not created_by:
            raise ValueError("say who makes the silence (createdBy)")
        with self._lock:
            self._prune(now)
            if len(self._kept) >= MAX_SILENCES:
                raise ValueError(f"{MAX_SILENCES} silences already: expire some first")
            remote = self._remote
        draft = Silence("", matchers, starts, ends_at, comment, created_by, maintenance)
        # The cluster is asked without the lock held: the cycle reads the book meanwhile.
        if remote is not None:
            silence_id = remote.post_silence(draft.to_alertmanager())
            silence = replace(draft, id=silence_id, source=SOURCE_ALERTMANAGER)
        else:
            silence = replace(draft, id=self._new_id(), source=SOURCE_LOCAL)
        with self._lock:
            self._kept[silence.id] = silence
            self._touch(silence.id)
        self._save()
        return silence

    def expire(self, silence_id: str, now: float) -> Silence:
        """End a silence now (one already expired is returned as it is).

        ``silence_id`` is its id or a unique start of it (``MIN_ID_PREFIX`` characters
        at least). KeyError if no silence has it; ValueError for one from the config file;
        with a remote, its NotifyError when the cluster could not expire it.
        """
        silence = self.get(silence_id)
        if silence.source == SOURCE_CONFIG:
            raise ValueError(
                f"{silence.describe()} comes from the config file: remove it there and "
                "reload (systemctl reload cgwatchdog)"
            )
        if silence.state(now) is SilenceState.EXPIRED:
            return silence
        remote = self._remote
        if silence.source == SOURCE_ALERTMANAGER and remote is not None:
            remote.delete_silence(silence.id)
        ended = replace(silence, starts_at=min(silence.starts_at, now), ends_at=now)
        with self._lock:
            self._kept[ended.id] = ended
            self._touch(ended.id)
        self._save()
        return ended

    def _touch(self, silence_id: str) -> None:
        self._generation += 1
        self._touched[silence_id] = self._generation

    def _prune(self, now: float) -> bool:
        old = [sid for sid, s in self._kept.items() if now - s.ends_at > EXPIRED_RETENTION_S]
        for sid in old:
            del self._kept[sid]
            self._touched.pop(sid, None)
        return bool(old)

    def _save(self) -> None:
        # One save at a time, each of the latest state: the last one written is current.
        if self._persist is not None:
            with self._persist_lock:
                self._persist(self.to_json())

    # -- the cluster --------------------------------------------------------------------

    def sync(self, now: float) -> bool:
        """Read the cluster's silences (with a remote); False when it could not be read,
        the last-known silences staying in force (``remote_error`` says why). Blocks: the
        daemon calls it in a worker thread each cycle."""
        with self._lock:
            remote = self._remote
            started = self._generation
        if remote is None:
            with self._lock:
                pruned = self._prune(now)
            if pruned:
                self._save()
            return True
        try:
            documents = remote.get_silences()
        except NotifyError as exc:
            with self._lock:
                self.remote_error = str(exc)
            return False
        fetched: dict[str, Silence] = {}
        for document in documents:
            try:
                silence = Silence.from_alertmanager(document)
            except ValueError:
                continue  # a silence this version cannot read: Alertmanager still applies it
            fetched[silence.id] = silence
        with self._lock:
            self.remote_error = None
            kept = {k: s for k, s in self._kept.items() if s.source != SOURCE_ALERTMANAGER}
            for sid, silence in fetched.items():
                kept[sid] = silence
            # Changed here while the read was under way: ours is newer than what it saw.
            for sid, generation in self._touched.items():
                mine = self._kept.get(sid)
                if generation > started and mine is not None:
                    kept[sid] = mine
            changed = kept != self._kept
            self._kept = kept
            self._touched = {k: g for k, g in self._touched.items() if k in kept}
            changed = self._prune(now) or changed
        if changed:
            self._save()
        return True

    # -- reading ------------------------------------------------------------------------

    def get(self, silence_id: str) -> Silence:
        """The silence with this id, or whose id starts with it (``MIN_ID_PREFIX``
        characters at least, naming one silence only); KeyError otherwise."""
        wanted = silence_id.strip()
        with self._lock:
            every = [*self._config, *self._kept.values()]
        exact = [s for s in every if s.id == wanted]
        if exact:
            return exact[0]
        if len(wanted) < MIN_ID_PREFIX:
            raise KeyError(
                f"no silence {wanted!r} (give its id, or at least its first "
                f"{MIN_ID_PREFIX} characters)"
            )
        found = [s for s in every if s.id.startswith(wanted)]
        if len(found) > 1:
            raise KeyError(f"{wanted!r} starts {len(found)} silence ids: give more of it")
        if not found:
            raise KeyError(f"no silence {wanted!r} (cgwatchdog silence list shows them)")
        return found[0]

    def active(self, now: float) -> builtins.list[Silence]:
        """The silences in force at ``now``."""
        with self._lock:
            every = [*self._config, *self._kept.values()]
        return [s for s in every if s.active(now)]

    def silenced(self, labels: Mapping[str, str], now: float) -> bool:
        """Whether a silence in force mutes an alert with ``labels``."""
        return any(s.matches(labels) for s in self.active(now))

    def maintenance_of(self, labels: Mapping[str, str], now: float) -> Silence | None:
        """The maintenance silence in force that matches ``labels`` (a miner's labels
        with ``miner``, or an alert's), the one ending last; None if none does."""
        found = [s for s in self.active(now) if s.maintenance and s.matches(labels)]
        return max(found, key=lambda s: s.ends_at) if found else None

    def in_maintenance(self, miner_labels: Mapping[str, str], now: float) -> bool:
        """Whether a maintenance silence in force matches these labels."""
        return self.maintenance_of(miner_labels, now) is not None

    def maintenance_check(self, now: float) -> Callable[[Mapping[str, str]], str | None]:
        """For the action planner: labels -> why they are in maintenance (or None), over
        the maintenance silences in force at ``now`` (a snapshot: later changes do not
        show in it)."""
        held = [s for s in self.active(now) if s.maintenance]

        def check(labels: Mapping[str, str]) -> str | None:
            found = [s for s in held if s.matches(labels)]
            if not found:
                return None
            return max(found, key=lambda s: s.ends_at).describe()

        return check

    def list(self, now: float) -> builtins.list[Silence]:
        """Every silence known: pending, active, and expired within the retention
        (``EXPIRED_RETENTION_S``); active first, then pending, then expired, each by end."""
        order = {SilenceState.ACTIVE: 0, SilenceState.PENDING: 1, SilenceState.EXPIRED: 2}
        with self._lock:
            every = [*self._config, *self._kept.values()]
        shown = [s for s in every if now - s.ends_at <= EXPIRED_RETENTION_S]
        return sorted(shown, key=lambda s: (order[s.state(now)], s.ends_at, s.id))

    # -- the state file -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The silences to save (the config file's are not: they come from it)."""
        with self._lock:
            kept = sorted(self._kept.values(), key=lambda s: s.id)
            return {"version": _STATE_VERSION, "silences": [s.to_json() for s in kept]}

    def restore(self, data: Mapping[str, Any]) -> None:
        """Take up :meth:`to_json`'s document (after a restart); ValueError if malformed
        (nothing is taken then)."""
        check_version(data, _STATE_VERSION, "silence state")
        records = data.get("silences", [])
        if not isinstance(records, builtins.list):
            raise ValueError("malformed silence state: 'silences' is not a list")
        loaded = [Silence.from_json(record) for record in records]
        with self._lock:
            self._kept = {s.id: s for s in loaded if s.source != SOURCE_CONFIG}
            self._touched = {}
