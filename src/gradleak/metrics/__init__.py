"""Image metrics in [0, 1] pixel space, matching, and the batch evaluation.

`METRICS` maps a name to a per-sample metric `(reconstruction, original) -> (N,)`
(both (N, C, H, W), already matched). The LPIPS entries need weight files (see
`gradleak.metrics.lpips.weights`); nothing is loaded until one is called. The functional
LPIPS is `gradleak.metrics.lpips.lpips` (not re-exported here: the name would hide the
subpackage).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from gradleak.metrics.evaluate import evaluate_images, label_accuracy
from gradleak.metrics.functional import PSNR_CAP_DB, mse, pairwise_mse, psnr, ssim
from gradleak.metrics.lpips import LPIPS, pairwise_lpips
from gradleak.metrics.lpips import lpips as _lpips
from gradleak.metrics.matching import MATCHING_COSTS, match
from gradleak.registry import Registry

ImageMetric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METRICS: Registry[ImageMetric] = Registry("metric")
METRICS.add("mse", mse, "mean squared error per image in [0, 1] pixel space (lower is better)")
METRICS.add("psnr", psnr, f"peak signal-to-noise ratio per image, peak 1.0, capped at {PSNR_CAP_DB:g} dB")
METRICS.add("ssim", ssim, "structural similarity per image, Gaussian window sigma 1.5 (Wang et al. 2004)")
METRICS.add("lpips", partial(_lpips, net="alex", variant="standard"),
            "LPIPS v0.1, AlexNet (Zhang et al. 2018; lower is better; needs the torchvision and lpips weights)")
METRICS.add("lpips-vgg", partial(_lpips, net="vgg", variant="standard"),
            "LPIPS v0.1, VGG-16 (Zhang et al. 2018; lower is better; needs the torchvision and lpips weights)")
METRICS.add("stlpips", partial(_lpips, net="alex", variant="shift-tolerant"),
            "shift-tolerant LPIPS, AlexNet (Ghildyal & Liu 2022): not the standard LPIPS numbers papers report")
METRICS.add("stlpips-vgg", partial(_lpips, net="vgg", variant="shift-tolerant"),
            "shift-tolerant LPIPS, VGG-16 (Ghildyal & Liu 2022): not the standard LPIPS numbers papers report")

# what each weight-backed metric needs, checked before a sweep spends hours on cells
_WEIGHTS = {"lpips": ("alex", "standard"), "lpips-vgg": ("vgg", "standard"),
            "stlpips": ("alex", "shift-tolerant"), "stlpips-vgg": ("vgg", "shift-tolerant")}


def check_metric(name: str) -> None:
    """Raise (naming the missing files and where to get them) unless metric `name` can run here."""
    METRICS.entry(name)
    if name.lower() in _WEIGHTS:
        from gradleak.metrics.lpips.weights import locate

        locate(*_WEIGHTS[name.lower()])


__all__ = [
    "check_metric",
    "ImageMetric",
    "LPIPS",
    "MATCHING_COSTS",
    "METRICS",
    "PSNR_CAP_DB",
    "evaluate_images",
    "label_accuracy",
    "match",
    "mse",
    "pairwise_lpips",
    "pairwise_mse",
    "psnr",
    "ssim",
]
