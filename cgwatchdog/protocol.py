"""The cgminer RPC API codec, without I/O (the way h11 is an HTTP codec without sockets).

A request is a JSON object ``{"command": "summary", "parameter": "0"}`` or the plain-text
form ``summary`` / ``asc|0``; several report commands may be joined with ``+``. A reply
is JSON (or, for plain-text requests, ``STATUS=S,...|SECTION,...|``) terminated by one NUL
byte, after which the miner closes the connection.

Clients (``client.py``) own the sockets: they feed received bytes to a
:class:`ReplyDecoder` and get a decoded reply or a typed error back. The simulator uses
the server half (:func:`decode_request`, :func:`encode_reply`). Quirks of firmware in the
field are repaired here, once, for every caller.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cgwatchdog.errors import (
    ACCESS_DENIED_CODE,
    INVALID_COMMAND_CODE,
    AccessDenied,
    CommandError,
    InvalidCommand,
    ProtocolError,
    ReplyTooLarge,
)

_fast_loads: Callable[[bytes], Any] | None
try:  # the [fast] extra: a reply that is plain JSON decodes about 4x faster
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = None
else:
    _fast_loads = _orjson_loads

__all__ = [
    "DEFAULT_PORT",
    "MAX_REPLY_BYTES",
    "PRIVILEGED_COMMANDS",
    "ReplyDecoder",
    "Request",
    "check_status",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "encode_text_reply",
    "reply_status",
    "split_multi",
]

DEFAULT_PORT: Final = 4028
MAX_REPLY_BYTES: Final = 4 * 1024 * 1024
"""Default cap on one reply; a STATS reply of a big Avalon is ~30 KiB, so 4 MiB is ample."""

PRIVILEGED_COMMANDS: Final = frozenset(
    {
        "restart", "quit", "switchpool", "enablepool", "disablepool", "addpool",
        "removepool", "poolpriority", "poolquota", "save", "privileged", "zero",
        "hotplug", "failover-only", "setconfig", "pgaset", "ascset", "pgaenable",
        "pgadisable", "pgaidentify", "ascenable", "ascdisable", "ascidentify",
        "gpuenable", "gpudisable", "gpurestart", "gpuintensity", "gpumem", "gpuengine",
        "gpufan", "gpuvddc", "debug", "lcd", "setcoin",
    }
)  # fmt: skip
"""Commands that change a miner; cgminer needs ``W:`` in ``--api-allow`` for them."""

_SUCCESS_LETTERS: Final = frozenset({"S", "I", "W"})
# cgminer answers restart/quit with a bare string STATUS: {"STATUS":"RESTART","id":1}.
_SUCCESS_WORDS: Final = frozenset({"RESTART", "BYE"})
_COMMAND_RE: Final = re.compile(r"[A-Za-z0-9_-]+(?:\+[A-Za-z0-9_-]+)*")

# JSON section that holds a command's data, for plain-text replies (api.c's names).
_TEXT_SECTION_FOR_COMMAND: Final = {
    "summary": "SUMMARY", "devs": "DEVS", "edevs": "DEVS", "pools": "POOLS",
    "stats": "STATS", "estats": "STATS", "version": "VERSION", "config": "CONFIG",
    "coin": "COIN", "devdetails": "DEVDETAILS", "asc": "ASC", "pga": "PGA", "gpu": "GPU",
    "notify": "NOTIFY", "lcd": "LCD", "lockstats": "LOCKSTATS", "check": "CHECK",
    "usbstats": "USBSTATS", "ascs": "ASCS", "pgas": "PGAS", "gpus": "GPUS",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Request:
    """One API request as a miner receives it."""

    commands: tuple[str, ...]
    parameter: str | None = None
    text: bool = False

    @property
    def command(self) -> str:
        """The command as sent, several joined with ``+``."""
        return "+".join(self.commands)


def _command_name(command: str | Sequence[str]) -> str:
    name = command if isinstance(command, str) else "+".join(command)
    if not _COMMAND_RE.fullmatch(name):
        raise ProtocolError(
            f"invalid command {name!r}: use letters, digits, '-' or '_', joined by '+'"
        )
    return name


def encode_request(
    command: str | Sequence[str], parameter: object = None, *, text: bool = False
) -> bytes:
    """Encode a request; the parameter is always sent as a string.

    ``command`` may be ``"summary+devs"`` or ``["summary", "devs"]``. The plain-text form
    (``text=True``) carries one command; cgminer only joins commands in JSON.
    """
    name = _command_name(command)
    param = None if parameter is None else str(parameter)
    if text:
        if "+" in name:
            raise ProtocolError("the plain-text API form takes one command; use JSON for 'a+b'")
        try:
            return (name if param is None else f"{name}|{param}").encode()
        except UnicodeEncodeError:  # a lone surrogate, e.g. from a non-UTF-8 command line
            raise ProtocolError(f"parameter {param!r} is not valid text") from None
    payload = {"command": name} if param is None else {"command": name, "parameter": param}
    return json.dumps(payload, separators=(",", ":")).encode()


def decode_request(data: bytes) -> Request:
    """Decode a request as a miner does (JSON object, else ``command|parameter``)."""
    raw = data.split(b"\0", 1)[0].strip()
    if not raw:
        raise ProtocolError("empty request")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ProtocolError("request is not UTF-8") from None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"request is not valid JSON: {exc.msg}") from None
        except (ValueError, RecursionError):  # nesting or digits past the decoder's limits
            raise ProtocolError(
                "request is not valid JSON: too deeply nested or too long"
            ) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("command"), str):
            raise ProtocolError("JSON request lacks a string 'command'")
        param = obj.get("parameter")
        name = obj["command"].strip()
        return Request(
            commands=tuple(name.split("+")),
            parameter=None if param is None else str(param),
            text=False,
        )
    name, sep, param_text = text.partition("|")
    return Request(commands=(name.strip(),), parameter=param_text if sep else None, text=True)


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    """Encode a JSON reply the way cgminer sends it: compact JSON and one NUL."""
    return json.dumps(reply, separators=(",", ":")).encode() + b"\0"


def _text_escape(value: object) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    out = str(value)
    if any(c in out for c in "\\,|="):
        out = re.sub(r"([\\,|=])", r"\\\1", out)
    return out


def encode_text_reply(reply: Mapping[str, Any]) -> bytes:
    """Encode a reply in cgminer's plain-text form, ``STATUS=S,...|SUMMARY,...|`` + NUL.

    A section whose entries start with their own numbered key (``POOL=0,URL=...``) is
    written as such; others lead with the section name (``SUMMARY,Elapsed=...``).
    """
    parts: list[str] = []
    status = reply.get("STATUS")
    if isinstance(status, list):
        for entry in status:
            fields = ",".join(f"{k}={_text_escape(v)}" for k, v in entry.items())
            parts.append(fields)
    elif isinstance(status, str):
        parts.append(f"STATUS={_text_escape(status)}")
    for key, entries in reply.items():
        if key in ("STATUS", "id") or not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, Mapping):
                continue
            fields = ",".join(f"{k}={_text_escape(v)}" for k, v in entry.items())
            first = next(iter(entry), None)
            if first is not None and first.isupper() and isinstance(entry[first], int):
                parts.append(fields)
            else:
                parts.append(f"{key},{fields}" if fields else key)
    return ("|".join(parts) + "|").encode() + b"\0"


class ReplyDecoder:
    """Collects a reply's bytes: feed chunks, then :meth:`reply` decodes them.

    The reply ends at the first NUL byte or when the miner closes the connection
    (:meth:`feed_eof`), whichever comes first. Past ``max_bytes`` it raises
    :class:`ReplyTooLarge` at once, so a runaway miner cannot exhaust memory.
    """

    __slots__ = ("_chunks", "_size", "complete", "eof", "max_bytes", "nul_seen")

    def __init__(self, max_bytes: int = MAX_REPLY_BYTES) -> None:
        self.max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        self.complete = False
        self.eof = False
        self.nul_seen = False

    @property
    def size(self) -> int:
        """Bytes collected so far (without the NUL)."""
        return self._size

    def feed(self, data: bytes) -> bool:
        """Add received bytes; True once the reply is complete (NUL seen)."""
        if self.complete:
            return True
        end = data.find(b"\0")
        if end >= 0:
            data = data[:end]
            self.complete = self.nul_seen = True
        self._size += len(data)
        if self._size > self.max_bytes:
            raise ReplyTooLarge(self.max_bytes)
        if data:
            self._chunks.append(data)
        return self.complete

    def feed_eof(self) -> None:
        """The miner closed the connection: whatever arrived is the reply."""
        self.eof = True
        self.complete = True

    def raw(self) -> bytes:
        """The reply's bytes as received, without the NUL."""
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""

    def reply(self, command: str | None = None) -> dict[str, Any]:
        """Decode the collected bytes (see :func:`decode_reply`)."""
        return decode_reply(self.raw(), command=command)


# -- decoding ---------------------------------------------------------------------------

# strict=False: raw newlines in strings (Whatsminer btminer). NaN/Infinity read as null like
# the bare inf/nan of Avalon firmware, whether or not the rest of the reply needed repair.
_LENIENT_JSON: Final = json.JSONDecoder(strict=False, parse_constant=lambda _: None)
# A string, or an unterminated one running to the end of the text (a truncated reply). The
# unterminated case must match too: a failing match from every quote would make the scan
# quadratic, and 4 MiB of \" would stall the poller for hours.
_STRING_RE: Final = re.compile(r'"(?:[^"\\]|\\.)*("|\\?\Z)', re.DOTALL)
# Every escape, taken pairwise so that the "x" of an escaped backslash "\\x" is not read as
# an escape of its own.
_ESCAPE_RE: Final = re.compile(r"\\(u[0-9A-Fa-f]{4}|.)", re.DOTALL)
_VALID_ESCAPES: Final = frozenset('"\\/bfnrt')
_LITERAL_PREFIX_RE: Final = re.compile(r"[A-Za-z]*\s*\Z")
_NONFINITE_AT_RE: Final = re.compile(r"-?(?:inf(?:inity)?|nan)\b", re.IGNORECASE)
_STRAY_CONTROLS: Final = frozenset(chr(c) for c in (*range(0x20), 0x7F)) - set(" \t\n\r")
_MAX_GUIDED_FIXES: Final = 8
"""Quirks fixed one decode at a time; a reply with more is repaired in one pass instead
(each guided fix re-decodes the whole reply)."""
# Quirks outside strings, one alternative each; blanks include stray control bytes.
_BLANKS: Final = r"[\s\x00-\x1f\x7f]*"
_QUIRK_RE: Final = re.compile(
    rf"(?P<objects>\}}{_BLANKS}\{{)"  # }{ between objects: bmminer 1.0, cgminer 4.8/4.9
    rf"|(?P<leading>\[{_BLANKS}(?:,{_BLANKS})+)"  # [,{ : bmminer
    rf"|(?P<trailing>(?:,{_BLANKS})+(?=[}}\]]))"  # ,} and ,] : Whatsminer btminer
    rf"|(?P<doubled>,{_BLANKS}(?:,{_BLANKS})+)"
    r"|(?P<nonfinite>-?\b(?:inf(?:inity)?|nan)\b)"  # Avalon; read as null
    r"|(?P<control>[\x00-\x08\x0b\x0c\x0e-\x1f\x7f])",  # not JSON whitespace
    re.IGNORECASE,
)
_QUIRK_FIXES: Final = {
    "objects": "},{", "leading": "[", "trailing": "", "doubled": ",", "nonfinite": "null",
    "control": " ",
}  # fmt: skip
# sgminer answers quit with {"BYE","id":1}: a member without a value.
_BARE_STATUS_RE: Final = re.compile(r'^\s*\{\s*("[A-Z]+")\s*,')


def decode_reply(data: bytes, *, command: str | None = None) -> dict[str, Any]:
    """Decode one whole reply (JSON or plain text), repairing known firmware quirks.

    Raises :class:`ProtocolError` for bytes that are no reply at all (empty, truncated,
    not the cgminer API). It does not look at STATUS; see :func:`check_status`.
    """
    end = data.find(b"\0")
    body = data if end < 0 else data[:end]
    if _fast_loads is not None and body[:1] == b"{":
        fast = _fast_decode(body, _fast_loads)
        if fast is not None:
            return fast
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        raise ProtocolError("empty reply")
    first = text[0]
    if first in "{[,":
        return _decode_json(text)
    if text.startswith("STATUS="):
        return _decode_text(text, command)
    if text.startswith("HTTP/"):
        raise ProtocolError(
            f"an HTTP server answered ({_preview(text)}), not the cgminer API: is this the "
            "API port (4028), not the miner's web UI? (ePIC firmware serves HTTP on 4028: "
            "set firmware: epic)"
        )
    raise ProtocolError(f"not a cgminer API reply (starts with {_preview(text)})")


# Every digit as b"0", anything else as b" ": a run of 19 digits, the shortest integer
# that may not fit 64 bits, is then one bytes.find (~5 us on a 5 KB reply; a regex takes 45).
_DIGIT_MASK: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGIT_RUN: Final = b"0" * 19
# orjson reads arrays and objects nested up to 1024 deep, json only as deep as Python's
# recursion limit allows after the caller's own frames (under 1000): on a reply with this
# many brackets the two could disagree, so the lenient decoder decides alone. Field
# replies hold under 200.
_FAST_MAX_BRACKETS: Final = 512


def _fast_decode(body: bytes, loads: Callable[[bytes], Any]) -> dict[str, Any] | None:
    """orjson's reading of a reply, or None where the lenient decoder must decide.

    Strict JSON, valid UTF-8, no NaN, no integer of 19 digits or more, no deep nesting:
    orjson gives the same objects the lenient decoder would, about 3x faster. The one
    quirk mended here is ``}{`` between objects (every bmminer STATS), where orjson
    stops, exactly as :func:`_fix_where_decoding_stopped` mends it; anything else fails
    over to the lenient path from the start. Positions are only trusted on ASCII replies
    (orjson counts characters).
    """
    if body.translate(_DIGIT_MASK).find(_LONG_DIGIT_RUN) >= 0:
        return None  # orjson reads integers past 64 bits as floats; json keeps them exact
    if len(body) > _FAST_MAX_BRACKETS:
        # count() looks at every byte; replace() finds the few brackets with memchr
        brackets = 2 * len(body) - len(body.replace(b"[", b"")) - len(body.replace(b"{", b""))
        if brackets > _FAST_MAX_BRACKETS:
            return None
    ascii_only: bool | None = None
    for _ in range(_MAX_GUIDED_FIXES + 1):
        try:
            obj = loads(body)
        except ValueError as exc:
            pos = getattr(exc, "pos", None)
            message = getattr(exc, "msg", None)
            # orjson 3.9 says "unexpected character", later ones add what was expected
            if (
                not isinstance(message, str)
                or not message.startswith("unexpected character")
                or not isinstance(pos, int)
            ):
                return None
            if ascii_only is None:
                ascii_only = body.isascii()
            if (
                not ascii_only
                or body[pos : pos + 1] != b"{"
                or not body[:pos].rstrip(b" \t\n\r").endswith(b"}")
            ):
                return None
            body = body[:pos] + b"," + body[pos:]  # }{: bmminer 1.0, cgminer 4.8/4.9
            continue
        return obj if isinstance(obj, dict) else None
    return None


def _preview(text: str, limit: int = 24) -> str:
    shown = text[:limit]
    return repr(shown) + ("..." if len(text) > limit else "")


def _decode_json(text: str) -> dict[str, Any]:
    obj: Any = None
    decoded = False
    for _ in range(_MAX_GUIDED_FIXES + 1):
        try:
            obj, end = _LENIENT_JSON.raw_decode(text)
        except json.JSONDecodeError as exc:
            fixed = _fix_where_decoding_stopped(text, exc)
            if fixed is None:
                break
            text = fixed
            continue
        except (ValueError, RecursionError):  # nesting or digits past the decoder's limits
            break
        decoded = not text[end:].strip()  # else two objects back to back, or garbage
        break
    if not decoded:
        # Not JSON as sent, or more quirks than worth fixing one by one: repair it all.
        obj = _decode_repaired(text)
    if not isinstance(obj, dict):
        raise ProtocolError(f"reply is JSON but not an object ({type(obj).__name__})")
    return obj


def _fix_where_decoding_stopped(text: str, exc: json.JSONDecodeError) -> str | None:
    """Repair the one quirk the decoder stopped at, or None if it is none we know.

    The decoder only stops outside strings (or at a bad escape), so a fix here never
    touches data; a reply with one ``}{`` (every bmminer STATS) costs two decodes instead
    of a scan of every string.
    """
    pos = exc.pos
    if pos >= len(text):
        return None  # truncated: the full repair words the error
    char = text[pos]
    if exc.msg.startswith("Invalid \\escape") and char == "\\" and pos + 1 < len(text):
        escaped = text[pos + 1]
        # \' (Whatsminer summary) is an apostrophe; any other bad escape a backslash
        return text[:pos] + (escaped if escaped == "'" else "\\\\" + escaped) + text[pos + 2 :]
    if exc.msg.startswith("Invalid"):
        return None
    if char in _STRAY_CONTROLS:
        return text[:pos] + " " + text[pos + 1 :]
    before = text[:pos].rstrip(" \t\n\r")
    if char == "{" and before.endswith("}") and exc.msg.startswith("Expecting ','"):
        return text[:pos] + "," + text[pos:]  # }{: bmminer 1.0, cgminer 4.8/4.9
    if char == "," and before.endswith(("[", "{", ",")):
        return text[:pos] + text[pos + 1 :]  # [,{ (bmminer), or ,,
    if char in "}]" and before.endswith(","):
        return before[:-1] + text[len(before) :]  # ,} and ,]: Whatsminer btminer
    nonfinite = _NONFINITE_AT_RE.match(text, pos)
    if nonfinite:
        return text[:pos] + "null" + text[nonfinite.end() :]  # inf, -nan: Avalon
    return None


def _decode_repaired(text: str) -> Any:
    repaired = repair_json(text)
    try:
        obj, end = _LENIENT_JSON.raw_decode(repaired)
    except json.JSONDecodeError as exc:
        if _looks_truncated(repaired, exc):
            raise ProtocolError(
                f"reply ended early after {len(text)} characters (truncated: the miner "
                "gave up sending, or closed mid-reply)"
            ) from None
        raise ProtocolError(
            f"malformed JSON reply at character {exc.pos}: {exc.msg} "
            f"(near {_preview(repaired[max(0, exc.pos - 12) :], 30)})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"malformed JSON reply: {str(exc)[:80]}") from None
    if repaired[end:].strip():
        raise ProtocolError("extra data after the reply's JSON object")
    return obj


def _looks_truncated(text: str, exc: json.JSONDecodeError) -> bool:
    """Whether the decoder failed because the text stops early (cgminer's cut-off send)."""
    if exc.pos >= len(text) - 1 or exc.msg.startswith("Unterminated string"):
        return True
    if _LITERAL_PREFIX_RE.match(text, exc.pos):  # cut inside true/false/null
        return True
    outside = _STRING_RE.sub('""', text)
    opened = outside.count("{") + outside.count("[")
    return opened > outside.count("}") + outside.count("]")


def repair_json(text: str) -> str:
    """Rewrite the JSON dialects of known firmware into JSON.

    Outside strings: ``}{`` between objects (bmminer 1.0, cgminer 4.8/4.9, D3 Blissz),
    a leading comma in a list ``[,{`` (bmminer), trailing commas ``,}`` (Whatsminer
    btminer), bare ``inf``/``nan`` (Avalon, read as null), a reply that starts
    ``,"id":1}`` (Avalon) and ``{"BYE","id":1}`` (sgminer quit). Inside strings: invalid
    escapes such as ``\\'`` (Whatsminer summary). Raw control characters inside strings
    are accepted by the lenient decoder and left alone.
    """
    text = text.strip()
    if text.startswith(","):
        text = "{" + text[1:]
    text = _BARE_STATUS_RE.sub(r'{"STATUS":\1,', text, count=1)
    out: list[str] = []
    pos = 0
    for match in _STRING_RE.finditer(text):
        out.append(_repair_outside(text[pos : match.start()]))
        string = match.group()
        if match.group(1) != '"':
            # An unterminated string: the reply was cut inside it. Leave it for the error.
            out.append(string)
            return "".join(out)
        if "\\" in string:
            string = _ESCAPE_RE.sub(_fix_escape, string)
        out.append(string)
        pos = match.end()
    out.append(_repair_outside(text[pos:]))
    return "".join(out)


def _fix_escape(match: re.Match[str]) -> str:
    escaped = match.group(1)
    if len(escaped) == 5 or escaped in _VALID_ESCAPES:
        return match.group()
    if escaped == "'":
        return "'"
    return "\\\\" + escaped  # \x, \u without four hex digits: a literal backslash


def _fix_quirk(match: re.Match[str]) -> str:
    return _QUIRK_FIXES[match.lastgroup or ""]


def _repair_outside(segment: str) -> str:
    return _QUIRK_RE.sub(_fix_quirk, segment)


def _text_split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` except where backslash-escaped (cgminer escapes ``,|=\\``)."""
    if "\\" not in text:
        return text.split(sep)
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current.append(char)
            current.append(next(chars, ""))
        elif char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _text_unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text) if "\\" in text else text


_TEXT_INT_RE: Final = re.compile(r"-?(?:0|[1-9][0-9]*)")
_TEXT_FLOAT_RE: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _text_value(raw: str) -> Any:
    """A plain-text value as JSON would have typed it: bool, int, float, else the string.

    Only plain ASCII numbers convert (``int()`` alone also reads ``" 12"``, ``"1_2"`` and
    non-ASCII digits); ``"007"``, non-finite and oversized numbers stay strings.
    """
    value = _text_unescape(raw)
    if value in ("true", "false"):
        return value == "true"
    if _TEXT_INT_RE.fullmatch(value):
        try:
            return int(value)
        except ValueError:  # past int()'s digit limit
            return value
    if ("." in value or "e" in value or "E" in value) and _TEXT_FLOAT_RE.fullmatch(value):
        number = float(value)
        return number if math.isfinite(number) else value
    return value


def _decode_text(text: str, command: str | None) -> dict[str, Any]:
    base = (command or "").split("|", 1)[0].strip().lower()
    section_key = _TEXT_SECTION_FOR_COMMAND.get(base)
    reply: dict[str, Any] = {}
    for section in _text_split(text, "|"):
        if not section.strip():
            continue
        fields = _text_split(section, ",")
        head_name, has_value, _ = fields[0].partition("=")
        entry: dict[str, Any] = {}
        for field in fields[0 if has_value else 1 :]:
            key, sep, value = field.partition("=")
            if not sep:
                continue
            entry[_text_unescape(key)] = _text_value(value)
        name = _text_unescape(head_name)
        if name == "STATUS":
            reply.setdefault("STATUS", []).append(entry)
            continue
        key = section_key or (name + "S" if has_value else name)
        reply.setdefault(key, []).append(entry)
    if "STATUS" not in reply:
        raise ProtocolError("plain-text reply without a STATUS section")
    return reply


# -- STATUS -----------------------------------------------------------------------------


def reply_status(reply: Mapping[str, Any]) -> tuple[str, int | None, str, str | None]:
    """The reply's (STATUS letter or word, Code, Msg, Description).

    Raises :class:`ProtocolError` when the reply has no STATUS at all.
    """
    status = reply.get("STATUS")
    if isinstance(status, str):
        return status, None, status, None
    if isinstance(status, list) and status and isinstance(status[0], Mapping):
        entry = status[0]
        letter = str(entry.get("STATUS", "?"))
        raw_code = entry.get("Code")
        try:
            code = None if raw_code is None else int(raw_code)
        except (TypeError, ValueError, OverflowError):  # OverflowError: a Code of 1e999
            code = None
        msg = str(entry.get("Msg", ""))
        description = entry.get("Description")
        return letter, code, msg, None if description is None else str(description)
    raise ProtocolError("reply has no STATUS section")


def is_success(reply: Mapping[str, Any]) -> bool:
    """True for STATUS S, I, W and cgminer's bare ``RESTART``/``BYE``."""
    letter = reply_status(reply)[0]
    return letter in _SUCCESS_LETTERS or letter in _SUCCESS_WORDS


def check_status(command: str, reply: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the reply if it succeeded, else raise the typed error for its status."""
    letter, code, msg, description = reply_status(reply)
    if letter in _SUCCESS_LETTERS or letter in _SUCCESS_WORDS:
        return reply
    error: type[CommandError] = CommandError
    if code == ACCESS_DENIED_CODE:
        error = AccessDenied
    elif code == INVALID_COMMAND_CODE:
        error = InvalidCommand
    raise error(command, code, msg, status=letter, description=description)


def split_multi(commands: Iterable[str], reply: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Split a multi-command reply ``{"summary":[{...}], "devs":[{...}], "id":1}``.

    Each command's own reply is returned unchecked (a ``devs`` with STATUS E Code 10 "No
    ASCs" is a real answer: the miner has no devices). A reply that is not keyed by
    command (the miner refused the whole multi-command) raises the error of its STATUS,
    typically :class:`InvalidCommand` on an old API.
    """
    names = list(commands)
    if "STATUS" in reply and not any(name in reply for name in names):
        check_status("+".join(names), reply)
        # Some firmware answers only the first command: as good as not supporting it.
        raise InvalidCommand("+".join(names), None, "multi-command answered with a single reply")
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        part = reply.get(name)
        if isinstance(part, list) and part and isinstance(part[0], dict):
            out[name] = part[0]
        elif isinstance(part, dict):
            out[name] = part
        else:
            raise ProtocolError(f"multi-command reply lacks {name!r}")
    return out
