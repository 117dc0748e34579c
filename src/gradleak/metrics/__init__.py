"""Image metrics in [0, 1] pixel space, matching, identification and the batch evaluation.

`METRICS` is the one registry: each `ImageMetric` has a per-sample form, a pairwise form
and a direction, and matching (`match`) and identification (`identify`) derive from it.
The LPIPS entries need weight files (see `gradleak.metrics.lpips.weights`); nothing is
loaded until one is called. The functional LPIPS is `gradleak.metrics.lpips.lpips` (not
re-exported here: the name would hide the subpackage).
"""

from __future__ import annotations

from gradleak.metrics.accuracy import test_accuracy
from gradleak.metrics.catalog import (
    DEFAULT_METRICS,
    METRICS,
    PERCEPTUAL,
    ImageMetric,
    check_metric,
)
from gradleak.metrics.evaluate import evaluate_images, label_accuracy
from gradleak.metrics.functional import (
    PSNR_CAP_DB,
    mse,
    pairwise_mse,
    pairwise_ssim,
    psnr,
    ssim,
)
from gradleak.metrics.identify import Identification, identify
from gradleak.metrics.lpips import LPIPS, pairwise_lpips
from gradleak.metrics.matching import match
from gradleak.metrics.score import Scored, score_reconstruction

__all__ = [
    "DEFAULT_METRICS",
    "Identification",
    "ImageMetric",
    "LPIPS",
    "METRICS",
    "PERCEPTUAL",
    "PSNR_CAP_DB",
    "Scored",
    "check_metric",
    "evaluate_images",
    "identify",
    "label_accuracy",
    "match",
    "mse",
    "pairwise_lpips",
    "pairwise_mse",
    "pairwise_ssim",
    "psnr",
    "score_reconstruction",
    "ssim",
    "test_accuracy",
]
