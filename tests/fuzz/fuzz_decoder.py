"""Fuzz target: the reply codec (``cgwatchdog.protocol``).

Seeds are real reply shapes: every field capture in ``../shared/fixtures/peer-replies``
(read at run time, as the firmware sent it), every command of every simulator flavour in
JSON and plain text, multi-command replies, and the quirks of DESIGN.md §2 applied to
those shapes. Each input goes through every public entry point:

- ``decode_reply`` (with and without a command), ``ReplyDecoder`` fed in random chunks
  with a random size cap, ``check_status``/``reply_status``/``is_success``,
  ``split_multi``, ``repair_json`` and ``decode_request``;
- allowed errors: :class:`ProtocolError` (and subclasses) everywhere, plus
  :class:`CommandError` from the STATUS checks. Anything else is a crash.

Invariants checked on every input (an :class:`Invariant` failure is a crash too):
a decoded reply is a dict; the chunked decoder gives what ``decode_reply`` gives, keeps
the bytes up to the first NUL, and raises ReplyTooLarge exactly when they exceed its cap;
valid strict JSON objects decode to exactly what ``json.loads`` reads, and
``repair_json`` leaves their meaning alone; where orjson is installed its fast path and
the lenient decoder agree; ``check_status`` returns the reply it was given.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

from cgwatchdog import protocol
from cgwatchdog.errors import CommandError, ProtocolError, ReplyTooLarge
from cgwatchdog.protocol import (
    MAX_REPLY_BYTES,
    ReplyDecoder,
    Request,
    check_status,
    decode_reply,
    decode_request,
    encode_reply,
    encode_text_reply,
    is_success,
    repair_json,
    reply_status,
    split_multi,
)
from cgwatchdog.simulator import FLAVOURS, FakeClock, SimulatedMiner

from .engine import Invariant
from .mutators import Mutator, chunks, split_points

NAME: Final = "decoder"
FIXTURES: Final = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "peer-replies"

# The quirks of DESIGN.md §2 and the bytes that make or break JSON and the text form.
TOKENS: Final = (
    b"}{", b"} {", b"}\n{", b"[,", b"[ ,{", b",}", b",]", b",,", b", ,", b"inf", b"-inf",
    b"nan", b"-nan", b"NaN", b"Infinity", b"-Infinity", b"INF", b"\\'", b"\\x", b"\\u12",
    b"\\u00e9", b"\\ud800", b'\\"', b"\\\\", b"\\", b'"', b"\0", b"\0\0", b"\n", b"\r\n",
    b"\t", b"\x01", b"\x1f", b"\x7f", b"\x80", b"\xff", b"\xfe\xff", b"\xc3", b"\xc3\x28",
    b"\xe2\x82", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\xf4\x90\x80\x80", b"true", b"false",
    b"null", b"{", b"}", b"[", b"]", b":", b",", b'{"', b'":', b'":"', b'","', b"[]", b"{}",
    b"|", b"=", b"\\,", b"\\|", b"\\=", b"STATUS=", b"STATUS=S,", b"STATUS=E,Code=45,Msg=x|",
    b"|SUMMARY,", b"|POOL=0,", b"CMD=summary|", b'"STATUS":"E"', b'"STATUS":"F"',
    b'"STATUS":"RESTART"', b'"STATUS":[]', b'"STATUS":{}', b'"STATUS":[1]', b'"Code":45',
    b'"Code":14', b'"Code":"45"', b'"Code":1e999', b'"Code":null', b'"Code":[]', b'"BYE"',
    b',"id":1}', b'"id":1', b'{"BYE","id":1}', b'"summary":', b'"devs":[', b'"pools":[{}]',
    b'"MHS 5s":"15679.6"', b'"Last Share Time":"0:00:17"', b'"Pool Stale%%":', b'MM ID0',
    b"1e999", b"-1e999", b"9" * 25, b"1" * 400, b"\xc2\xa0", "\u2028".encode(),
)  # fmt: skip

COMMANDS: Final = ("summary", "devs", "pools", "stats", "version", "estats", "asc|0", "config")


# -- seeds ------------------------------------------------------------------------------


def fixture_replies() -> list[bytes]:
    """Every captured reply as its firmware sent it (``raw`` where given), NUL-ended,
    and each capture's replies joined as one multi-command reply."""
    seeds: list[bytes] = []
    if not FIXTURES.is_dir():
        return seeds
    for path in sorted(FIXTURES.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        raw: dict[str, str] = data.get("raw") or {}
        parts: list[str] = []
        for command, reply in data["replies"].items():
            text = raw.get(command) or json.dumps(reply, separators=(",", ":"))
            seeds.append(text.encode() + b"\0")
            parts.append(f'"{command}":[{text}]')
        seeds.append(("{" + ",".join(parts) + ',"id":1}').encode() + b"\0")
    return seeds


def simulator_replies() -> list[bytes]:
    """What each simulator flavour answers to every command, JSON and plain text."""
    clock = FakeClock()
    seeds: list[bytes] = []
    for number, flavour in enumerate(FLAVOURS):
        for scenario in ("healthy", "device_dead", "pool_dead_failover", "hw_errors_rising"):
            miner = SimulatedMiner(
                "m", flavour, scenario, now=clock(), seed=number + 1, devices=3, pools=3
            )
            miner.power_on(clock())
            later = clock() + 3600.0
            for text in (False, True):
                for command in ("summary+devs+pools", "summary+stats", "version+nonsense"):
                    out = miner.handle(Request((command,), None, text), later)
                    seeds.append(out or b"")
            if scenario != "healthy":
                continue
            table = sorted(miner_commands(miner))
            for command in table:
                for text in (False, True):
                    fresh = SimulatedMiner("m", flavour, now=clock(), seed=number + 1)
                    out = fresh.handle(Request((command,), "0", text), clock() + 60.0)
                    if out:
                        seeds.append(out)
            seeds.append(miner.handle_bytes(b'{"command":', later) or b"")
            seeds.append(miner.handle_bytes(b'{"parameter":"0"}', later) or b"")
    return seeds


def miner_commands(miner: SimulatedMiner) -> Iterator[str]:
    """The commands a simulated miner's firmware knows (its API table)."""
    from cgwatchdog.simulator.core import _command_table  # the simulator's own table

    yield from _command_table(miner.flavour)


def synthetic_replies() -> list[bytes]:
    """Replies built with the encoders: STATUS shapes, codes 10/14/45, text escapes."""
    status = {
        "STATUS": "S",
        "When": 1,
        "Code": 11,
        "Msg": "Summary",
        "Description": "cgminer 4.11.1",
    }
    summary = {"Elapsed": 10, "MHS 5s": 1.5, "GHS 5s": "15679.6", "Last Share Time": "0:00:17",
               "Pool Stale%": 0.0, "Found Blocks": 0, "Note": "a,b|c=d\\e"}  # fmt: skip
    replies: list[dict[str, Any]] = [
        {"STATUS": [status], "SUMMARY": [summary], "id": 1},
        {"STATUS": [{**status, "STATUS": "E", "Code": 14, "Msg": "Invalid command"}], "id": 1},
        {"STATUS": [{**status, "STATUS": "E", "Code": 45, "Msg": "Access denied"}], "id": 1},
        {"STATUS": [{**status, "STATUS": "E", "Code": 10, "Msg": "No ASCs"}], "id": 1},
        {"STATUS": [{**status, "STATUS": "F", "Code": 999, "Msg": "Fatal"}], "id": 1},
        {"STATUS": [{**status, "STATUS": "W", "Code": 8, "Msg": "No pools"}], "id": 1},
        {"STATUS": "RESTART", "id": 1},
        {"STATUS": "BYE", "id": 1},
        {"STATUS": [status], "POOLS": [{"POOL": 0, "URL": "stratum+tcp://127.0.0.1:3333",
                                        "Status": "Alive", "Stratum Active": True}]},
    ]  # fmt: skip
    seeds = [encode_reply(reply) for reply in replies]
    seeds += [encode_text_reply(reply) for reply in replies if isinstance(reply["STATUS"], list)]
    return seeds


def quirk_replies(base: list[bytes]) -> list[bytes]:
    """DESIGN.md §2's quirks, written into real reply shapes."""
    summary = next((s for s in base if b'"SUMMARY"' in s), base[0]).rstrip(b"\0")
    stats = next((s for s in base if b'"STATS"' in s and b"}{" in s), summary).rstrip(b"\0")
    out = [
        stats + b"\0",  # }{ (bmminer 1.0)
        summary.replace(b'"SUMMARY":[{', b'"SUMMARY":[,{', 1),  # [,{ (bmminer)
        summary.replace(b"}]", b",}],", 1).replace(b'"id":1}', b'"id":1,}'),  # ,} (btminer)
        summary.replace(b'"Msg":"', b'"Msg":"line\nbreak ', 1),  # raw newline in a string
        summary.replace(b":0,", b":inf,", 1).replace(b":1,", b":-nan,", 1),  # Avalon
        b',"id":1}',  # Avalon
        b'{"BYE","id":1}',  # sgminer quit
        summary.replace(b'"Msg":"', b'"Msg":"miner\\\'s ', 1),  # Whatsminer \'
        summary.replace(b'"Elapsed":', b'"Elapsed":1,"Elapsed":', 1),  # duplicate keys (Hammer)
        summary,  # missing NUL: the miner just closes
        summary[: len(summary) // 2],  # truncated (cgminer gave up sending)
        summary + b"\0garbage after the NUL",
        summary.replace(b"Summary", b"Summ\xff\xfeary", 1),  # not UTF-8
        summary.replace(b'"Msg":"', b'"Msg":"\x01\x1f\x7f', 1),  # control characters
        summary.replace(b'"Elapsed":', b'"Elapsed":' + b"9" * 30 + b',"x":', 1),
        b'{"STATUS":' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # deep nesting
        b"[" * 5000,
        b"{" * 5000,
        b"",
        b"\0",
        b"   \n\0",
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n\xff\xfe\x00\x17not json",
        b"STATUS=S,When=1,Code=11,Msg=Summary,Description=cgminer 3.3.4|SUMMARY,Elapsed=1,"
        b"MHS av=1.5,Note=a\\,b\\|c|\0",
        b"STATUS=E,When=1,Code=14,Msg=Invalid command|\0",
        b"RESTART\0",
    ]
    return out


def big_reply(base: list[bytes]) -> bytes:
    """A STATS-like reply far above 64 KiB (~300 KB): many boards, long strings."""
    entry = '{"STATS":%d,"ID":"AV10%d","MM ID0":"Ver[1047] DNA[0134] Elapsed[100] %s"}'
    entries = ",".join(entry % (i, i, "Temp[40] " * 20) for i in range(1500))
    return ('{"STATUS":[{"STATUS":"S","Code":70}],"STATS":[' + entries + '],"id":1}\0').encode()


def seeds() -> tuple[list[bytes], list[float]]:
    """The seed corpus and its weights (the very large seeds are picked rarely)."""
    base = fixture_replies() + simulator_replies() + synthetic_replies()
    corpus = base + quirk_replies(base)
    weights = [1.0 if len(seed) < 64 * 1024 else 0.02 for seed in corpus]
    corpus.append(big_reply(base))
    weights.append(0.005)
    return corpus, weights


class DecoderFuzzer:
    """The decoder target: seeds mutated, every entry point checked."""

    name = NAME

    def __init__(self, scratch: Path) -> None:
        corpus, weights = seeds()
        self.mutator = Mutator(corpus, TOKENS, max_len=1 << 20, weights=weights)

    def generate(self, rng: random.Random) -> bytes:
        return self.mutator.generate(rng)

    def check(self, data: bytes, rng: random.Random) -> None:
        check(data, rng)


# -- checks -----------------------------------------------------------------------------

T = TypeVar("T")
_STRICT: Final = json.JSONDecoder(parse_constant=lambda name: _reject_constant(name))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def attempt(
    call: Callable[[], T], allowed: tuple[type[BaseException], ...] = (ProtocolError,)
) -> tuple[bool, T | BaseException]:
    """(True, result) or (False, the allowed error); any other exception propagates."""
    try:
        return True, call()
    except allowed as exc:
        return False, exc


def strict_object(body: bytes) -> dict[str, Any] | None:
    """``body`` read as strict JSON (UTF-8, no NaN/Infinity), if it is a JSON object."""
    try:
        text = body.decode("utf-8")
        obj = _STRICT.decode(text)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def feed_in_chunks(data: bytes, points: list[int], max_bytes: int) -> ReplyDecoder:
    """Feed ``data`` cut at ``points`` as a client would: stop at completion, else EOF."""
    decoder = ReplyDecoder(max_bytes)
    for piece in chunks(data, points):
        if decoder.feed(piece):
            break
    else:
        decoder.feed_eof()
    return decoder


def check(data: bytes, rng: random.Random) -> None:
    """Run ``data`` through every entry point; raise on a crash or a broken invariant."""
    body = data.split(b"\0", 1)[0]
    ok, whole = attempt(lambda: decode_reply(data))
    if ok and not isinstance(whole, dict):
        raise Invariant("decode-type", f"decode_reply returned {type(whole).__name__}")

    # Incremental decoding: random chunks, sometimes a cap that the reply exceeds.
    cap = rng.choice((MAX_REPLY_BYTES, len(body) + 1, len(body), max(0, len(body) - 1), 64))
    points = split_points(rng, len(data))
    fed, decoder_or_error = attempt(lambda: feed_in_chunks(data, points, cap))
    if len(body) > cap:
        if fed or not isinstance(decoder_or_error, ReplyTooLarge):
            raise Invariant("cap", f"{len(body)} bytes past a cap of {cap} did not raise")
    elif not fed:
        raise Invariant("cap", f"{len(body)} bytes within a cap of {cap} raised")
    else:
        assert isinstance(decoder_or_error, ReplyDecoder)
        decoder = decoder_or_error
        if decoder.raw() != body or decoder.size != len(body):
            raise Invariant("raw", "the decoder kept other bytes than those before the NUL")
        if decoder.nul_seen != (b"\0" in data):
            raise Invariant("nul", "nul_seen disagrees with the input")
        if not decoder.feed(b"more after the end"):
            raise Invariant("complete", "feed after completion reported incomplete")
        # The same bytes decode the same way: the reply itself is compared now and then
        # (each decode of a broken reply costs a full repair).
        if rng.random() < 0.2:
            ok_chunked, chunked = attempt(lambda: decoder.reply())
            if ok_chunked != ok or (ok and chunked != whole):
                raise Invariant("chunked", "chunked decoding differs from decoding at once")

    # Plain-text replies are read per command.
    if body.lstrip()[:7] == b"STATUS=":
        command = rng.choice(COMMANDS)
        ok_text, text_reply = attempt(lambda: decode_reply(data, command=command))
        if ok_text and not isinstance(text_reply, dict):
            raise Invariant("decode-type", "decode_reply with a command returned no dict")

    # Valid strict JSON: read exactly as json.loads reads it, and repair leaves it alone.
    expected = strict_object(body.strip(b" \t\n\r"))
    if expected is not None:
        if not ok or whole != expected:
            raise Invariant("exact", "a valid JSON object decoded to something else")
        text = body.decode("utf-8")
        try:
            repaired = _STRICT.decode(repair_json(text))
        except (ValueError, RecursionError) as exc:
            raise Invariant("repair-identity", f"repair_json broke valid JSON: {exc}") from None
        if repaired != expected:
            raise Invariant("repair-identity", "repair_json changed valid JSON's meaning")

    # orjson's fast path against the lenient decoder.
    loads = protocol._fast_loads
    if loads is not None and body[:1] == b"{":
        fast = protocol._fast_decode(body, loads)
        if fast is not None:
            lenient = attempt(
                lambda: protocol._decode_json(body.decode("utf-8", "replace").strip())
            )
            if lenient != (True, fast):
                raise Invariant("fast-path", "orjson's reading differs from the lenient decoder")

    # repair_json takes any text and never raises (decode_reply calls it on every reply
    # that is not JSON as sent; here it also gets text that does not look like JSON).
    if rng.random() < 0.3:
        repaired_text = repair_json(body.decode("utf-8", "replace"))
        if not isinstance(repaired_text, str):
            raise Invariant("repair-type", "repair_json returned no str")

    if ok:
        assert isinstance(whole, dict)
        check_reply(whole, rng)

    ok_request, request = attempt(lambda: decode_request(data))
    if ok_request:
        assert isinstance(request, Request)
        if not all(isinstance(c, str) for c in request.commands):
            raise Invariant("request", "decode_request gave a non-text command")


def check_reply(reply: dict[str, Any], rng: random.Random) -> None:
    """STATUS handling and multi-command splitting of a decoded reply."""
    command = rng.choice(COMMANDS)
    allowed = (ProtocolError, CommandError)
    ok_status, status = attempt(lambda: reply_status(reply))
    ok_check, checked = attempt(lambda: check_status(command, reply), allowed)
    ok_success, success = attempt(lambda: is_success(reply))
    if ok_check and checked is not reply:
        raise Invariant("check-status", "check_status returned another object")
    if ok_status != ok_success:
        raise Invariant("status", "reply_status and is_success disagree on a missing STATUS")
    if ok_success and success != ok_check:
        raise Invariant("status", "is_success disagrees with check_status")
    if ok_status:
        assert isinstance(status, tuple)
        letter, code, msg, _description = status
        if not isinstance(letter, str) or not isinstance(msg, str):
            raise Invariant("status", "STATUS letter or Msg is not text")
        if code is not None and not isinstance(code, int):
            raise Invariant("status", "Code is not an int")
    if not ok_check and isinstance(checked, CommandError):
        str(checked)  # the message must render
    names = [key for key in reply if isinstance(key, str) and key.islower() and key != "id"]
    names = names[: rng.randint(0, len(names))] or ["summary", "devs", "pools"]
    if rng.random() < 0.3:
        names.append(rng.choice(COMMANDS))
    ok_split, parts = attempt(lambda: split_multi(names, reply), allowed)
    if ok_split:
        assert isinstance(parts, dict)
        if set(parts) != set(names) or not all(isinstance(p, dict) for p in parts.values()):
            raise Invariant("split", "split_multi gave other commands or non-dict parts")
