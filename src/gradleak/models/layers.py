"""Small building blocks shared by the model definitions."""

from __future__ import annotations

from torch import nn

from gradleak.errors import GradleakError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "gelu": nn.GELU,
    "identity": nn.Identity,
    "none": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module (never in-place: attacks differentiate twice)."""
    if name not in ACTIVATIONS:
        raise GradleakError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels) if channels % min(32, channels) == 0 else 1, channels)
    if kind == "none":
        return nn.Identity()
    raise GradleakError(f"norm must be 'batch', 'group' or 'none', got {kind!r}")


def check_input_shape(name: str, input_shape: tuple[int, ...], min_hw: int) -> tuple[int, int, int]:
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise GradleakError(f"{name} needs input_shape (C, H, W), got {tuple(input_shape)}")
    c, h, w = (int(s) for s in input_shape)
    if h < min_hw or w < min_hw:
        raise GradleakError(f"{name} needs inputs of at least {min_hw}x{min_hw}, got input_shape {tuple(input_shape)}")
    return c, h, w


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1
