"""The one registry of image metrics: per-sample and pairwise forms and their direction.

Every metric compares images in [0, 1] pixel space. `per_sample(x, y)` scores matched
pairs x[i], y[i] of two (N, C, H, W) batches, (N,); `pairwise(x, y)` scores every x[i]
against every y[j], (N, M). `higher_is_better` says which way is closer. Matching
(`metrics.matching`) and identification (`metrics.identify`) derive their costs from
the same entry, so a metric is written once. The perceptual entries need weight files
(`metrics.lpips.weights`); nothing is loaded until one is called, and `check` says
whether this machine has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from gradleak.metrics.functional import (
    PSNR_CAP_DB,
    mse,
    pairwise_mse,
    pairwise_ssim,
    psnr,
    psnr_from_mse,
    ssim,
)
from gradleak.metrics.lpips import lpips, pairwise_lpips
from gradleak.registry import Registry

PerSample = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Pairwise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ImageMetric:
    """One image metric: its two forms, its direction, and the weights it needs (if any)."""

    per_sample: PerSample
    pairwise: Pairwise
    higher_is_better: bool
    weights: tuple[str, str] | None = None  # (net, variant) of an LPIPS network

    def cost(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pairwise cost, lower is closer (the negated score for higher-is-better metrics)."""
        values = self.pairwise(x, y)
        return -values if self.higher_is_better else values

    def check(self) -> None:
        """Raise, naming the missing files and where to get them, unless it can run here."""
        if self.weights is not None:
            from gradleak.metrics.lpips.weights import locate

            locate(*self.weights)


def _pairwise_psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return psnr_from_mse(pairwise_mse(x, y))


def _perceptual(net: str, variant: str) -> ImageMetric:
    return ImageMetric(partial(lpips, net=net, variant=variant), partial(pairwise_lpips, net=net, variant=variant),
                       higher_is_better=False, weights=(net, variant))


METRICS: Registry[ImageMetric] = Registry("metric")
METRICS.add("mse", ImageMetric(mse, pairwise_mse, higher_is_better=False),
            "mean squared error per image in [0, 1] pixel space (lower is better)")
METRICS.add("psnr", ImageMetric(psnr, _pairwise_psnr, higher_is_better=True),
            f"peak signal-to-noise ratio per image, peak 1.0, capped at {PSNR_CAP_DB:g} dB")
METRICS.add("ssim", ImageMetric(ssim, pairwise_ssim, higher_is_better=True),
            "structural similarity per image, Gaussian window sigma 1.5 (Wang et al. 2004)")
METRICS.add("lpips", _perceptual("alex", "standard"),
            "LPIPS v0.1, AlexNet (Zhang et al. 2018; lower is better; needs the torchvision and lpips weights)")
METRICS.add("lpips-vgg", _perceptual("vgg", "standard"),
            "LPIPS v0.1, VGG-16 (Zhang et al. 2018; lower is better; needs the torchvision and lpips weights)")
METRICS.add("stlpips", _perceptual("alex", "shift-tolerant"),
            "shift-tolerant LPIPS, AlexNet (Ghildyal & Liu 2022): not the standard LPIPS numbers papers report")
METRICS.add("stlpips-vgg", _perceptual("vgg", "shift-tolerant"),
            "shift-tolerant LPIPS, VGG-16 (Ghildyal & Liu 2022): not the standard LPIPS numbers papers report")

# what every audit computes unless told otherwise
DEFAULT_METRICS = ("psnr", "ssim", "mse")
PERCEPTUAL = ("lpips", "stlpips", "lpips-vgg", "stlpips-vgg")  # preferred first for leak thresholds


def check_metric(name: str) -> None:
    """Raise (naming the missing files and where to get them) unless metric `name` can run here."""
    METRICS.get(name).check()


__all__ = ["DEFAULT_METRICS", "ImageMetric", "METRICS", "PERCEPTUAL", "check_metric"]
