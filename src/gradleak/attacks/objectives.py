"""Gradient-matching distances and image priors (plain functions).

`l2_distance`: DLG's squared Euclidean distance summed over parameter tensors
(Zhu et al. 2019). `cosine_distance`: 1 - cosine similarity of the concatenated
tensors (Geiping et al. 2020). `total_variation`: anisotropic mean absolute
differences (ALGORITHMS.md convention).
"""

from __future__ import annotations

from typing import Sequence

import torch


def l2_distance(predicted: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum(((p - t) ** 2).sum() for p, t in zip(predicted, target))


def cosine_distance(predicted: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    dot = sum((p * t).sum() for p, t in zip(predicted, target))
    p_norm = sum((p * p).sum() for p in predicted)
    t_norm = sum((t * t).sum() for t in target)
    # eps keeps the objective finite when a dummy gradient vanishes exactly
    return 1 - dot / (p_norm.sqrt() * t_norm.sqrt() + 1e-12)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return dx + dy


DISTANCES = {"l2": l2_distance, "cosine": cosine_distance}


def restart_l2(stats, target: Sequence[torch.Tensor]) -> torch.Tensor:
    """`l2_distance` per restart from materialized per-restart gradients (R,)."""
    n = stats.dots.shape[0]
    return sum(((g - t) ** 2).reshape(n, -1).sum(1) for g, t in zip(stats.grads, target))


def restart_cosine(stats, target: Sequence[torch.Tensor]) -> torch.Tensor:
    """`cosine_distance` per restart from inner products and squared norms (R,)."""
    return 1 - stats.dots / (stats.norms.sqrt() * stats.target_norm.sqrt() + 1e-12)


RESTART_DISTANCES = {"l2": restart_l2, "cosine": restart_cosine}
