"""The sans-I/O codec: requests, replies, firmware quirks, STATUS handling.

Like h11's tests, every reply shape is fed to :class:`ReplyDecoder` whole and then one
byte at a time, and both must give the same dict. The replies are written here in each
firmware's style (small, inline); the captured field replies are read from the shared
fixtures folder, never copied in.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgwatchdog.errors import (
    AccessDenied,
    CommandError,
    InvalidCommand,
    ProtocolError,
    ReplyTooLarge,
)
from cgwatchdog.protocol import (
    MAX_REPLY_BYTES,
    ReplyDecoder,
    Request,
    check_status,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    encode_text_reply,
    is_success,
    repair_json,
    reply_status,
    split_multi,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "peer-replies"


# -- helpers ----------------------------------------------------------------------------


def feed_whole(
    data: bytes, max_bytes: int = MAX_REPLY_BYTES, command: str | None = None
) -> dict[str, Any]:
    """Decode ``data`` fed as one chunk; EOF ends it when it holds no NUL."""
    decoder = ReplyDecoder(max_bytes)
    if not decoder.feed(data):
        decoder.feed_eof()
    return decoder.reply(command)


def feed_bytewise(
    data: bytes, max_bytes: int = MAX_REPLY_BYTES, command: str | None = None
) -> dict[str, Any]:
    """Decode ``data`` fed one byte at a time, stopping at the NUL as a client does."""
    decoder = ReplyDecoder(max_bytes)
    for index in range(len(data)):
        if decoder.feed(data[index : index + 1]):
            break
    else:
        decoder.feed_eof()
    return decoder.reply(command)


def decode_all_ways(data: bytes, command: str | None = None) -> dict[str, Any]:
    """Decode directly, whole and byte by byte; all three must agree."""
    direct = decode_reply(data, command=command)
    assert feed_whole(data, command=command) == direct
    assert feed_bytewise(data, command=command) == direct
    return direct


def raises_all_ways(
    data: bytes, error: type[Exception], match: str, max_bytes: int = MAX_REPLY_BYTES
) -> None:
    """Feeding ``data`` whole and byte by byte both raise ``error`` matching ``match``."""
    with pytest.raises(error, match=match):
        feed_whole(data, max_bytes)
    with pytest.raises(error, match=match):
        feed_bytewise(data, max_bytes)


def status(letter: str, code: int, msg: str, description: str = "cgminer 4.11.1") -> dict[str, Any]:
    return {
        "STATUS": letter,
        "When": 1732121693,
        "Code": code,
        "Msg": msg,
        "Description": description,
    }


# Realistic replies, written compactly as the firmware sends them.

SUMMARY = {
    "STATUS": [status("S", 11, "Summary")],
    "SUMMARY": [
        {
            "Elapsed": 2416, "MHS av": 387186.77, "MHS 5s": 397759.08, "MHS 1m": 405927.53,
            "Found Blocks": 4, "Getworks": 82, "Accepted": 1520, "Rejected": 4,
            "Hardware Errors": 12, "Utility": 37.74, "Discarded": 33856, "Stale": 0,
            "Last getwork": 1732121690, "Device Hardware%": 0.0123, "Pool Stale%": 0.0,
        }
    ],
    "id": 1,
}  # fmt: skip

DEVS = {
    "STATUS": [status("S", 9, "2 ASC(s)")],
    "DEVS": [
        {"ASC": 0, "Name": "BTM", "ID": 0, "Enabled": "Y", "Status": "Alive", "Temperature": 61.5,
         "MHS av": 4523112.5, "MHS 5s": 4611028.25, "Accepted": 812, "Rejected": 2,
         "Hardware Errors": 3, "Last Share Time": 1732121685},
        {"ASC": 1, "Name": "BTM", "ID": 1, "Enabled": "Y", "Status": "Dead", "Temperature": 0.0,
         "MHS av": 0.0, "MHS 5s": 0.0, "Accepted": 0, "Rejected": 0,
         "Hardware Errors": 0, "Last Share Time": 0},
    ],
    "id": 1,
}  # fmt: skip

POOLS = {
    "STATUS": [status("S", 7, "2 Pool(s)")],
    "POOLS": [
        {"POOL": 0, "URL": "stratum+tcp://pool.example.org:3333", "Status": "Alive",
         "Priority": 0, "Quota": 1, "Long Poll": "N", "Accepted": 1520, "Rejected": 4,
         "User": "farm.rack1", "Last Share Time": 1732121685, "Stratum Active": True,
         "Pool Stale%": 0.0},
        {"POOL": 1, "URL": "stratum+tcp://backup.example.org:3333", "Status": "Alive",
         "Priority": 1, "Quota": 1, "Long Poll": "N", "Accepted": 0, "Rejected": 0,
         "User": "farm.rack1", "Last Share Time": 0, "Stratum Active": False,
         "Pool Stale%": 0.0},
    ],
    "id": 1,
}  # fmt: skip

NO_DEVICES = {"STATUS": [status("E", 10, "No ASCs")], "id": 1}
INVALID = {
    "STATUS": [{"STATUS": "E", "When": 1732121693, "Code": 14, "Msg": "Invalid command"}],
    "id": 1,
}
DENIED = {"STATUS": [status("E", 45, "Access denied to 'restart' command")], "id": 1}

MULTI = {
    "summary": [SUMMARY],
    "devs": [NO_DEVICES],
    "pools": [POOLS],
    "id": 1,
}

REPLY_SHAPES: dict[str, Mapping[str, Any]] = {
    "summary": SUMMARY,
    "devs": DEVS,
    "pools": POOLS,
    "multi": MULTI,
    "no devices": NO_DEVICES,
    "invalid command": INVALID,
    "access denied": DENIED,
    "restart": {"STATUS": "RESTART", "id": 1},
    "bye": {"STATUS": "BYE", "id": 1},
    "bfgminer restart": {"STATUS": [status("S", 257, "Restart", "bfgminer 5.5.0")], "id": 1},
    "version": {"STATUS": [status("S", 22, "CGMiner versions")],
                "VERSION": [{"CGMiner": "4.11.1", "API": "3.7"}], "id": 1},
    "switchpool": {"STATUS": [status("S", 27, "Switching to pool 1:'stratum+tcp://backup.example.org:3333'")],
                   "id": 1},
    "unicode and escapes": {"STATUS": [status("S", 11, "Summary")],
                            "SUMMARY": [{"Name": "Ферма \"north\"\t\\ 🚀", "Empty": "", "Neg": -83}],
                            "id": 1},
    "empty sections": {"STATUS": [status("I", 8, "No pools")], "POOLS": [], "id": 1},
}  # fmt: skip


# -- requests ---------------------------------------------------------------------------


def test_encode_request_json() -> None:
    assert encode_request("summary") == b'{"command":"summary"}'
    assert json.loads(encode_request("switchpool", "1")) == {
        "command": "switchpool",
        "parameter": "1",
    }


@pytest.mark.parametrize("parameter", [0, 1, 12.5, True, "0"])
def test_encode_request_parameter_is_always_a_string(parameter: object) -> None:
    sent = json.loads(encode_request("asc", parameter))
    assert sent == {"command": "asc", "parameter": str(parameter)}
    assert isinstance(sent["parameter"], str)


def test_encode_request_multi_forms_agree() -> None:
    joined = encode_request("summary+devs+pools")
    assert joined == b'{"command":"summary+devs+pools"}'
    assert encode_request(["summary", "devs", "pools"]) == joined
    assert encode_request(("summary", "devs", "pools")) == joined


def test_encode_request_plain_text() -> None:
    assert encode_request("summary", text=True) == b"summary"
    assert encode_request("asc", 0, text=True) == b"asc|0"
    assert encode_request("addpool", "stratum+tcp://127.0.0.1:3333,w1,x", text=True) == (
        b"addpool|stratum+tcp://127.0.0.1:3333,w1,x"
    )
    with pytest.raises(ProtocolError, match="one command"):
        encode_request("summary+devs", text=True)
    # a command line that was not UTF-8 reaches Python as lone surrogates
    with pytest.raises(ProtocolError, match="not valid text"):
        encode_request("asc", "\udcff", text=True)
    assert json.loads(encode_request("asc", "\udcff")) == {"command": "asc", "parameter": "\udcff"}


@pytest.mark.parametrize(
    "command",
    ["", "sum mary", 'summary"', "summary|0", "summary\n", "a++b", "+summary", "summary+",
     "summ\u00e4ry", ["summary", ""], []],
)  # fmt: skip
def test_encode_request_rejects_invalid_names(command: str | list[str]) -> None:
    with pytest.raises(ProtocolError, match="invalid command"):
        encode_request(command)


def test_decode_request_json() -> None:
    assert decode_request(b'{"command":"summary"}') == Request(("summary",))
    assert decode_request(b'{"command":"summary+devs+pools"}\0') == Request(
        ("summary", "devs", "pools")
    )
    # pycgminer sends the parameter as a JSON number
    request = decode_request(b'{"command": "asc", "parameter": 0}\n')
    assert request == Request(("asc",), "0", text=False)
    assert request.command == "asc"


def test_decode_request_plain_text() -> None:
    assert decode_request(b"summary\n") == Request(("summary",), None, text=True)
    assert decode_request(b"asc|0") == Request(("asc",), "0", text=True)
    assert decode_request(b"addpool|stratum+tcp://127.0.0.1:3333,w1,x|y\0junk") == Request(
        ("addpool",), "stratum+tcp://127.0.0.1:3333,w1,x|y", text=True
    )


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b" \n\0summary", "empty"),
        (b"\xff\xfesummary", "UTF-8"),
        (b'{"command":"summary"', "not valid JSON"),
        (b'{"parameter":"0"}', "lacks a string 'command'"),
        (b'{"command":5}', "lacks a string 'command'"),
        (b'{"command":' + b"[" * 100_000, "not valid JSON"),
    ],
    ids=["empty", "blank", "not utf-8", "cut json", "no command", "int command", "deep nesting"],
)
def test_decode_request_errors(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_request(data)


# -- replies: round trips ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(REPLY_SHAPES))
def test_encode_reply_round_trip(name: str) -> None:
    reply = REPLY_SHAPES[name]
    wire = encode_reply(reply)
    assert wire.endswith(b"}\0") and wire.count(b"\0") == 1
    assert decode_all_ways(wire) == reply


@pytest.mark.parametrize(
    ("reply", "command", "expected_key"),
    [(SUMMARY, "summary", "SUMMARY"), (DEVS, "devs", "DEVS"), (POOLS, "pools", "POOLS"),
     (SUMMARY, None, "SUMMARY"), (POOLS, None, "POOLS")],
)  # fmt: skip
def test_encode_text_reply_round_trip(
    reply: Mapping[str, Any], command: str | None, expected_key: str
) -> None:
    wire = encode_text_reply(reply)
    assert wire.startswith(b"STATUS=S,When=1732121693,Code=") and wire.endswith(b"|\0")
    section = next(key for key in reply if key not in ("STATUS", "id"))
    expected = {"STATUS": reply["STATUS"], expected_key: reply[section]}
    assert decode_all_ways(wire, command) == expected


def test_encode_text_reply_cgminer_shapes() -> None:
    assert encode_text_reply({"STATUS": "RESTART", "id": 1}) == b"STATUS=RESTART|\0"
    wire = encode_text_reply(SUMMARY)
    assert wire.startswith(
        b"STATUS=S,When=1732121693,Code=11,Msg=Summary,Description=cgminer 4.11.1|SUMMARY,Elapsed=2416,"
    )
    assert b"|POOL=1,URL=stratum+tcp://backup.example.org:3333," in encode_text_reply(POOLS)


def test_plain_text_reply_with_escapes() -> None:
    # cgminer escapes , | = and \ with a backslash in the plain-text form (api.c escape_string)
    wire = (
        rb"STATUS=S,When=1732121693,Code=7,Msg=1 Pool(s),Description=cgminer 3.3.4|"
        rb"POOL=0,URL=stratum+tcp://pool.example.org:3333,Status=Alive,Priority=0,"
        rb"User=farm\,rack\|1,Pass=a\=b\\c,Accepted=1520,Difficulty Accepted=24320.00000000,"
        rb"Has Stratum=true,Stratum Active=false,Last Share Time=0:00:05|" + b"\0"
    )
    reply = decode_all_ways(wire, "pools")
    assert reply["STATUS"] == [status("S", 7, "1 Pool(s)", "cgminer 3.3.4")]
    pool = reply["POOLS"][0]
    assert pool["User"] == "farm,rack|1"
    assert pool["Pass"] == "a=b\\c"
    assert pool["Accepted"] == 1520 and pool["Difficulty Accepted"] == 24320.0
    assert pool["Has Stratum"] is True and pool["Stratum Active"] is False
    assert pool["Last Share Time"] == "0:00:05"
    # what encode_text_reply writes, decode reads back
    assert decode_all_ways(encode_text_reply(reply), "pools") == reply


def test_plain_text_asc_reply_and_untyped_values() -> None:
    wire = (
        b"STATUS=S,When=1732121693,Code=106,Msg=ASC0,Description=cgminer 4.11.1|"
        b"ASC=0,Name=BTM,ID=0,Enabled=Y,Status=Alive,Temperature=61.50,MHS 5s=4611028.25,"
        b"Serial=0012,Count= 12,Tag=1_2,Ratio=inf,Odd=-nan|\0"
    )
    reply = decode_all_ways(wire, "asc|0")
    asc = reply["ASC"][0]
    assert asc["ASC"] == 0 and asc["Temperature"] == 61.5 and asc["MHS 5s"] == 4611028.25
    # only plain numbers convert: these stay what the miner wrote
    assert (asc["Serial"], asc["Count"], asc["Tag"]) == ("0012", " 12", "1_2")
    assert (asc["Ratio"], asc["Odd"]) == ("inf", "-nan")
    assert decode_reply(wire)["ASCS"] == reply["ASC"]  # without the command: named after the entry


def test_plain_text_without_status_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="not a cgminer API reply"):
        decode_reply(b"SUMMARY,Elapsed=12|\0")


# -- replies: quirks of the field -------------------------------------------------------


S9_STATS = (
    b'{"STATUS":[{"STATUS":"S","When":1732121693,"Code":70,"Msg":"BMMiner stats","Description":"bmminer 1.0.0"}],'
    b'"STATS":[{"BMMiner":"2.0.0","Miner":"30.0.1.3","CompileTime":"Wed Jul 31 16:18:27 CST 2019",'
    b'"Type":"Antminer S9"}{"STATS":0,"ID":"BC50","Elapsed":86400,"Calls":0,"Wait":0.000000,'
    b'"GHS 5s":"13702.40","GHS av":13650.12,"fan_num":2,"fan5":5880,"fan6":4200,"temp6":63,'
    b'"chain_rate6":"4566.10","chain_xtime6":"{X0=58,X1=59}","chain_acs6":" oooooooo oooooooo"}],"id":1}'
)  # fmt: skip


def test_bmminer_stats_objects_without_comma() -> None:
    reply = decode_all_ways(S9_STATS + b"\0")
    identity, board = reply["STATS"]
    assert identity["Type"] == "Antminer S9"
    assert board["ID"] == "BC50" and board["fan6"] == 4200
    assert board["chain_xtime6"] == "{X0=58,X1=59}"  # }{ inside a string is left alone
    assert board["GHS 5s"] == "13702.40"  # numbers as strings: normalizing is snapshot's job


@pytest.mark.parametrize(
    ("description", "miner_type"),
    [("cgminer 4.9.0", "Antminer L3+"), ("cgminer 4.8.0", "Antminer D3 Blissz v2.06")],
)
def test_cgminer_48_49_stats_objects_without_comma(description: str, miner_type: str) -> None:
    wire = (
        '{"STATUS":[{"STATUS":"S","When":1732121693,"Code":70,"Msg":"CGMiner stats",'
        f'"Description":"{description}"}}],"STATS":[{{"CGMiner":"{description[8:]}",'
        f'"Miner":"1.0.1.3","CompileTime":"Fri Dec 8 17:17:44 CST 2017","Type":"{miner_type}"}}'
        '{"STATS":0,"ID":"L30","Elapsed":1200,"GHS 5s":"504.21","GHS av":503.87,"chain_acn1":72}'
        '{"STATS":1,"ID":"POOL0","Elapsed":1200,"Pool Calls":0,"Pool Attempts":0}],"id":1}\0'
    ).encode()
    reply = decode_all_ways(wire)
    assert [entry.get("ID") for entry in reply["STATS"]] == [None, "L30", "POOL0"]
    assert reply["STATS"][0]["Type"] == miner_type


def test_bmminer_leading_comma_in_list() -> None:
    wire = (
        b'{"STATUS":[{"STATUS":"S","When":1732121693,"Code":70,"Msg":"BMMiner stats",'
        b'"Description":"bmminer 1.0.0"}],"STATS":[,{"STATS":0,"ID":"BC50","Elapsed":10}],"id":1}\0'
    )
    assert decode_all_ways(wire)["STATS"] == [{"STATS": 0, "ID": "BC50", "Elapsed": 10}]


WHATSMINER_DEVS = (
    b'{"STATUS":[{"STATUS":"S","When":1604757733,"Code":9,"Msg":"3 ASC(s)","Description":"cgminer 4.9.2",}],'
    b'"DEVS":[{"ASC":0,"Name":"SM","ID":0,"Slot":0,"Enabled":"Y","Status":"Alive","Temperature":71.50,'
    b'"MHS av":22711971.14,"PCB SN":"HEM2040\n1A1","Effective Chips":111,},'
    b'{"ASC":1,"Name":"SM","ID":1,"Slot":1,"Enabled":"Y","Status":"Alive","Temperature":72.25,'
    b'"MHS av":22643099.02,"PCB SN":"HEM2040\r\n1A2","Effective Chips":111,},],"id":1}'
)  # fmt: skip


def test_whatsminer_trailing_commas_and_raw_newlines() -> None:
    reply = decode_all_ways(WHATSMINER_DEVS + b"\0")
    assert reply["STATUS"][0]["Description"] == "cgminer 4.9.2"
    assert [dev["PCB SN"] for dev in reply["DEVS"]] == ["HEM2040\n1A1", "HEM2040\r\n1A2"]
    assert reply["DEVS"][1]["Effective Chips"] == 111


def test_whatsminer_invalid_quote_escape() -> None:
    wire = (
        b'{"STATUS":[{"STATUS":"S","When":1604757733,"Code":11,"Msg":"Summary","Description":"cgminer 4.9.2"}],'
        b'"SUMMARY":[{"Elapsed":66295,"MHS 5s":64143777.95,"Firmware Version":"\\\'20200917.22.REL\\\'",'
        b'"CB Platform":"ALLWINNER_H3","Power Mode":"Normal"}],"id":1}\0'
    )
    summary = decode_all_ways(wire)["SUMMARY"][0]
    assert summary["Firmware Version"] == "'20200917.22.REL'"
    assert summary["CB Platform"] == "ALLWINNER_H3"


def test_repair_keeps_valid_escapes_around_a_backslash() -> None:
    # "\\m" is an escaped backslash then "m": repairing "}{" elsewhere must not read "\m" as
    # an escape of its own (it did: C:\miner\data came out as invalid JSON).
    wire = (
        b'{"STATUS":[{"STATUS":"S","When":1,"Code":70,"Msg":"CGMiner stats","Description":"cgminer 4.9.0"}],'
        b'"STATS":[{"Path":"C:\\\\miner\\\\data","Quote":"say \\"hi\\"","Uni":"\\u00b0C","Odd":"\\x\\u12"}'
        b'{"STATS":0,"ID":"L30"}],"id":1}\0'
    )
    identity = decode_all_ways(wire)["STATS"][0]
    assert identity == {
        "Path": "C:\\miner\\data",
        "Quote": 'say "hi"',
        "Uni": "\u00b0C",
        "Odd": "\\x\\u12",
    }


def test_avalon_inf_and_nan_read_as_null() -> None:
    wire = (
        b'{"STATUS":[{"STATUS":"S","When":168,"Code":11,"Msg":"Summary","Description":"cgminer 4.11.1"}],'
        b'"SUMMARY":[{"Elapsed":155,"MHS av":25536751.74,"Device Hardware%":inf,"Device Rejected%":-nan,'
        b'"Pool Rejected%":nan,"Pool Stale%":-inf,"Work Utility":Infinity,"Best Share":NaN}],"id":1}\0'
    )
    summary = decode_all_ways(wire)["SUMMARY"][0]
    assert summary["MHS av"] == 25536751.74
    for key in ("Device Hardware%", "Device Rejected%", "Pool Rejected%", "Pool Stale%",
                "Work Utility", "Best Share"):  # fmt: skip
        assert summary[key] is None, key
    # the same words inside strings are text, not numbers
    assert decode_reply(b'{"STATUS":"S","Info":"inf nan"}')["Info"] == "inf nan"
    # valid JSON with NaN/Infinity reads as null too: no non-finite floats leak out
    assert decode_reply(b'{"STATUS":[],"a":NaN,"b":-Infinity}') == {
        "STATUS": [],
        "a": None,
        "b": None,
    }


def test_avalon_reply_starting_with_comma() -> None:
    assert decode_all_ways(b',"id":1}\0') == {"id": 1}
    with pytest.raises(ProtocolError, match="no STATUS"):
        check_status("ascset", decode_reply(b',"id":1}\0'))


def test_sgminer_bye_without_value() -> None:
    reply = decode_all_ways(b'{"BYE","id":1}\0')
    assert reply == {"STATUS": "BYE", "id": 1}
    assert check_status("quit", reply) is reply


def test_cgminer_restart_status_string_is_success() -> None:
    reply = decode_all_ways(b'{"STATUS":"RESTART","id":1}\0')
    assert check_status("restart", reply) is reply
    assert reply_status(reply) == ("RESTART", None, "RESTART", None)
    assert is_success(reply)


def test_numbers_as_strings_are_left_as_sent() -> None:
    wire = (
        b'{"STATUS":[{"STATUS":"S","When":1730228038,"Code":11,"Msg":"Summary","Description":"ccminer 2.3.3"}],'
        b'"SUMMARY":[{"Elapsed":119134,"MHS 5s":"4885.0813","MHS av":"4872.9297","Accepted":"156.0000",'
        b'"Hardware Errors":7977,"Pool Stale%%":0.0,"chain_rate4":""}],"id":1}\0'
    )
    summary = decode_all_ways(wire)["SUMMARY"][0]
    assert summary["MHS 5s"] == "4885.0813" and summary["Accepted"] == "156.0000"
    assert summary["chain_rate4"] == "" and summary["Pool Stale%%"] == 0.0


def test_hammer_duplicate_keys_last_wins() -> None:
    wire = (
        b'{"STATUS":[{"STATUS":"S","When":1730228065,"Code":70,"Msg":"CGMiner stats","Description":"ccminer 2.3.3"}],'
        b'"STATS":[{"CGMiner":"2.3.3","Type":"Hammer D10"},{"STATS":0,"ID":"A30","temp_num":12,'
        b'"temp1":44,"temp2":41,"temp1":46,"temp2":42,"temp1":45,"temp3":40,"temp3":0}],"id":1}\0'
    )
    board = decode_all_ways(wire)["STATS"][1]
    assert (board["temp1"], board["temp2"], board["temp3"]) == (45, 42, 0)
    # the same when the reply also needs repairing
    assert decode_all_ways(wire.replace(b"},{", b"}{"))["STATS"][1]["temp1"] == 45


def test_control_characters_and_non_utf8_bytes() -> None:
    wire = (
        b'{"STATUS":[{"STATUS":"S","When":1,"Code":9,"Msg":"1 ASC(s)","Description":"cgminer 4.11.1"}],\x07'
        b'"DEVS":[{"ASC":0,"Name":"\xff\xfeBTM","Status":"Al\x01ive\x7f","Tab":"a\tb"}\x1b],"id":1}\0'
    )
    dev = decode_all_ways(wire)["DEVS"][0]
    assert dev["Name"] == "\ufffd\ufffdBTM"
    assert dev["Status"] == "Al\x01ive\x7f" and dev["Tab"] == "a\tb"


def test_missing_nul_ends_at_eof() -> None:
    wire = encode_reply(SUMMARY)[:-1]
    decoder = ReplyDecoder()
    assert decoder.feed(wire) is False
    decoder.feed_eof()
    assert decoder.complete and decoder.eof and not decoder.nul_seen
    assert decoder.reply() == SUMMARY
    assert decode_all_ways(wire) == SUMMARY


def test_bytes_after_the_nul_are_ignored() -> None:
    wire = encode_reply(POOLS) + b'{"STATUS":"garbage"}\0\xff\xff'
    assert decode_all_ways(wire) == POOLS
    decoder = ReplyDecoder(max_bytes=len(encode_reply(POOLS)))  # the tail does not count
    assert decoder.feed(wire) is True and decoder.nul_seen
    assert decoder.feed(b"more after") is True
    assert decoder.raw() == encode_reply(POOLS)[:-1]
    assert decoder.size == len(wire.split(b"\0")[0])


TRUNCATABLE = [
    pytest.param(encode_reply(SUMMARY)[:-1], id="summary"),
    pytest.param(encode_reply(MULTI)[:-1], id="multi"),
    pytest.param(S9_STATS, id="bmminer }{"),
    pytest.param(WHATSMINER_DEVS, id="btminer ,}"),
    pytest.param(
        b'{"STATUS":[{"STATUS":"S","When":1,"Code":11,"Msg":"Summary","Description":"cgminer 4.11.1"}],'
        b'"SUMMARY":[{"Elapsed":155,"Device Hardware%":-inf,"OK":true,"Missing":null,"Bad":false}],"id":1}',
        id="avalon inf",
    ),
]


@pytest.mark.parametrize("wire", TRUNCATABLE)
def test_every_truncation_says_truncated(wire: bytes) -> None:
    assert decode_reply(wire)  # the whole reply decodes
    for cut in range(1, len(wire)):
        prefix = wire[:cut]
        if not prefix.strip():
            continue
        with pytest.raises(ProtocolError, match="truncated"):
            decode_reply(prefix)
    # as a client sees it: the miner closes mid-reply, no NUL
    raises_all_ways(wire[: len(wire) * 2 // 3], ProtocolError, "truncated")


def big_stats_reply(target_bytes: int) -> bytes:
    """A bmminer-style STATS reply of about ``target_bytes``, with the }{ quirk throughout."""
    head = (
        b'{"STATUS":[{"STATUS":"S","When":1732121693,"Code":70,"Msg":"BMMiner stats",'
        b'"Description":"bmminer 1.0.0"}],"STATS":[{"BMMiner":"2.0.0","Type":"Antminer S9"}'
    )
    boards: list[bytes] = []
    size = len(head)
    index = 0
    while size < target_bytes:
        board = (
            b'{"STATS":%d,"ID":"BC5%d","Elapsed":86400,"GHS 5s":"4566.10","chain_acs%d":"%s",'
            b'"temp_chip%d":"59-60-61-62","chain_xtime%d":"{X0=58,X1=59}"}'
            % (index, index, index, b" oooooooo" * 8, index, index)
        )
        boards.append(board)
        size += len(board)
        index += 1
    return head + b"".join(boards) + b'],"id":1}'


def test_many_quirks_in_one_reply() -> None:
    # Past a few quirks the decoder stops fixing them one at a time and repairs the
    # whole text in one pass: both ways must read the same.
    boards = [
        {"STATS": n, "ID": f"BC5{n}", "GHS 5s": "4566.10", "Type": "x}{y,}"} for n in range(12)
    ]
    clean = {"STATUS": [status("S", 70, "BMMiner stats")], "STATS": boards, "id": 1}
    wire = encode_reply(clean).replace(b"},{", b"}{").replace(b'"4566.10"', b'"4566.10",')
    assert wire.count(b"}{") == 11 + 12  # 11 between boards, 12 inside the Type strings
    assert decode_all_ways(wire) == clean
    avalon = (
        b'{"STATUS":[{"STATUS":"S","Code":11}],"SUMMARY":[{'
        + b",".join(b'"W%d":%s' % (n, b"-nan" if n % 2 else b"inf") for n in range(20))
        + b"}]}"
    )
    assert decode_all_ways(avalon)["SUMMARY"][0] == {f"W{n}": None for n in range(20)}


def test_replies_far_above_64_kib() -> None:
    wire = big_stats_reply(1024 * 1024) + b"\0"
    assert len(wire) > 1024 * 1024
    reply = decode_all_ways(wire)
    assert reply["STATS"][0]["Type"] == "Antminer S9"
    assert len(reply["STATS"]) > 4000
    last = reply["STATS"][-1]
    assert last[f"temp_chip{last['STATS']}"] == "59-60-61-62"


def test_size_cap() -> None:
    wire = encode_reply(SUMMARY)
    size = len(wire) - 1
    assert feed_whole(wire, max_bytes=size) == SUMMARY  # exactly at the cap is fine
    assert feed_bytewise(wire, max_bytes=size) == SUMMARY
    raises_all_ways(wire, ReplyTooLarge, f"larger than {size - 1} bytes", max_bytes=size - 1)
    # a runaway miner is stopped as soon as it passes the cap, NUL or not
    decoder = ReplyDecoder(max_bytes=1000)
    decoder.feed(b" " * 1000)
    with pytest.raises(ReplyTooLarge) as caught:
        decoder.feed(b" ")
    assert caught.value.limit_bytes == 1000
    assert MAX_REPLY_BYTES == 4 * 1024 * 1024


@pytest.mark.parametrize(
    "wire", [b"", b"\0", b" \r\n\t", b"\0{}"], ids=["nothing", "nul", "blanks", "after nul"]
)
def test_empty_reply(wire: bytes) -> None:
    raises_all_ways(wire, ProtocolError, "empty reply")


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "an HTTP server answered"),
        (b"[1,2,3]", "not an object"),
        (b'"STATUS"', "not a cgminer API reply"),
        (b'{"STATUS":[]} {"x":1}', "extra data"),
        (b'{"STATUS":[] "x"}', "malformed JSON"),
    ],
)
def test_not_a_reply(wire: bytes, match: str) -> None:
    raises_all_ways(wire, ProtocolError, match)


def test_long_escaped_quotes_decode_in_linear_time() -> None:
    # Scanning strings used to restart at every quote of an unterminated string: quadratic,
    # hours for a 4 MiB reply. 400 KB of \" must take milliseconds.
    wire = b'{"STATUS":[{"STATUS":"S","Msg":"' + b'\\"' * 200_000
    started = time.perf_counter()
    with pytest.raises(ProtocolError, match="truncated"):
        decode_reply(wire + b'}{"x":1')
    assert time.perf_counter() - started < 2.0


# -- captured field replies -------------------------------------------------------------


def fixture_raw_entries() -> list[Any]:
    if not FIXTURES.is_dir():
        return [
            pytest.param(None, None, None, marks=pytest.mark.skip(reason=f"{FIXTURES} is absent"))
        ]
    params = []
    for path in sorted(FIXTURES.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for command, raw in (data.get("raw") or {}).items():
            params.append(pytest.param(path.name, command, raw, id=f"{path.stem}:{command}"))
    return params


@pytest.mark.parametrize(("name", "command", "raw"), fixture_raw_entries())
def test_field_replies_decode_to_their_recorded_dict(name: str, command: str, raw: str) -> None:
    expected = json.loads((FIXTURES / name).read_text(encoding="utf-8"))["replies"][command]
    assert decode_all_ways(raw.encode("utf-8") + b"\0") == expected
    assert decode_all_ways(raw.encode("utf-8")) == expected  # no NUL: EOF ends it


# -- STATUS -----------------------------------------------------------------------------


@pytest.mark.parametrize("letter", ["S", "I", "W"])
def test_check_status_success_letters(letter: str) -> None:
    reply = {"STATUS": [status(letter, 11, "Summary")], "SUMMARY": [{}], "id": 1}
    assert check_status("summary", reply) is reply
    assert is_success(reply)


@pytest.mark.parametrize("letter", ["E", "F"])
def test_check_status_error_letters(letter: str) -> None:
    reply = {"STATUS": [status(letter, 26, "Invalid pool id 5 - range is 0 - 1")], "id": 1}
    with pytest.raises(CommandError) as caught:
        check_status("switchpool", reply)
    error = caught.value
    assert type(error) is CommandError
    assert (error.command, error.code, error.status) == ("switchpool", 26, letter)
    assert error.msg == "Invalid pool id 5 - range is 0 - 1"
    assert error.description == "cgminer 4.11.1"
    assert "Code 26" in str(error) and "Invalid pool id 5" in str(error)
    assert not is_success(reply)


def test_check_status_access_denied() -> None:
    with pytest.raises(AccessDenied) as caught:
        check_status("restart", DENIED)
    assert caught.value.code == 45
    assert "--api-allow" in str(caught.value) and "W:" in str(caught.value)


def test_check_status_invalid_command() -> None:
    with pytest.raises(InvalidCommand) as caught:
        check_status("summary+devs+pools", INVALID)
    assert caught.value.code == 14 and caught.value.description is None


def test_reply_status_odd_codes_and_missing_status() -> None:
    assert reply_status({"STATUS": [{"STATUS": "E", "Code": "14", "Msg": "x"}]})[1] == 14
    assert reply_status({"STATUS": [{"STATUS": "E", "Code": 1e999}]})[1] is None
    assert reply_status({"STATUS": [{"STATUS": "E", "Code": "n/a"}]})[1] is None
    no_status: list[dict[str, Any]] = [{}, {"STATUS": []}, {"STATUS": ["S"]}, {"STATUS": 5}]
    for reply in no_status:
        with pytest.raises(ProtocolError, match="no STATUS"):
            check_status("summary", reply)


def test_split_multi() -> None:
    parts = split_multi(["summary", "devs", "pools"], decode_reply(encode_reply(MULTI)))
    assert parts == {"summary": SUMMARY, "devs": NO_DEVICES, "pools": POOLS}
    # devs with E Code 10 "No ASCs" is an answer (zero devices), returned unchecked
    assert parts["devs"]["STATUS"][0]["Code"] == 10


def test_split_multi_refused_as_a_whole() -> None:
    with pytest.raises(InvalidCommand):
        split_multi(["summary", "devs", "pools"], INVALID)
    with pytest.raises(AccessDenied):
        split_multi(["summary", "restart"], DENIED)
    # some firmware answers only the first command: as good as no multi-command support
    with pytest.raises(InvalidCommand, match="single reply"):
        split_multi(["summary", "devs"], SUMMARY)


def test_split_multi_missing_part() -> None:
    with pytest.raises(ProtocolError, match="lacks 'pools'"):
        split_multi(["summary", "pools"], {"summary": [SUMMARY], "pools": [], "id": 1})


# -- properties -------------------------------------------------------------------------

no_nul_text = st.text(alphabet=st.characters(exclude_characters="\0"), max_size=12)
json_scalars = st.one_of(
    no_nul_text,
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
status_entries = st.builds(
    lambda letter, when, code, msg, description: {
        "STATUS": letter, "When": when, "Code": code, "Msg": msg, "Description": description
    },
    st.sampled_from("SIWEF"), st.integers(0, 2**32), st.integers(0, 400), no_nul_text, no_nul_text,
)  # fmt: skip
replies = st.builds(
    lambda entry, sections, ident: {"STATUS": [entry], **sections, "id": ident},
    status_entries,
    st.dictionaries(
        no_nul_text.filter(lambda key: key not in ("STATUS", "id")),
        st.lists(st.dictionaries(no_nul_text, json_scalars, max_size=6), max_size=3),
        max_size=3,
    ),
    st.integers(0, 10),
)

FAST = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REQUESTS = settings(max_examples=300, deadline=None)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed_chunks(chunks: list[bytes], max_bytes: int = MAX_REPLY_BYTES) -> dict[str, Any]:
    decoder = ReplyDecoder(max_bytes)
    for chunk in chunks:
        if decoder.feed(chunk):
            break
    else:
        decoder.feed_eof()
    return decoder.reply()


@FAST
@given(reply=replies, cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_property_json_reply_round_trip(reply: dict[str, Any], cuts: list[int]) -> None:
    wire = encode_reply(reply)
    assert decode_reply(wire) == reply
    assert feed_chunks(split_at(wire, cuts)) == reply


def _untyped(text: str) -> bool:
    """Text that the plain-text form reads back as a string (not a number or bool)."""
    return text not in ("true", "false") and any(c not in "0123456789.-+eE" for c in text)


text_keys = st.sampled_from(
    ["Elapsed", "MHS av", "MHS 5s", "Found Blocks", "Pool Stale%", "Last Share Time", "Accepted",
     "User", "Status", "Name", "Enabled", "Temperature", "fan1", "chain_rate6", "Stratum URL"]
) | st.text(alphabet="abcdefghijklmnopqrstuvwxyz %5", min_size=1, max_size=8).filter(
    lambda key: key[0].isalpha()
)  # fmt: skip
text_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=12).filter(
        _untyped
    ),
)
text_status = st.builds(
    lambda letter, when, code, msg: {"STATUS": letter, "When": when, "Code": code, "Msg": msg},
    st.sampled_from("SIWEF"),
    st.integers(0, 2**32),
    st.integers(0, 400),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=12).filter(
        _untyped
    ),
)


@st.composite
def text_replies(draw: st.DrawFn) -> dict[str, Any]:
    reply: dict[str, Any] = {"STATUS": [draw(text_status)]}
    for name in draw(st.lists(st.sampled_from(["SUMMARY", "VERSION", "CONFIG"]), unique=True)):
        reply[name] = draw(
            st.lists(st.dictionaries(text_keys, text_values, max_size=5), min_size=1, max_size=2)
        )
    for entry_key in draw(st.lists(st.sampled_from(["POOL", "ASC", "PGA"]), unique=True)):
        entries = draw(
            st.lists(st.dictionaries(text_keys, text_values, max_size=5), min_size=1, max_size=2)
        )
        reply[entry_key + "S"] = [
            {entry_key: number, **entry} for number, entry in enumerate(entries)
        ]
    return reply


@settings(max_examples=200, deadline=None)
@given(reply=text_replies(), cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_property_text_reply_round_trip(reply: dict[str, Any], cuts: list[int]) -> None:
    wire = encode_text_reply(reply)
    assert decode_reply(wire) == reply
    assert feed_chunks(split_at(wire, cuts)) == reply


command_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)


@REQUESTS
@given(
    commands=st.lists(command_names, min_size=1, max_size=4),
    parameter=st.none() | st.text(max_size=40),
)
def test_property_json_request_round_trip(commands: list[str], parameter: str | None) -> None:
    request = decode_request(encode_request(commands, parameter))
    assert request == Request(tuple(commands), parameter, text=False)


@REQUESTS
@given(
    command=command_names,
    parameter=st.none()
    | st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=40).filter(
        lambda p: p == p.strip()
    ),
)
def test_property_text_request_round_trip(command: str, parameter: str | None) -> None:
    request = decode_request(encode_request(command, parameter, text=True))
    assert request == Request((command,), parameter, text=True)


def decodes_or_protocol_error(call: Callable[[], object]) -> None:
    """``call`` returns a dict or raises ProtocolError; any other exception fails the test."""
    try:
        result = call()
    except ProtocolError:
        return
    assert isinstance(result, dict)


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(min_value=0), max_size=4))
def test_property_arbitrary_bytes_only_raise_protocol_error(data: bytes, cuts: list[int]) -> None:
    decodes_or_protocol_error(lambda: decode_reply(data))
    decodes_or_protocol_error(lambda: decode_reply(data, command="pools"))
    decodes_or_protocol_error(lambda: feed_chunks(split_at(data, cuts), max_bytes=200))
    with contextlib.suppress(ProtocolError):
        decode_request(data)


SEEDS = [
    encode_reply(SUMMARY),
    encode_reply(MULTI),
    S9_STATS,
    WHATSMINER_DEVS,
    b'{"BYE","id":1}',
    b',"id":1}',
    b'{"STATUS":[{"STATUS":"S","Msg":"Summary"}],"SUMMARY":[{"A":inf,"B":-nan,"C":"\\\'x\\\'"}],"id":1}',
    encode_text_reply(POOLS),
]
INSERTS = [b"}{", b",", b"\0", b"\x01", b"\x1f", b"\x7f", b"[", b"]", b"{", b"}", b'"', b"\\",
           b"\\'", b"inf", b"nan", b"\xff", b"\xc3", b"|", b"=", b"\n"]  # fmt: skip


@st.composite
def mutated_replies(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        at = draw(st.integers(0, len(data)))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(INSERTS))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


@settings(max_examples=1000, deadline=None)
@given(data=mutated_replies(), cuts=st.lists(st.integers(min_value=0), max_size=4))
def test_property_mutated_replies_only_raise_protocol_error(data: bytes, cuts: list[int]) -> None:
    decodes_or_protocol_error(lambda: decode_reply(data))
    decodes_or_protocol_error(lambda: feed_chunks(split_at(data, cuts)))
    decodes_or_protocol_error(lambda: decode_reply(data, command="summary"))
    with contextlib.suppress(ProtocolError, CommandError):
        check_status("summary", decode_reply(data))


ORACLE_JSON = json.JSONDecoder(strict=False, parse_constant=lambda _: None)


@settings(max_examples=600, deadline=None)
@given(data=mutated_replies())
def test_property_quirks_fixed_one_by_one_read_as_the_full_repair(data: bytes) -> None:
    # decode_reply fixes a few quirks where the decoder stops (fast), else repairs the
    # whole text (repair_json): whenever the full repair reads a reply, so must it.
    text = data.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()
    if not text.startswith(("{", ",")):
        return
    try:
        expected = ORACLE_JSON.decode(repair_json(text))
    except (ValueError, RecursionError):
        return
    if isinstance(expected, dict):
        assert decode_reply(data) == expected


@pytest.mark.parametrize("wire", SEEDS)
def test_seed_replies_decode_to_valid_json(wire: bytes) -> None:
    # poll --json prints replies' figures: NaN/Infinity would make its output invalid JSON
    json.dumps(decode_reply(wire), allow_nan=False)
