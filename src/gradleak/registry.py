"""One registry style for attacks, defenses, models, datasets, metrics and executors.

A registry maps a name to a factory (a class or function) or a value, with a one-line
summary. There is one way to build anything by name, `Registry.create(name, options)`,
and one wording for its errors: an unknown name lists the known ones, an unknown option
lists the accepted ones (with their defaults).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

from gradleak.errors import GradleakError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: T
    summary: str


def option_parameters(factory: Any) -> list[inspect.Parameter]:
    """The keyword parameters a class's constructor or a function takes, a class's parents'
    included when it forwards **options; first occurrence wins."""
    out: dict[str, inspect.Parameter] = {}
    targets = factory.__mro__ if isinstance(factory, type) else (factory,)
    for target in targets:
        if target is object:
            break
        params = inspect.signature(target.__init__ if isinstance(factory, type) else target).parameters.values()
        for p in params:
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                out.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return list(out.values())


def option_defaults(factory: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Option name -> default (`inspect.Parameter.empty` for required ones)."""
    return {p.name: p.default for p in option_parameters(factory) if p.name not in skip}


def _listed(defaults: Mapping[str, Any]) -> str:
    if not defaults:
        return "nothing"
    return ", ".join(k if v is inspect.Parameter.empty else f"{k}={v!r}" for k, v in defaults.items())


def check_options(kind: str, name: str, factory: Any, options: Mapping[str, Any],
                  fixed: tuple[str, ...] = ()) -> None:
    """Raise, listing the accepted options, if `options` names one `factory` does not take."""
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise GradleakError(f"options of {kind} {name!r} must be a mapping of option names to values, "
                            f"got {options!r}")
    defaults = option_defaults(factory, skip=fixed)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise GradleakError(f"{kind} {name!r} does not take {unknown}; it takes: {_listed(defaults)}")


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
        key = name.lower() if isinstance(name, str) else None
        if key not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._entries[key]

    def options(self, name: str, *, fixed: tuple[str, ...] = ()) -> dict[str, Any]:
        """Option name -> default of the factory `name` (the `fixed` arguments left out)."""
        return option_defaults(self.get(name), skip=fixed)

    def create(self, name: str, options: Mapping[str, Any] | None = None, /, **fixed: Any) -> Any:
        """Build the registered `name` with the user's `options` and the caller's `fixed`
        arguments (those the user does not choose: num_classes, input_shape, ...)."""
        entry = self.entry(name)
        options = {} if options is None else options
        check_options(self.kind, entry.name, entry.factory, options, tuple(fixed))
        clash = sorted(set(options) & set(fixed))
        if clash:
            raise GradleakError(f"{self.kind} {entry.name!r}: {clash} are set by gradleak, not by options")
        return entry.factory(**fixed, **options)

    def from_spec(self, spec: str, example: str) -> Any:
        """Build a member from its command-line spec `name` or `name:key=value,key=value`
        (values read as YAML scalars); `example` is a valid spec shown when `spec` is empty."""
        if not isinstance(spec, str) or not spec.strip():
            raise GradleakError(f"a {self.kind} spec must be a non-empty string like {example!r}, got {spec!r}")
        name, _, rest = spec.strip().partition(":")
        self.entry(name.strip())
        options: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise GradleakError(f"{self.kind} spec {spec!r}: expected key=value, got {item!r}")
            key = key.strip().replace("-", "_")
            if key in options:
                raise GradleakError(f"{self.kind} spec {spec!r}: option {key!r} is given twice")
            options[key] = _scalar(value)
        return self.create(name.strip(), options)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)


def _scalar(text: str) -> Any:
    """A spec value as YAML reads it; YAML 1.1 reads "1e-05" (how specs print small floats)
    as a string, and specs must round trip, so such strings become floats."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value
