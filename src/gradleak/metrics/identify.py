"""Leak identification: is a reconstruction closest to the client's true image?

Each reconstructed image is compared, with one image metric, against every image of the
client's data partition (the candidates); its nearest neighbour is the candidate it
resembles most. When the true image is known, the reconstruction *identifies* it if the
nearest neighbour is the true image, and the rank of the true image is the number of
candidates strictly closer than it (0 = identified).

This needs the client's data, so it is a measurement for an auditor running a
simulation, not something a curious server can compute. Identification by a pixel
metric (PSNR, MSE, even SSIM) can succeed on a blurry reconstruction that carries little
visible detail: the average colours alone may single out the right image among a few.
Report the score (`nearest_score`, and the margin to `runner_up_score`) next to it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from gradleak.errors import GradleakError
from gradleak.metrics.catalog import METRICS
from gradleak.metrics.functional import _as_batch

PIXEL_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Identification:
    """Nearest candidates of each reconstruction; index j of every tuple is reconstruction j.

    On a tie with a lower-indexed candidate the true image has rank 0 yet is not identified.
    """

    metric: str
    nearest: tuple[int, ...]
    nearest_score: tuple[float, ...]
    runner_up_score: tuple[float | None, ...]
    true_index: tuple[int | None, ...]
    true_rank: tuple[int | None, ...]
    identified: tuple[bool | None, ...]

    @property
    def rate(self) -> float | None:
        """Fraction identified among the reconstructions whose true image is known (None if none is)."""
        known = [hit for hit in self.identified if hit is not None]
        return sum(known) / len(known) if known else None

    def to_json(self) -> dict:
        return {
            "metric": self.metric,
            "nearest": list(self.nearest),
            "nearest_score": list(self.nearest_score),
            "runner_up_score": list(self.runner_up_score),
            "true_index": list(self.true_index),
            "true_rank": list(self.true_rank),
            "identified": list(self.identified),
            "rate": self.rate,
        }


def _pixels(x: object, name: str) -> torch.Tensor:
    t = _as_batch(x, name)
    if t.numel() == 0:
        raise GradleakError(f"{name} must hold at least one non-empty image, got shape {tuple(t.shape)}")
    lo, hi = float(t.min()), float(t.max())  # NaN propagates to both and fails both tests
    if not (lo >= -PIXEL_TOLERANCE and hi <= 1.0 + PIXEL_TOLERANCE):
        raise GradleakError(f"{name} must hold finite pixel values in [0, 1], got min {lo:g} and max {hi:g}")
    return t


def _true_indices(true_index: Sequence[int | None] | None, n: int, m: int) -> list[int | None]:
    if true_index is None:
        return [None] * n
    if isinstance(true_index, (str, bytes)) or not hasattr(true_index, "__len__"):
        raise GradleakError(f"true_index must be a sequence of {n} ints or None, got {true_index!r}")
    if len(true_index) != n:
        raise GradleakError(f"true_index must have one entry per reconstruction ({n}), got {len(true_index)}")
    out: list[int | None] = []
    for j, k in enumerate(true_index):
        if k is not None:
            try:
                k = None if isinstance(k, bool) else operator.index(k)
            except TypeError:
                k = None
            if k is None or not 0 <= k < m:
                raise GradleakError(
                    f"true_index[{j}] must be a candidate index in [0, {m}) or None, got {true_index[j]!r}")
        out.append(k)
    return out


def identify(
    reconstruction: torch.Tensor,
    candidates: torch.Tensor,
    *,
    true_index: Sequence[int | None] | None = None,
    metric: str = "psnr",
) -> Identification:
    """Nearest neighbour of each reconstruction (N, C, H, W) among `candidates` (M, C, H, W), both in [0, 1].

    `true_index[j]` (optional, None entries allowed) is the candidate index of the image
    reconstruction j should identify. `metric` is a name in `METRICS`. Ties go to the
    lowest candidate index.
    """
    entry = METRICS.entry(metric)  # unknown names: the error lists the known ones
    closeness = entry.factory
    rec, cand = _pixels(reconstruction, "reconstruction"), _pixels(candidates, "candidates")
    if rec.shape[1:] != cand.shape[1:]:
        raise GradleakError(
            f"reconstruction and candidates must hold images of the same shape, got reconstruction "
            f"{tuple(rec.shape)} and candidates {tuple(cand.shape)}")
    n, m = rec.shape[0], cand.shape[0]
    truth = _true_indices(true_index, n, m)
    values = closeness.pairwise(rec, cand).detach().to(torch.float64).cpu().numpy()
    distance = -values if closeness.higher_is_better else values  # smaller is closer; negation is exact
    order = np.argsort(distance, axis=1, kind="stable")  # stable: ties keep the lowest index first

    nearest, best, second, ranks, hits = [], [], [], [], []
    for j in range(n):
        k = int(order[j, 0])
        nearest.append(k)
        best.append(float(values[j, k]))
        second.append(float(values[j, order[j, 1]]) if m > 1 else None)
        t = truth[j]
        ranks.append(None if t is None else int((distance[j] < distance[j, t]).sum()))
        hits.append(None if t is None else k == t)
    return Identification(entry.name, tuple(nearest), tuple(best), tuple(second),
                          tuple(truth), tuple(ranks), tuple(hits))


__all__ = ["Identification", "identify"]
