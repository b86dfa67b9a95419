"""Registries: the named extensions of one kind (rule types, receiver kinds, formats).

Each extension point keeps one :class:`Registry`. An extension registers itself from
its own module, usually with a decorator; the config's models, ``check``'s messages,
``test-notify``, the generated documentation and the factories all read the registry,
so adding a rule type, a receiver kind or a webhook format is one new file (and its
tests). The built-in ones live in a package each (``cgwatchdog/rules/types/``,
``cgwatchdog/notify/receivers/``, ``cgwatchdog/notify/formats/``) that imports every
module in it; code outside the package (a test, a site's own module) registers the same
way before loading a config.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Registry", "import_all"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, in the order they were added.

    ``version`` grows with every change, so what is derived from the entries (a
    pydantic union, a model) can be cached and rebuilt when it moves.
    """

    __slots__ = ("_entries", "version", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}
        self.version = 0

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; ValueError if the name is taken."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        self.version += 1
        return entry

    def remove(self, name: str) -> None:
        """Forget ``name`` (a test cleaning up after itself); KeyError if unknown."""
        del self._entries[name]
        self.version += 1

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries) or "none"
            raise KeyError(f"unknown {self.what} {name!r} (known: {known})") from None

    def get(self, name: str) -> T | None:
        """The entry called ``name``, or None."""
        return self._entries.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        """The registered names, in order."""
        return tuple(self._entries)

    def values(self) -> tuple[T, ...]:
        """The registered entries, in order."""
        return tuple(self._entries.values())


def import_all(package: str, path: list[str] | tuple[str, ...]) -> None:
    """Import every module of ``package`` (its ``__path__``), in name order, so that the
    built-in extensions in it register themselves. Names starting with ``_`` are skipped."""
    for module in sorted(pkgutil.iter_modules(path), key=lambda info: info.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")
