"""Building blocks and option checks shared by the model definitions.

Factories can be called directly through `MODELS.get(name)` as well as through
`build_model`, so each one validates its own options with these helpers; every error
names the model, the option, what was expected and what was given.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

from torch import nn

from gradleak.errors import GradleakError

# LeakyReLU uses R-GAP's slope 0.2 everywhere so one name means one function across the
# package; torch's default 0.01 makes the activation nearly non-invertible for analytic attacks.
LEAKY_SLOPE = 0.2

ACTIVATIONS: dict[str, Callable[[], nn.Module] | None] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(LEAKY_SLOPE),
    "gelu": nn.GELU,
    "identity": None,
    "none": None,
}

NORMS = ("batch", "group", "none")


def activation(model: str, name: object) -> nn.Module | None:
    """A fresh activation module, or None for "identity"/"none".

    Never in-place: attacks differentiate twice and in-place activations break that.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in ACTIVATIONS:
        raise GradleakError(f"{model}: option activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}")
    make = ACTIVATIONS[key]  # type: ignore[index]
    return None if make is None else make()


def norm2d(model: str, kind: object, channels: int) -> nn.Module | None:
    """BatchNorm, GroupNorm, or None for "none"."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        # the largest group count up to 32 that divides the channels, so any width works
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "none":
        return None
    raise GradleakError(f"{model}: option norm must be one of {', '.join(NORMS)}; got {kind!r}")


def check_input_shape(model: str, input_shape: object) -> tuple[int, int, int]:
    """(C, H, W) as three positive integers."""
    if (
        not isinstance(input_shape, Sequence)
        or isinstance(input_shape, str)
        or len(input_shape) != 3
        or not all(_is_int(s) and int(s) >= 1 for s in input_shape)
    ):
        raise GradleakError(f"{model}: input_shape must be (channels, height, width) of positive integers; "
                            f"got {input_shape!r}")
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


def too_small(model: str, input_shape: tuple[int, int, int], where: str) -> GradleakError:
    return GradleakError(f"{model}: input_shape {tuple(input_shape)} is too small: the feature map "
                         f"shrinks to nothing at {where}")


def positive_int(model: str, option: str, value: object) -> int:
    if not _is_int(value) or int(value) < 1:  # type: ignore[call-overload]
        raise GradleakError(f"{model}: option {option} must be a positive integer; got {value!r}")
    return int(value)  # type: ignore[call-overload]


def non_negative_int(model: str, option: str, value: object) -> int:
    if not _is_int(value) or int(value) < 0:  # type: ignore[call-overload]
        raise GradleakError(f"{model}: option {option} must be an integer >= 0; got {value!r}")
    return int(value)  # type: ignore[call-overload]


def boolean(model: str, option: str, value: object) -> bool:
    # YAML/CLI values arrive already parsed; a string like "false" would be truthy, so refuse it
    if not isinstance(value, bool):
        raise GradleakError(f"{model}: option {option} must be true or false; got {value!r}")
    return value


def probability(model: str, option: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise GradleakError(f"{model}: option {option} must be a number in [0, 1); got {value!r}")
    return float(value)


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _is_int(value: object) -> bool:
    # numbers.Integral admits numpy integers; bool is an int subclass but never a size
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
