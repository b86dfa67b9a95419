"""Reading back the JSON documents the engines save in the state file.

Each engine (alerts, dispatcher, rules history, action planner) saves itself as a JSON
document with ``to_dict`` and restores with ``from_dict``. These helpers turn a saved
value back into the type it was written as, raising ValueError or TypeError for a
damaged document, which the watchdog answers by starting that engine afresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["check_version", "opt_float", "opt_str", "str_dict"]


def opt_float(value: Any) -> float | None:
    """A saved number, or None where None was saved."""
    return None if value is None else float(value)


def opt_str(value: Any) -> str | None:
    """A saved text, or None where None was saved."""
    return None if value is None else str(value)


def str_dict(value: Any) -> dict[str, str]:
    """A saved mapping of text to text (labels, annotations)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


def check_version(data: Any, version: int, what: str = "state document") -> None:
    """ValueError unless ``data`` is a mapping saved with this ``version``."""
    if not isinstance(data, Mapping) or data.get("version") != version:
        raise ValueError(f"unsupported {what} (expected version {version})")
