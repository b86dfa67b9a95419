"""Fake miners that speak the real cgminer API over real TCP, for the demo, tests and
benchmarks, and each firmware family's control channel as the facts describe it.

``core.py`` holds the miner, its scenarios, the fleet and its servers; ``families/``
adds each firmware family's flavour (its API identity, its own commands or encrypted
envelope, its control channel server), which importing this package registers.
"""

from cgwatchdog.simulator import families as _families  # noqa: F401 - adds the flavours
from cgwatchdog.simulator.core import (
    DEFAULT_FLAVOURS,
    DEFAULT_PORT,
    FLAVOURS,
    SCENARIOS,
    ControlServer,
    ExtraCommand,
    FakeClock,
    Flavour,
    Fleet,
    FleetMember,
    ScaledClock,
    Scenario,
    SimulatedMiner,
    add_flavour,
    ensure_file_limit,
    flavours_named,
    make_scenario,
    run_simulator,
    serve,
)

__all__ = [
    "DEFAULT_FLAVOURS",
    "DEFAULT_PORT",
    "FLAVOURS",
    "SCENARIOS",
    "ControlServer",
    "ExtraCommand",
    "FakeClock",
    "Flavour",
    "Fleet",
    "FleetMember",
    "ScaledClock",
    "Scenario",
    "SimulatedMiner",
    "add_flavour",
    "ensure_file_limit",
    "flavours_named",
    "make_scenario",
    "run_simulator",
    "serve",
]
