"""Argument checks, one wording everywhere: `<name> must be <expectation>, got <value>`.

Every check raises `GradleakError` (never `assert`, which vanishes under -O) and returns
the value in its canonical type, so callers write `self.lr = check_positive_float("lr", lr)`.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Iterable, Sequence

from gradleak.errors import GradleakError

# torch.manual_seed and torch.Generator take seeds up to 2^63 - 1 (a signed 64-bit integer)
SEED_MAX = 2**63 - 1


def _shown(value: object, limit: int = 120) -> str:
    # a value may be huge (a YAML alias bomb expands to megabytes): never repr it whole
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({type(value).__name__} of {len(text)} characters)"


def fail(name: str, expectation: str, value: object) -> GradleakError:
    """The error of a failed check, for checks written in place."""
    return GradleakError(f"{name} must be {expectation}, got {_shown(value)}")


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _expectation(kind: str, low: float | None, high: float | None, low_open: bool = False,
                 high_open: bool = False) -> str:
    """'an integer >= 1', 'a number in (0, 1]', 'a finite number > 0', ..."""
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high:g}"
    return kind


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool) in [low, high] (either bound may be open-ended)."""
    if not is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        raise fail(name, _expectation("an integer", low, high), value)
    return int(value)


def check_positive_int(name: str, value: object) -> int:
    return check_int(name, value, low=1)


def check_non_negative_int(name: str, value: object) -> int:
    return check_int(name, value, low=0)


def check_seed(value: object, name: str = "seed") -> int:
    """A seed: an integer in [0, 2^63 - 1] (what torch's generators accept)."""
    if not is_int(value) or value < 0:
        raise fail(name, "an integer >= 0", value)
    if value > SEED_MAX:
        raise fail(name, "an integer < 2^63 (the largest seed torch's generators take)", value)
    return int(value)


def check_optional_seed(value: object, name: str = "seed") -> int | None:
    if value is not None and (not is_int(value) or value < 0):
        raise fail(name, "None or an integer >= 0", value)
    return None if value is None else check_seed(value, name)


def check_number(name: str, value: object, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (not a bool) within the given bounds."""
    ok = is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        kind = "a number" if low is not None and high is not None else "a finite number"
        raise fail(name, _expectation(kind, low, high, low_open, high_open), value)
    return float(value)


def check_positive_float(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A finite number > 0 (>= 0 with `allow_zero`)."""
    return check_number(name, value, low=0, low_open=not allow_zero)


def check_fraction(name: str, value: object, *, low_open: bool = True, high_open: bool = False) -> float:
    """A number in (0, 1] by default; the bounds' openness is adjustable."""
    return check_number(name, value, low=0, high=1, low_open=low_open, high_open=high_open)


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise fail(name, "true or false", value)
    return value


def check_choice(name: str, value: object, choices: Iterable[Any]) -> Any:
    """One of `choices` (the error lists them)."""
    options = tuple(choices)
    try:
        ok = value in options
    except TypeError:  # an unhashable value in a set of choices
        ok = False
    if not ok:
        raise fail(name, f"one of {', '.join(map(repr, options))}", value)
    return value


def check_str(name: str, value: object, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise fail(name, "a string" if empty else "a non-empty string", value)
    return value


def check_optional_str(name: str, value: object) -> str | None:
    return None if value is None else check_str(name, value)


def check_names(name: str, value: object) -> tuple[str, ...]:
    """A sequence of parameter names (a lone string is refused: it would iterate by letter)."""
    if isinstance(value, str) or not hasattr(value, "__iter__") or not all(isinstance(n, str) for n in value):
        raise fail(name, "a sequence of parameter names", value)
    return tuple(value)


def check_indices(name: str, value: object) -> tuple[int, ...]:
    """A sequence of non-negative integers."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise fail(name, "a list of non-negative integers", value)
    try:
        out = tuple(operator.index(v) for v in value)
    except TypeError:
        raise fail(name, "a list of non-negative integers", value) from None
    if any(isinstance(v, bool) for v in value) or any(v < 0 for v in out):
        raise fail(name, "a list of non-negative integers", value)
    return out


def check_mapping(name: str, value: object) -> dict[str, Any]:
    """A mapping with string keys (YAML's `key: value` block)."""
    from collections.abc import Mapping

    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise fail(name, "a mapping of option names to values", value)
    return dict(value)


__all__ = [
    "SEED_MAX", "check_bool", "check_choice", "check_fraction", "check_indices", "check_int", "check_mapping",
    "check_names", "check_non_negative_int", "check_number", "check_optional_seed", "check_optional_str",
    "check_positive_float", "check_positive_int", "check_seed", "check_str", "fail", "is_int", "is_number",
]
