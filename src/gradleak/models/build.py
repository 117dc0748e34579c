"""Build a registered model deterministically and load checkpoints safely."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.registry import Registry

MODELS: Registry = Registry("model")


def model_options(name: str) -> dict[str, Any]:
    """Option name -> default of a registered model."""
    sig = inspect.signature(MODELS.get(name))
    return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


def build_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    seed: int = 0,
    checkpoint: str | Path | None = None,
    **options: Any,
) -> nn.Module:
    """A fresh model in eval mode, initialized under `seed` without touching the global RNG."""
    factory = MODELS.get(name)
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in accepted.items()) or "none"
        raise GradleakError(f"model {name!r} does not take options {unknown}; it takes: {listed}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise GradleakError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = factory(num_classes, tuple(int(s) for s in input_shape), **options)
        except TypeError as exc:
            raise GradleakError(f"model {name!r}: bad option value: {exc}") from None
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state_dict (bare, or under "state_dict"/"model_state_dict") all or nothing."""
    path = Path(path)
    if not path.is_file():
        raise GradleakError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files
        raise GradleakError(f"checkpoint {str(path)!r} cannot be read: {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GradleakError(f"checkpoint {str(path)!r} does not hold a state_dict of tensors")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise GradleakError(
            f"checkpoint {str(path)!r} does not fit the model: missing keys {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise GradleakError(
                f"checkpoint {str(path)!r}: {key!r} has shape {tuple(state[key].shape)}, "
                f"the model expects {tuple(value.shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model
