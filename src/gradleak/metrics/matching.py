"""Hungarian matching of reconstructions to originals.

With a batch the attack returns reconstructions in arbitrary order, so every metric is
computed on the pairs of a minimum-cost one-to-one assignment.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from gradleak.errors import GradleakError
from gradleak.metrics.catalog import METRICS


def match(reconstruction: torch.Tensor, original: torch.Tensor, cost: str = "mse") -> torch.Tensor:
    """Indices (N,) such that `reconstruction[out[i]]` is matched to `original[i]`.

    Minimizes the summed pairwise cost of metric `cost` (a name in `METRICS`; its
    `ImageMetric.cost`, so higher-is-better metrics are negated) with the Hungarian algorithm. There may be more reconstructions than originals; extra ones
    stay unmatched. Non-finite costs (NaN reconstructions) count as worse than any
    finite cost instead of failing the assignment.
    """
    metric = METRICS.get(cost)
    for name, t in (("reconstruction", reconstruction), ("original", original)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise GradleakError(f"{name} must be a tensor of shape (N, C, H, W), got {got}")
    if reconstruction.shape[1:] != original.shape[1:]:
        raise GradleakError(
            f"reconstruction and original must hold images of the same shape, got reconstruction "
            f"{tuple(reconstruction.shape)} and original {tuple(original.shape)}"
        )
    n, m = original.shape[0], reconstruction.shape[0]
    if m < n:
        raise GradleakError(
            f"need at least as many reconstructions as originals to match, got reconstruction "
            f"{tuple(reconstruction.shape)} and original {tuple(original.shape)}"
        )
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    matrix = metric.cost(original, reconstruction).detach().to(torch.float64).cpu().numpy()
    if matrix.shape != (n, m):
        raise GradleakError(f"matching cost {cost!r} must return shape {(n, m)}, got {matrix.shape}")
    finite = np.isfinite(matrix)
    if not finite.all():
        # scipy rejects NaN/inf; a value above every finite total keeps them last resort
        top = float(np.abs(matrix[finite]).max()) if finite.any() else 0.0
        matrix = np.where(finite, matrix, (top + 1.0) * (n + 1))
    rows, cols = linear_sum_assignment(matrix)
    out = np.empty(n, dtype=np.int64)
    out[rows] = cols
    return torch.from_numpy(out)


__all__ = ["match"]
