"""Clipping of the shared update: entrywise (flat) and by global L2 norm.

Value clipping clamps every entry to [-bound, bound] (the SoK's "flat clipping", Du et
al. 2024). Norm clipping scales the whole update so its L2 norm is at most `max_norm`,
the clipping step of DP-SGD / DP-FedAvg (Abadi et al., CCS 2016; McMahan et al., ICLR
2018) without the noise (chain `gaussian` after it for that). Both are deterministic:
the attacker that knows them applies the same clipping to its prediction.
Threat model: the server sees only the clipped update.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from gradleak.defenses.base import Defense, check_positive
from gradleak.defenses.conditionals import Transformed


def value_clip(tensors: Sequence[torch.Tensor], bound: float) -> tuple[torch.Tensor, ...]:
    """Every entry clamped to [-bound, bound] (works on stacked predictions alike)."""
    return tuple(t.clamp(-bound, bound) for t in tensors)


def norm_clip(stacked: Sequence[torch.Tensor], max_norm: float) -> tuple[torch.Tensor, ...]:
    """Each restart of stacked tensors (R, *shape) scaled to global L2 norm <= max_norm;
    restarts already within are multiplied by exactly 1. Differentiable, also at 0."""
    if not stacked:
        return ()
    # squared norms in float64: the clipped norm then exceeds max_norm by float rounding only
    sq = sum(p.double().reshape(p.shape[0], -1).pow(2).sum(1) for p in stacked)
    # rsqrt of the clamped square, not max_norm / sqrt(sq): no inf or nan gradient at 0
    factor = torch.where(sq > max_norm**2, max_norm * sq.clamp_min(1e-300).rsqrt(), torch.ones_like(sq))
    return tuple(p * factor.to(p.dtype).reshape(-1, *[1] * (p.dim() - 1)) for p in stacked)


class ValueClip(Defense):
    """Clamp every entry to [-bound, bound] (identity when all entries are within)."""

    name = "valueclip"
    _spec_fields = ("bound",)

    def __init__(self, bound: float | None = None) -> None:
        # required; None only so that a spec without it fails with a GradleakError
        self.bound = check_positive("bound", bound)

    def _tensors(self, tensors, generator, client):
        return value_clip(tensors, self.bound)

    def conditional(self, after, *, seed=None):
        return Transformed(functools.partial(value_clip, bound=self.bound), after)


class NormClip(Defense):
    """Scale the whole update (all tensors together) to L2 norm <= max_norm; an update
    already within is returned bit for bit."""

    name = "normclip"
    _spec_fields = ("max_norm",)

    def __init__(self, max_norm: float | None = None) -> None:
        # required; None only so that a spec without it fails with a GradleakError
        self.max_norm = check_positive("max_norm", max_norm)

    def _tensors(self, tensors, generator, client):
        # the update is one restart: the same function the attacker's model applies
        return tuple(t[0] for t in norm_clip([t.unsqueeze(0) for t in tensors], self.max_norm))

    def conditional(self, after, *, seed=None):
        return Transformed(functools.partial(norm_clip, max_norm=self.max_norm), after)
