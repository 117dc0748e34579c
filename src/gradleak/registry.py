"""One registry style for attacks, defenses, models, datasets and metrics.

A registry maps a name to a factory (a class or function) and a one-line summary.
Lookups of unknown names raise `UnknownNameError` listing the known names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

from gradleak.errors import UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: T
    summary: str


class Registry(Generic[T]):
    """Name -> factory table for one kind of thing ("attack", "model", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, summary: str) -> Callable[[T], T]:
        """Decorator: register `factory` under `name` with a one-line `summary`."""

        def decorate(factory: T) -> T:
            self.add(name, factory, summary)
            return factory

        return decorate

    def add(self, name: str, factory: T, summary: str) -> None:
        key = name.lower()
        if key in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[key] = Entry(key, factory, summary.strip().splitlines()[0] if summary else "")

    def get(self, name: str) -> T:
        """The factory registered as `name` (case-insensitive)."""
        return self.entry(name).factory

    def entry(self, name: str) -> Entry[T]:
        key = str(name).lower()
        if key not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._entries[key]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)
