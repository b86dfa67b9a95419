"""Remediation with safeguards: a pure planner decides, a small executor does.

``planner.py`` holds the ladders, the safeguards and verification (no I/O, the clock an
argument); ``executor.py`` carries out what the planner decided, through each miner's
firmware family channel (``cgwatchdog/firmware/``) or the operator's ``exec`` program.
"""

from cgwatchdog.actions.executor import KILL_GRACE_S, SAFE_PATH, ActionExecutor, ChannelFor
from cgwatchdog.actions.planner import *  # noqa: F403 - the planner's public names
from cgwatchdog.actions.planner import __all__ as _planner_names

__all__ = ["KILL_GRACE_S", "SAFE_PATH", "ActionExecutor", "ChannelFor", *_planner_names]
