"""Byte-level mutations of seed inputs, driven by one ``random.Random`` per input.

Every input is a function of (seed corpus, ``rng``) only, so input number ``i`` of a
run can be made again from ``--seed`` and ``i`` alone, whatever the number of jobs.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

STRUCTURAL: Final = b'{}[],:"|=\n'
_NUMBER_RE: Final = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")

INTERESTING_NUMBERS: Final = (
    b"0", b"-0", b"-1", b"1", b"255", b"256", b"65535", b"2147483647", b"-2147483648",
    b"4294967296", b"9223372036854775807", b"9223372036854775808", b"18446744073709551616",
    b"-9223372036854775809", b"1e308", b"1e309", b"1e999", b"-1e999", b"1.5e-400",
    b"0.000000001", b"1E+2", b"1" * 400, b"9" * 4301, b"-" + b"9" * 5000,
    b"1" + b"0" * 30, b"0.1" + b"1" * 300, b"00", b"01", b"1.", b".5", b"1e", b"--1",
    b"NaN", b"-NaN", b"nan", b"inf", b"-inf", b"Infinity", b"-Infinity", b"+1", b"0x10",
)  # fmt: skip


@dataclass
class Mutator:
    """Makes inputs from ``seeds``: a seed as is, or with a few stacked mutations.

    ``tokens`` are byte strings worth inserting (the quirks and keywords of the format);
    ``weights`` (one per seed) bias the choice of seed, e.g. against a very large one.
    """

    seeds: Sequence[bytes]
    tokens: Sequence[bytes]
    max_len: int = 1 << 20
    weights: Sequence[float] | None = None
    plain_share: float = 0.05
    max_stack: int = 8
    nest_depths: Sequence[int] = (2, 64, 1000, 20000)
    _cum: list[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("a mutator needs at least one seed")
        weights = self.weights or [1.0] * len(self.seeds)
        total = 0.0
        self._cum = []
        for weight in weights:
            total += weight
            self._cum.append(total)

    def pick(self, rng: random.Random) -> bytes:
        """One seed, by weight."""
        return rng.choices(self.seeds, cum_weights=self._cum)[0]

    def generate(self, rng: random.Random) -> bytes:
        """A seed, then 1..max_stack mutations (fewer more often), cut to ``max_len``."""
        data = bytearray(self.pick(rng))
        if rng.random() < self.plain_share:
            return bytes(data)
        count = 1
        while count < self.max_stack and rng.random() < 0.5:
            count += 1
        for _ in range(count):
            rng.choice(_OPERATIONS)(self, rng, data)
            if len(data) > self.max_len:
                del data[self.max_len :]
        return bytes(data)

    # -- positions ---------------------------------------------------------------------

    @staticmethod
    def position(rng: random.Random, data: bytearray) -> int:
        """A position in ``data`` (0..len), half the time next to a structural byte."""
        if data and rng.random() < 0.5:
            start = rng.randrange(len(data))
            wanted = STRUCTURAL[rng.randrange(len(STRUCTURAL))]
            found = data.find(wanted, start)
            if found < 0:
                found = data.find(wanted)
            if found >= 0:
                return found + rng.randrange(2)
        return rng.randrange(len(data) + 1)

    # -- operations --------------------------------------------------------------------

    def flip_bit(self, rng: random.Random, data: bytearray) -> None:
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)

    def set_byte(self, rng: random.Random, data: bytearray) -> None:
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)

    def insert_random(self, rng: random.Random, data: bytearray) -> None:
        at = self.position(rng, data)
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))

    def delete_range(self, rng: random.Random, data: bytearray) -> None:
        if data:
            at = self.position(rng, data)
            del data[at : at + rng.choice((1, 1, 2, 4, 8, 32, 256))]

    def insert_token(self, rng: random.Random, data: bytearray) -> None:
        at = self.position(rng, data)
        data[at:at] = rng.choice(self.tokens)

    def replace_with_token(self, rng: random.Random, data: bytearray) -> None:
        at = self.position(rng, data)
        data[at : at + rng.randint(1, 8)] = rng.choice(self.tokens)

    def truncate(self, rng: random.Random, data: bytearray) -> None:
        del data[rng.randrange(len(data) + 1) :]

    def splice(self, rng: random.Random, data: bytearray) -> None:
        other = self.pick(rng)
        at = rng.randrange(len(data) + 1)
        data[at:] = other[rng.randrange(len(other) + 1) :]

    def duplicate_chunk(self, rng: random.Random, data: bytearray) -> None:
        if data:
            start = self.position(rng, data)
            chunk = bytes(data[start : start + rng.choice((1, 2, 8, 64, 512))])
            data[start:start] = chunk * rng.choice((1, 2, 16, 256))

    def replace_number(self, rng: random.Random, data: bytearray) -> None:
        found = _NUMBER_RE.search(data, rng.randrange(len(data) + 1)) or _NUMBER_RE.search(data)
        if found is not None:
            data[found.start() : found.end()] = rng.choice(INTERESTING_NUMBERS)

    def nest(self, rng: random.Random, data: bytearray) -> None:
        depth = rng.choice(self.nest_depths)
        opener, closer = rng.choice(((b"[", b"]"), (b'{"a":', b"}"), (b"[{", b"}]")))
        at = self.position(rng, data)
        balanced = rng.random() < 0.5
        data[at:at] = opener * depth + (closer * depth if balanced else b"")


_OPERATIONS: Final[tuple[Callable[[Mutator, random.Random, bytearray], None], ...]] = (
    Mutator.flip_bit,
    Mutator.set_byte,
    Mutator.insert_random,
    Mutator.delete_range,
    Mutator.insert_token,
    Mutator.insert_token,
    Mutator.replace_with_token,
    Mutator.truncate,
    Mutator.splice,
    Mutator.duplicate_chunk,
    Mutator.replace_number,
    Mutator.nest,
)


def split_points(rng: random.Random, size: int) -> list[int]:
    """Random chunk boundaries for ``size`` bytes: few, many, or every byte (small inputs)."""
    if size <= 1:
        return []
    mode = rng.random()
    if mode < 0.1 and size <= 4096:
        return list(range(1, size))  # one byte at a time, as the slowest miner sends
    count = rng.choice((1, 2, 3, 8, 64))
    return sorted({rng.randrange(1, size) for _ in range(count)})


def chunks(data: bytes, points: Sequence[int]) -> list[bytes]:
    """``data`` cut at ``points``."""
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]
