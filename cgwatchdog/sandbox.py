"""The Jinja2 sandboxes every operator-written template runs in.

Jinja's own sandbox keeps templates away from Python internals and bounds ``range``,
but its compiler folds constant expressions while compiling: ``{{ "a" * 10**10 }}`` or
``{{ 7 ** 999999999 }}`` would exhaust memory or hang the daemon at start or reload,
before any render. Intercepting ``*`` and ``**`` makes Jinja leave them to
:meth:`call_binop` at render time, where their size is judged first; a template that
tries gets a SecurityError, which the callers report as a template failure.
"""

from __future__ import annotations

from typing import Any, Final

from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

__all__ = ["MAX_EXPONENT", "MAX_REPEAT", "BoundedSandbox", "ImmutableBoundedSandbox"]

MAX_EXPONENT: Final = 64
"""The largest integer exponent ``**`` takes (2 ** 64 is plenty for any label)."""
MAX_REPEAT: Final = 1 << 20
"""The longest string or list ``*`` may build."""


def _checked_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "**" and type(right) is int and abs(right) > MAX_EXPONENT:
        raise SecurityError(f"exponent {right} is larger than {MAX_EXPONENT}")
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            repeats = isinstance(sequence, str | list | tuple) and type(times) is int
            if repeats and len(sequence) * times > MAX_REPEAT:
                raise SecurityError(f"repetition longer than {MAX_REPEAT} items")


class BoundedSandbox(SandboxedEnvironment):
    """SandboxedEnvironment with ``*`` and ``**`` bounded at render time."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _checked_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)


class ImmutableBoundedSandbox(BoundedSandbox, ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment (templates cannot change what they are shown) with
    ``*`` and ``**`` bounded at render time."""
