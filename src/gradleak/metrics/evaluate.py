"""Score a reconstructed batch against the originals: match, then measure."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import torch

from gradleak.errors import GradleakError
from gradleak.metrics.catalog import DEFAULT_METRICS, METRICS
from gradleak.metrics.functional import psnr
from gradleak.metrics.matching import match
from gradleak.records import ImageMetrics

# Originals come from denormalization, which may overshoot [0, 1] by rounding; anything
# further out means the caller passed model-space (normalized) images.
ORIGINAL_RANGE_TOLERANCE = 1e-3

# NaN pixels do not pull matching towards any original: they stand in as mid-grey.
NAN_MATCHING_FILL = 0.5


def _label_list(labels: object, name: str) -> list[int]:
    if isinstance(labels, torch.Tensor):
        arr = labels.detach().cpu().numpy()
    else:
        arr = np.asarray(labels)
    if arr.ndim != 1:
        raise GradleakError(f"{name} must be a 1-D sequence of class indices, got shape {arr.shape}")
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise GradleakError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    return [int(v) for v in arr.tolist()]


def label_accuracy(predicted: Sequence[int] | torch.Tensor, true: Sequence[int] | torch.Tensor) -> float:
    """Multiset label accuracy: |predicted ∩ true| / N, ignoring order.

    Order is meaningless before image matching, so [1, 1, 2] vs [1, 2, 2] scores 2/3.
    """
    p, t = _label_list(predicted, "predicted labels"), _label_list(true, "true labels")
    if len(p) != len(t):
        raise GradleakError(f"predicted and true labels must have the same length, got {len(p)} and {len(t)}")
    if not t:
        raise GradleakError("label accuracy needs at least one label, got none")
    hits = sum((Counter(p) & Counter(t)).values())
    return hits / len(t)


def evaluate_images(
    reconstruction: torch.Tensor,
    original: torch.Tensor,
    *,
    predicted_labels: Sequence[int] | torch.Tensor | None = None,
    true_labels: Sequence[int] | torch.Tensor | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    matching: str = "mse",
) -> ImageMetrics:
    """Match reconstructions to originals and compute each of `metrics` per original.

    Both batches are (N, C, H, W) in [0, 1] pixel space (denormalize first). The
    reconstruction is clamped to [0, 1] (so +-inf become 1 and 0). NaN pixels count as
    the worst case: they take part in matching as mid-grey (0.5), and are then scored
    as the value farthest from the matched original pixel (0 where it is >= 0.5, else 1).
    Label accuracy (multiset) is computed when both label sets are given. `metrics` and
    `matching` are names in `METRICS` (matching by MSE, PSNR or a perceptual distance).
    """
    if isinstance(metrics, str) or not metrics:
        raise GradleakError(f"metrics must be a non-empty list of metric names, got {metrics!r}")
    chosen = {METRICS.entry(name).name: METRICS.get(name) for name in metrics}
    for name, t in (("reconstruction", reconstruction), ("original", original)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise GradleakError(f"{name} must be a tensor of shape (N, C, H, W), got {got}")
    if reconstruction.shape != original.shape:
        raise GradleakError(
            f"reconstruction and original must have the same shape, got reconstruction "
            f"{tuple(reconstruction.shape)} and original {tuple(original.shape)}"
        )
    if original.shape[0] == 0:
        raise GradleakError(f"original must hold at least one image, got shape {tuple(original.shape)}")
    # float64 on the images' own device (MPS has no float64: there, the CPU)
    device = torch.device("cpu") if original.device.type == "mps" else original.device
    orig = original.detach().to(device=device, dtype=torch.float64)
    if not torch.isfinite(orig).all():
        raise GradleakError("original must be finite, got NaN or inf values")
    lo, hi = float(orig.min()), float(orig.max())
    tol = ORIGINAL_RANGE_TOLERANCE
    if lo < -tol or hi > 1 + tol:
        raise GradleakError(
            f"original must be in [0, 1] pixel space (denormalize first), got values in [{lo:.4g}, {hi:.4g}]"
        )
    orig = orig.clamp(0, 1)

    rec = reconstruction.detach().to(device=device, dtype=torch.float64)
    nan = torch.isnan(rec)
    assignment = match(torch.where(nan, NAN_MATCHING_FILL, rec).clamp(0, 1), orig, matching)

    matched = rec[assignment].clamp(0, 1)
    worst = torch.where(orig >= 0.5, 0.0, 1.0).to(torch.float64)
    matched = torch.where(nan[assignment], worst, matched)

    values = {name: tuple(float(v) for v in metric.per_sample(matched, orig)) for name, metric in chosen.items()}
    accuracy = None
    if predicted_labels is not None and true_labels is not None:
        n = orig.shape[0]
        for name, labels in (("predicted_labels", predicted_labels), ("true_labels", true_labels)):
            count = len(_label_list(labels, name))
            if count != n:
                raise GradleakError(f"{name} must hold one label per image ({n}), got {count}")
        accuracy = label_accuracy(predicted_labels, true_labels)
    return ImageMetrics(values=values, assignment=tuple(int(v) for v in assignment), label_accuracy=accuracy,
                        matching=matching, baseline_psnr=tuple(float(v) for v in flat_baseline_psnr(orig)))


def flat_baseline_psnr(original: torch.Tensor) -> torch.Tensor:
    """PSNR of a flat image of each original's mean colour (per channel) against it, (N,):
    what knowing only the average colour recovers, the floor a verdict measures against."""
    flat = original.mean(dim=(2, 3), keepdim=True).expand_as(original)
    return psnr(flat, original)


__all__ = ["evaluate_images", "flat_baseline_psnr", "label_accuracy"]
