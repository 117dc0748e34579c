"""Gradient-matching distances and image priors (plain functions).

`l2_distance`: DLG's squared Euclidean distance summed over parameter tensors
(Zhu et al. 2019). `cosine_distance`: 1 - cosine similarity of the concatenated
tensors (Geiping et al. 2020). `l1_distance`: summed absolute differences (the
Laplacian conditional, Balunovic et al. 2022). `total_variation`: anisotropic mean
absolute differences (ALGORITHMS.md convention); `squared_tv_wrap`: the Bayes attack's
prior, mean squared differences with wrap-around.

The `stacked_*` forms take per-restart predictions (R, *shape) and return (R,).
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


def l1_distance(predicted: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((p - t).abs().sum() for p, t in zip(predicted, target))


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def stacked_l2(predicted: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum(_rows((p - t) ** 2).sum(1) for p, t in zip(predicted, target))


def stacked_l1(predicted: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum(_rows((p - t).abs()).sum(1) for p, t in zip(predicted, target))


def stacked_cosine(predicted: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    dot = sum(_rows(p * t).sum(1) for p, t in zip(predicted, target))
    p_norm = sum(_rows(p * p).sum(1) for p in predicted)
    t_norm = sum((t * t).sum() for t in target)
    return 1 - dot / (p_norm.sqrt() * t_norm.sqrt() + 1e-12)


STACKED_DISTANCES = {"l2": stacked_l2, "l1": stacked_l1, "cosine": stacked_cosine}


def squared_tv_wrap(x: torch.Tensor) -> torch.Tensor:
    """Mean squared differences to the next pixel, rows and columns, wrapping around."""
    return ((x - x.roll(1, -1)) ** 2).mean() + ((x - x.roll(1, -2)) ** 2).mean()


def range_penalty(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the pixels outside [low, high] to the box."""
    return (torch.relu(x - high) ** 2 + torch.relu(low - x) ** 2).mean()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return dx + dy


DISTANCES = {"l2": l2_distance, "cosine": cosine_distance, "l1": l1_distance}


def restart_l2(stats, target: Sequence[torch.Tensor]) -> torch.Tensor:
    """`l2_distance` per restart from materialized per-restart gradients (R,)."""
    n = stats.dots.shape[0]
    return sum(((g - t) ** 2).reshape(n, -1).sum(1) for g, t in zip(stats.grads, target))


def restart_cosine(stats, target: Sequence[torch.Tensor]) -> torch.Tensor:
    """`cosine_distance` per restart from inner products and squared norms (R,)."""
    return 1 - stats.dots / (stats.norms.sqrt() * stats.target_norm.sqrt() + 1e-12)


RESTART_DISTANCES = {"l2": restart_l2, "cosine": restart_cosine}


def normalized(objective, start: torch.Tensor):
    """`objective` divided by its mean value over the start rows (one constant for all).

    A positive constant factor moves no minimizer and keeps the restarts comparable, so
    the Bayes attack still minimizes -log p(g | x) - log p(x) with the conditional read in
    the defense's noise units; only the optimizer's view changes: L-BFGS's absolute
    tolerances and its first step (1 / |gradient|_1) then mean the same whether the
    objective starts at 1e-6 (L2 of a small gradient) or 1e6 (L1 / b at a small b).
    """
    with torch.enable_grad():
        values = objective(start.detach()).detach()
    finite = values[torch.isfinite(values)].abs()
    scale = float(finite.mean()) if finite.numel() else 1.0
    if not scale > 0:
        scale = 1.0

    def scaled(rows: torch.Tensor) -> torch.Tensor:
        return objective(rows) / scale

    scaled.scale = scale
    return scaled
