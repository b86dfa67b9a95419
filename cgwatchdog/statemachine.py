"""State machines as data: a table of moves, and the one way to take a move.

The alert lifecycle (alerts.py), the remediation ladder (actions.py) and replica
leadership (cluster.py) each keep their states and events as enums and their moves in a
:class:`Transitions` table, the way h11 keeps its connection states: what may happen is
read off the table, not pieced together from flags, and a move the table lacks is an
error instead of a silent drift.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["Transitions"]

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


class Transitions(Mapping[S, Mapping[E, S]], Generic[S, E]):
    """``table[state][event] -> next state`` for one machine, named in its errors."""

    __slots__ = ("_moves", "machine")

    def __init__(self, machine: str, moves: Mapping[S, Mapping[E, S]]) -> None:
        self.machine = machine
        self._moves = moves

    def __getitem__(self, state: S) -> Mapping[E, S]:
        return self._moves[state]

    def __iter__(self) -> Iterator[S]:
        return iter(self._moves)

    def __len__(self) -> int:
        return len(self._moves)

    def allows(self, state: S, event: E) -> bool:
        """Whether ``event`` is a move from ``state``."""
        return event in self._moves.get(state, {})

    def next(self, state: S, event: E) -> S:
        """The state ``event`` moves ``state`` to; ValueError if the table has no such move."""
        try:
            return self._moves[state][event]
        except KeyError:
            raise ValueError(
                f"no {self.machine} transition from {state.value} on {event.value}"
            ) from None
