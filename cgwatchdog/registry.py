"""Registries: the named extensions of one kind (rule types, receiver kinds, formats).

Each extension point keeps one :class:`Registry`. An extension registers itself from
its own module, usually with a decorator; the config's models, ``check``'s messages,
``test-notify``, the generated documentation and the factories all read the registry,
so adding a rule type, a receiver kind or a webhook format is one new file (and its
tests). The built-in ones live in a package each (``cgwatchdog/rules/types/``,
``cgwatchdog/notify/receivers/``, ``cgwatchdog/notify/formats/``) that imports every
module in it; code outside the package (a test, a site's own module) registers the same
way before loading a config. A registry may name its built-ins' package instead of
being filled by whoever imports it: the package is then imported the first time the
registry is used (a one-shot ``poll`` never imports the notification receivers).
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
    pydantic union, a model) can be cached and rebuilt when it moves. ``builtins``, when
    given, is the package whose modules register the built-in entries: it is imported
    on the first use of the registry (any read, or an ``add`` from elsewhere, so the
    built-ins keep their place first).
    """

    __slots__ = ("_builtins", "_entries", "_version", "what")

    def __init__(self, what: str, builtins: str | None = None) -> None:
        self.what = what
        self._entries: dict[str, T] = {}
        self._version = 0
        self._builtins = builtins

    def _load(self) -> None:
        package = self._builtins
        if package is not None:
            # Importing it calls add() from its modules, which comes back here: the
            # package, being imported, is returned as it is, so nothing runs twice.
            importlib.import_module(package)
            self._builtins = None

    @property
    def version(self) -> int:
        """How many changes the entries have seen."""
        self._load()
        return self._version

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; ValueError if the name is taken."""
        self._load()
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        self._version += 1
        return entry

    def remove(self, name: str) -> None:
        """Forget ``name`` (a test cleaning up after itself); KeyError if unknown."""
        self._load()
        del self._entries[name]
        self._version += 1

    def __getitem__(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries) or "none"
            raise KeyError(f"unknown {self.what} {name!r} (known: {known})") from None

    def get(self, name: str) -> T | None:
        """The entry called ``name``, or None."""
        self._load()
        return self._entries.get(name)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._entries)

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        """The registered names, in order."""
        self._load()
        return tuple(self._entries)

    def values(self) -> tuple[T, ...]:
        """The registered entries, in order."""
        self._load()
        return tuple(self._entries.values())


def import_all(package: str, path: list[str] | tuple[str, ...]) -> None:
    """Import every module of ``package`` (its ``__path__``), in name order, so that the
    built-in extensions in it register themselves. Names starting with ``_`` are skipped."""
    for module in sorted(pkgutil.iter_modules(path), key=lambda info: info.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")
