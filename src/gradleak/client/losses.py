"""The client's training losses, by name.

"cross-entropy" is the default of every FL recipe here. "logistic" is R-GAP's setting
(Zhu & Blaschko 2021): one logit u, labels y in {-1, +1} stored as class indices
{0, 1}, loss log(1 + exp(-y u)); it is binary cross-entropy on the logit, so soft
targets (N, 2) use their class-1 probability. Both take class indices (N,) or class
probabilities (N, C), so label-optimizing attacks work unchanged.

Models may add a term to the client's loss: every submodule with a `regularization()`
method contributes it (PRECODE's beta * KL, Scheliga et al. 2022), on the client and in
the attacker's simulation alike (`model_regularization`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gradleak.errors import GradleakError
from gradleak.records import LOSSES


def client_loss(name: str, outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The loss `name` of `outputs` (N, C) against indices (N,) or probabilities (N, C)."""
    if name == "cross-entropy":
        return F.cross_entropy(outputs, targets, reduction=reduction)
    if name == "logistic":
        if outputs.dim() != 2 or outputs.shape[1] != 1:
            raise GradleakError(f"the logistic loss needs one logit per sample (N, 1), got outputs of shape "
                                f"{tuple(outputs.shape)}")
        if targets.dim() == 2:
            target = targets[:, -1].to(outputs.dtype)
        else:
            if targets.numel() and not bool(((targets == 0) | (targets == 1)).all()):
                raise GradleakError(f"the logistic loss needs labels 0 or 1 (y = -1 or +1), got {targets.tolist()}")
            target = targets.to(outputs.dtype)
        return F.binary_cross_entropy_with_logits(outputs[:, 0], target, reduction=reduction)
    raise GradleakError(f"loss must be one of {list(LOSSES)}, got {name!r}")


def model_regularization(model: nn.Module) -> torch.Tensor:
    """Sum of `regularization()` over the submodules that define it (a zero tensor if none)."""
    terms = [m.regularization() for m in model.modules() if callable(getattr(m, "regularization", None))]
    if terms:
        return torch.stack([t.reshape(()) for t in terms]).sum()
    return torch.zeros((), device=next((p.device for p in model.parameters()), None))


def has_regularization(model: nn.Module) -> bool:
    return any(callable(getattr(m, "regularization", None)) for m in model.modules())


def reseed_stochastic_layers(model: nn.Module, seed: int) -> None:
    """Reseed every submodule that draws its own noise (a `reseed(seed)` method), so that
    the client's update is a function of its seed."""
    for module in model.modules():
        if callable(getattr(module, "reseed", None)):
            module.reseed(seed)
