"""Avalon in the simulator: flavours ``avalon`` (an AvalonMiner 15-series on current
Canaan firmware) and ``avalon-1047`` (an A1047 on the older AUC/MM firmware).

Both are cgminer 4.11.1 with Canaan's VERSION keys (``PROD``, ``MODEL``, ``HWTYPE``,
``SWTYPE``, ``VERSION``, ...) and a ``stats`` whose miner entry (``ID`` ``AVA100``)
packs the machine into an ``MM ID0`` string of ``KEY[value]`` tokens, as the field
captures do (``Ver[...]``, ``SYSTEMSTATU[Work: In Work, Hash Board: 3 ]``,
``Elapsed[...]``, ``Temp``/``TMax``/``TAvg``, ``Fan1``/``Fan2``/``FanR``, ``GHSmm``,
``GHSavg``, ``MGHS[<one per board>]``, ``MTmax``/``MTavg``; ``SoftOFF[0|1]`` on the
15-series), followed by one entry per pool. Simplifications: ``summary`` and ``devs``
are cgminer's (a 5 s window where the firmware has ``MHS 30s``), and ``devs`` lists each
board as an ASC (``AVA10``) where the firmware lists one ASC for the whole machine, so
that device rules can be exercised.

The API takes privileged commands from anyone (no ``--api-allow`` restriction), and
adds ``ascset`` (cgminer messages 119 ``ASC 0 set OK`` / 120 ``ASC 0 set failed: ...``):

- ``avalon``: ``0,reboot,<delay>`` answers OK, then :meth:`SimulatedMiner.reboot` (the
  reply goes out before the API closes); ``0,softoff,1:<time>`` /
  ``0,softon,1:<time>`` answer ``ASC 0 set info: success softoff:...`` (the shape
  AvalonPS7 notes) and :meth:`SimulatedMiner.sleep` / ``wake`` at once (the time is
  not waited for).
- ``avalon-1047``: the open-source AUC/MM drivers' options: ``reboot`` takes a module id
  1..N (0 is ``invalid module_id``; a valid id answers OK and changes nothing here),
  and ``softoff``/``softon`` are ``Unknown option``.

``restart`` and ``switchpool`` are cgminer's own. For tests, :func:`ascset_log` lists
the ``ascset`` parameters a miner received, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from cgwatchdog.simulator.core import FLAVOURS, ExtraCommand, SimulatedMiner, add_flavour

__all__ = ["AVALON", "AVALON_1047", "ascset_log", "mm_string"]

DESCRIPTION: Final = "cgminer 4.11.1"
CODE_STATS: Final = 70
CODE_ASCSET_OK: Final = 119
CODE_ASCSET_FAILED: Final = 120
CODE_MISSING_ID: Final = 15
CODE_MISSING_OPTION: Final = 116
MODULES: Final = 4
"""Module ids the 1047-era driver accepts (1..MODULES-1)."""

Reply = dict[str, Any]

_ASCSET_LOG: dict[SimulatedMiner, list[str]] = {}


def ascset_log(miner: SimulatedMiner) -> list[str]:
    """The ``ascset`` parameters ``miner`` received (refused ones too), in order."""
    return _ASCSET_LOG.setdefault(miner, [])


def _status(letter: str, code: int, msg: str, now: float) -> dict[str, Any]:
    return {"STATUS": letter, "When": int(now), "Code": code, "Msg": msg,
            "Description": DESCRIPTION}  # fmt: skip


def _message(letter: str, code: int, msg: str, now: float) -> Reply:
    return {"STATUS": [_status(letter, code, msg, now)], "id": 1}


def mm_string(miner: SimulatedMiner, now: float, model: str, *, soft_off: bool) -> str:
    """The ``MM ID0`` string of ``miner`` at ``now``: boards, fans, temperatures."""
    statuses = miner.device_statuses(now)
    total_hs = miner.hashrate_hs(now)
    hashing = [status != "Dead" for status in statuses]
    share = total_hs / max(1, sum(hashing))
    boards_ghs = [share / 1e9 if ok else 0.0 for ok in hashing]
    board_tmax = [76 + i % 3 if ok else 30 for i, ok in enumerate(hashing)]
    board_tavg = [t - 8 for t in board_tmax]
    total_ghs = total_hs / 1e9
    fan = 4275 if total_hs > 0 else 1200
    tokens = [
        f"Ver[{model}]",
        "DNA[0201000011223344]",
        f"SYSTEMSTATU[Work: In Work, Hash Board: {len(statuses)} ]",
        f"Elapsed[{miner.elapsed_s(now)}]",
        "HW[0]",
        "DH[1.299%]",
        "Temp[31]",
        f"TMax[{max(board_tmax, default=0)}]",
        f"TAvg[{max(board_tavg, default=0)}]",
        f"Fan1[{fan}]",
        f"Fan2[{fan + 7}]",
        "FanR[49%]",
        f"GHSmm[{total_ghs * 1.09:.2f}]",
        f"GHSavg[{total_ghs:.2f}]",
        f"MGHS[{' '.join(f'{g:.2f}' for g in boards_ghs)}]",
        f"MTmax[{' '.join(str(t) for t in board_tmax)}]",
        f"MTavg[{' '.join(str(t) for t in board_tavg)}]",
    ]
    if soft_off:
        tokens.append(f"SoftOFF[{1 if miner.sleeping else 0}]")
    tokens.append("ECMM[0]")
    return " ".join(tokens)


def _stats(model: str, *, soft_off: bool) -> Callable[[SimulatedMiner, str | None, float], Reply]:
    def handler(miner: SimulatedMiner, _param: str | None, now: float) -> Reply:
        elapsed = miner.elapsed_s(now)
        head = {"Elapsed": elapsed, "Calls": 0, "Wait": 0.0, "Max": 0.0, "Min": 99999999.0}
        entries: list[dict[str, Any]] = [
            {"STATS": 0, "ID": "AVA100", **head,
             "MM ID0": mm_string(miner, now, model, soft_off=soft_off),
             "MM Count": 1, "Smart Speed": 1, "Voltage Level Offset": 0,
             "Nonce Mask": 25},
        ]  # fmt: skip
        for index, _pool in enumerate(miner.pool_list()):
            entries.append({"STATS": index + 1, "ID": f"POOL{index}", **head,
                            "Pool Calls": 0, "Pool Attempts": 0})  # fmt: skip
        return {"STATUS": [_status("S", CODE_STATS, "CGMiner stats", now)], "STATS": entries,
                "id": 1}  # fmt: skip

    return handler


def _split(param: str | None, now: float) -> tuple[str, str] | Reply:
    """``0,<option>[,<value>]`` as (option, value), or cgminer's refusal."""
    if not param:
        return _message("E", CODE_MISSING_ID, "Missing device id parameter", now)
    device, _, rest = param.partition(",")
    if not rest:
        return _message("E", CODE_MISSING_OPTION, "Missing option after ASC number", now)
    if device.strip() != "0":
        return _message("E", 107, f"Invalid ASC id {device.strip()} - range is 0 - 0", now)
    option, _, value = rest.partition(",")
    return option, value


def _failed(reason: str, now: float) -> Reply:
    return _message("E", CODE_ASCSET_FAILED, f"ASC 0 set failed: {reason}", now)


def _ascset_current(miner: SimulatedMiner, param: str | None, now: float) -> Reply:
    """Current firmware (15-series, Nano 3S, Q): reboot with a delay, softoff/softon."""
    ascset_log(miner).append(param or "")
    parsed = _split(param, now)
    if isinstance(parsed, dict):
        return parsed
    option, value = parsed
    if option == "reboot":
        if not value:
            return _failed("missing reboot value", now)
        miner.reboot(now)
        return _message("S", CODE_ASCSET_OK, "ASC 0 set OK", now)
    if option in ("softoff", "softon"):
        if not value:
            return _failed(f"missing {option} value", now)
        if option == "softoff":
            miner.sleep(now)
        else:
            miner.wake(now)
        return _message("S", CODE_ASCSET_OK, f"ASC 0 set info: success {option}:{value}", now)
    return _failed(f"Unknown option: {option}", now)


def _ascset_1047(miner: SimulatedMiner, param: str | None, now: float) -> Reply:
    """The open-source AUC/MM drivers: reboot takes a module id; no soft off."""
    ascset_log(miner).append(param or "")
    parsed = _split(param, now)
    if isinstance(parsed, dict):
        return parsed
    option, value = parsed
    if option == "reboot":
        if not value:
            return _failed("missing reboot value", now)
        module = int(value) if value.strip().lstrip("-").isdigit() else 0
        if not 1 <= module < MODULES:
            return _failed(f"invalid module_id: {module}, valid range 1-{MODULES}", now)
        return _message("S", CODE_ASCSET_OK, "ASC 0 set OK", now)
    return _failed(f"Unknown option: {option}", now)


_CGMINER = FLAVOURS["cgminer"]
_MODEL_15: Final = "15-194-24102401_25462b2_9ddf522"
_MODEL_1047: Final = "1047-20051101_85dc6f0_0332654"

AVALON = add_flavour(
    replace(
        _CGMINER,
        name="avalon",
        firmware="avalon",
        description=DESCRIPTION,
        version=(
            ("CGMiner", "4.11.1"),
            ("API", "3.7"),
            ("STM8", "20.08.01"),
            ("PROD", "AvalonMiner 15-194"),
            ("MODEL", "15-194"),
            ("HWTYPE", "MM4v2_X3"),
            ("SWTYPE", "MM319"),
            ("VERSION", "24102401_25462b2_9ddf522"),
            ("LOADER", "d0d779de.00"),
            ("DNA", "0201000011223344"),
            ("MAC", "020000000001"),
            ("UPAPI", "2"),
        ),
        device_driver="AVA10",
        device_dname="avalon",
        device_model="AvalonMiner 15-194",
        device_hs=62e12,
        device_temp_c=70.0,
        pool_difficulty=262144.0,
        restart_downtime_s=10.0,
        reboot_downtime_s=120.0,
        commands=(
            ExtraCommand("stats", _stats(_MODEL_15, soft_off=True), joinable=True),
            ExtraCommand("ascset", _ascset_current, privileged=True),
        ),
    )
)
"""An AvalonMiner 15-194 on 2024 firmware: reboot with a delay, softoff/softon."""

AVALON_1047 = add_flavour(
    replace(
        AVALON,
        name="avalon-1047",
        version=(
            ("CGMiner", "4.11.1"),
            ("API", "3.7"),
            ("PROD", "AvalonMiner 1047"),
            ("MODEL", "1047"),
            ("HWTYPE", "MM3v2_X3"),
            ("SWTYPE", "MM314"),
            ("VERSION", "20051101_85dc6f0_0332654"),
            ("DNA", "0201000055667788"),
            ("MAC", "020000000002"),
        ),
        device_model="AvalonMiner 1047",
        device_hs=18.5e12,
        commands=(
            ExtraCommand("stats", _stats(_MODEL_1047, soft_off=False), joinable=True),
            ExtraCommand("ascset", _ascset_1047, privileged=True),
        ),
    )
)
"""An A1047 on 2020 AUC/MM firmware: its VERSION keys are modelled on the 15-series
(the field capture has no VERSION); reboot takes a module id; no soft off."""
