"""The least a watchdog must do with a reply to judge it by the packaged rules: a bound.

:func:`read_rule_figures` decodes one reply of the benchmark fleet (``fleet.py``'s cgminer
4.11, bmminer 1.0 and bfgminer 5.5 flavours) with ``orjson.loads`` and reads, straight from
the decoded dicts, the figures the packaged rules (``rules/default.yaml``) judge: the
hashrate, Elapsed, hardware errors and work, each device's status and temperature (the
boards' rates and temperatures from bmminer's STATS), and each pool's status, priority,
shares and last share, which pool is active and how stale it is. It builds no object,
keeps no history, runs no rule, handles no other firmware and checks nothing: replies it
does not expect raise. It exists only so that ``layers.py`` can measure, on the same
event loop and over the same fleet, what this least work costs above the bare floor:
whatever cgwatchdog does per reply costs at least that much, however its Snapshot is
built. It is never used by cgwatchdog.
"""

from __future__ import annotations

from typing import Any

import orjson

_CHAINS = tuple((f"chain_rate{i}", f"temp2_{i}") for i in range(1, 17))


def _hms_age(text: str) -> float | None:
    """bmminer's ``Last Share Time``: "0:00:01" ago, or "0" for never."""
    parts = text.split(":")
    if len(parts) != 3:
        return None
    return int(parts[0]) * 3600 + int(parts[1]) * 60 + int(parts[2])


def decode(reply: bytes) -> Any:
    """The least decoding of one reply of the benchmark fleet: up to the NUL, bmminer's
    ``}{`` mended, ``orjson.loads``."""
    end = reply.find(b"\0")
    body = reply if end < 0 else reply[:end]
    if b"}{" in body:  # bmminer's STATS: two objects back to back
        body = body.replace(b"}{", b"},{")
    return orjson.loads(body)


def read_rule_figures(reply: bytes) -> tuple[Any, ...]:
    """The figures the packaged rules judge, from one raw reply of the benchmark fleet:
    (hashrate H/s, Elapsed, hardware errors, work, devices not Alive, the hottest
    temperature, the active pool's id, its last share's age, its stale ratio, pools
    Alive)."""
    doc = decode(reply)
    summary = doc["summary"][0]["SUMMARY"][0]
    rate = summary.get("MHS 5s")
    if rate is None:
        rate = summary.get("MHS 20s")
    if rate is not None:
        hashrate = float(rate) * 1e6
    else:
        hashrate = float(summary["GHS 5s"]) * 1e9
    elapsed = summary["Elapsed"]
    hardware_errors = summary["Hardware Errors"]
    work = summary.get("Diff1 Work")
    if work is None:
        work = summary.get("Difficulty Accepted")
    not_alive = 0
    hottest: float | None = None
    for device in doc["devs"][0].get("DEVS", ()):
        if device["Enabled"] == "Y" and device["Status"] != "Alive":
            not_alive += 1
        temperature = device.get("Temperature")
        if temperature is not None and (hottest is None or temperature > hottest):
            hottest = temperature
    stats = doc.get("stats")
    if stats is not None:
        for entry in stats[0]["STATS"][1:]:
            for rate_key, temperature_key in _CHAINS:
                board_rate = entry.get(rate_key)
                if board_rate is None or board_rate == "":
                    continue
                if float(board_rate) <= 0:
                    not_alive += 1
                temperature = entry.get(temperature_key)
                if temperature and (hottest is None or temperature > hottest):
                    hottest = temperature
    by_priority: dict[str, Any] | None = None
    stratum_active: dict[str, Any] | None = None
    alive = 0
    pools = doc["pools"][0]
    for pool in pools["POOLS"]:
        if pool.get("Stratum Active"):
            stratum_active = pool
        if pool["Status"] == "Alive":
            alive += 1
            if by_priority is None or pool["Priority"] < by_priority["Priority"]:
                by_priority = pool
    active = stratum_active if stratum_active is not None else by_priority
    active_id = age = stale_ratio = None
    if active is not None:
        active_id = active["POOL"]
        last = active["Last Share Time"]
        if isinstance(last, str):
            age = _hms_age(last)
        else:  # an epoch on the miner's clock, whose "now" is the reply's When
            age = pools["STATUS"][0]["When"] - last if last else None
        percent = active.get("Pool Stale%")  # the miner's own figure, where it gives one
        if percent is not None:
            stale_ratio = percent / 100
        else:
            stale = active["Stale"]
            shares = active["Accepted"] + active["Rejected"] + stale
            stale_ratio = stale / shares if shares else None
    return (
        hashrate, elapsed, hardware_errors, work, not_alive, hottest, active_id, age,
        stale_ratio, alive,
    )  # fmt: skip
