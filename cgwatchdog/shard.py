"""Which shard owns which miner: rendezvous (highest random weight) hashing of names.

Every instance reads the same configuration and keeps the miners whose name hashes to
its own shard. For a name and each shard ``i`` of ``count`` the weight is
a 64-bit BLAKE2b hash of ``b"<i>\\x00<name in UTF-8>"`` (big-endian); the shard with the
highest weight owns the name. That gives:

- no coordination: each instance decides alone, from the name only;
- stability: the hash is BLAKE2b, not Python's salted ``hash()``, so every process,
  machine and Python version agrees (tests pin a few names to their shards);
- small moves: going from N to N+1 shards moves only the ~1/(N+1) of the miners whose
  new shard N+1 outweighs their old one, and every moved miner moves to shard N+1;
  removing the last shard moves only its own miners.

The decimal index comes first and contains no NUL, so the NUL after it separates the two
parts unambiguously whatever the name holds. Equal weights (a 2**-64 chance) go to the
lower index.

Changing the hash reshuffles every deployment's fleet: the tests pin it on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import blake2b

from cgwatchdog.config import MinerConfig, Shard

__all__ = ["owns", "select", "shard_of", "weight"]


def weight(index: int, name: str) -> int:
    """The rendezvous weight of shard ``index`` for miner ``name``: a stable 64-bit int."""
    key = b"%d\x00" % index + name.encode("utf-8", "surrogatepass")
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big")


def shard_of(name: str, count: int) -> int:
    """The 1-based shard that owns ``name`` among ``count`` shards."""
    if count < 1:
        raise ValueError(f"a fleet is split into at least 1 shard, not {count}")
    if count == 1:
        return 1
    encoded = name.encode("utf-8", "surrogatepass")
    best_index, best_weight = 1, -1
    for index in range(1, count + 1):
        digest = blake2b(b"%d\x00" % index + encoded, digest_size=8).digest()
        found = int.from_bytes(digest, "big")
        if found > best_weight:  # strict: a tie stays with the lower index
            best_index, best_weight = index, found
    return best_index


def owns(name: str, shard: Shard) -> bool:
    """Whether ``shard`` owns the miner called ``name``."""
    return shard_of(name, shard.count) == shard.index


def select(miners: Sequence[MinerConfig], shard: Shard) -> tuple[MinerConfig, ...]:
    """The miners ``shard`` owns, in configuration order."""
    if shard.count == 1:
        return tuple(miners)
    return tuple(miner for miner in miners if shard_of(miner.name, shard.count) == shard.index)
