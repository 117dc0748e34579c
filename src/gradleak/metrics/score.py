"""Score a reconstruction against the truth: the tail every pipeline shares.

The audit, the Flower audit, the R-GAP demo and `gradleak.evaluate` all end the same
way: map the attack's output to pixel space, clamp it, match it to the originals, compute
the chosen metrics on the matched pairs, and keep the matched images and labels for the
report. This is that tail, written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from gradleak.data.base import Normalization
from gradleak.errors import GradleakError
from gradleak.metrics.catalog import DEFAULT_METRICS
from gradleak.metrics.evaluate import evaluate_images
from gradleak.records import ImageMetrics, Reconstruction


@dataclass(frozen=True)
class Scored:
    """Metrics of a reconstruction, and the reconstruction (pixel space, clamped to [0, 1]) and
    its labels in the originals' order."""

    metrics: ImageMetrics
    reconstruction: torch.Tensor
    predicted_labels: torch.Tensor | None


def score_reconstruction(
    reconstruction: Reconstruction | torch.Tensor,
    original: torch.Tensor,
    *,
    normalization: Normalization | None = None,
    true_labels: torch.Tensor | Sequence[int] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    matching: str = "mse",
) -> Scored:
    """Score `reconstruction` (model space when `normalization` is given, else pixels)
    against `original` (pixel space, [0, 1]), matched by `matching`."""
    if isinstance(reconstruction, Reconstruction):
        data, predicted = reconstruction.data, reconstruction.labels
    elif isinstance(reconstruction, torch.Tensor):
        data, predicted = reconstruction, None
    else:
        raise GradleakError(f"reconstruction must be a Reconstruction or a tensor, got {type(reconstruction).__name__}")
    data = data.detach()
    pixels = normalization.denormalize(data) if normalization is not None else data
    pixels = pixels.to(original.device).clamp(0, 1)
    scored = evaluate_images(pixels, original, predicted_labels=predicted,
                             true_labels=true_labels if predicted is not None else None,
                             metrics=metrics, matching=matching)
    order = list(scored.assignment)
    labels = None if predicted is None else predicted.reshape(-1)[order]
    return Scored(scored, pixels[order], labels)


__all__ = ["Scored", "score_reconstruction"]
