"""Image metrics in [0, 1] pixel space, matching, and the batch evaluation.

`METRICS` maps a name to a per-sample metric `(reconstruction, original) -> (N,)`
(both (N, C, H, W), already matched). LPIPS can be registered here when available.
"""

from __future__ import annotations

from typing import Callable

import torch

from gradleak.metrics.evaluate import evaluate_images, label_accuracy
from gradleak.metrics.functional import PSNR_CAP_DB, mse, pairwise_mse, psnr, ssim
from gradleak.metrics.matching import MATCHING_COSTS, match
from gradleak.registry import Registry

ImageMetric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METRICS: Registry[ImageMetric] = Registry("metric")
METRICS.add("mse", mse, "mean squared error per image in [0, 1] pixel space (lower is better)")
METRICS.add("psnr", psnr, f"peak signal-to-noise ratio per image, peak 1.0, capped at {PSNR_CAP_DB:g} dB")
METRICS.add("ssim", ssim, "structural similarity per image, Gaussian window sigma 1.5 (Wang et al. 2004)")

__all__ = [
    "ImageMetric",
    "MATCHING_COSTS",
    "METRICS",
    "PSNR_CAP_DB",
    "evaluate_images",
    "label_accuracy",
    "match",
    "mse",
    "pairwise_mse",
    "psnr",
    "ssim",
]
