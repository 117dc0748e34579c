"""LPIPS (Zhang et al., CVPR 2018) and shift-tolerant LPIPS (Ghildyal & Liu, ECCV 2022) as image metrics.

d(x, y) = sum over taps l of mean over positions of w_l . (f_l(x) - f_l(y))^2, where f_l
are channel-normalized backbone activations and w_l the learned per-channel weights.
Lower is closer; 0 for identical images. For scoring only: no gradients flow.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import torch
import torch.nn.functional as F
from torch import nn

from gradleak.errors import GradleakError
from gradleak.metrics.functional import _as_batch
from gradleak.metrics.lpips.networks import MIN_SIDE, LPIPSNetwork
from gradleak.metrics.lpips.weights import PathLike, WeightFiles, load_network, locate

log = logging.getLogger(__name__)

# images per forward pass: bounds activation memory on large batches
CHUNK = 32

_CACHE: dict[tuple[WeightFiles, str], LPIPSNetwork] = {}
_LOCK = threading.Lock()


def get_network(
    net: str = "alex",
    variant: str = "standard",
    *,
    backbone: PathLike | None = None,
    heads: PathLike | None = None,
    weights: PathLike | None = None,
    device: torch.device | str = "cpu",
) -> LPIPSNetwork:
    """The loaded network, cached per process by (variant, net, resolved files, device)."""
    files = locate(net, variant, backbone=backbone, heads=heads, weights=weights)
    key = (files, str(torch.device(device)))
    # one lock for lookup and load: two threads never read the same 60 MB twice
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            start = time.perf_counter()
            model = load_network(files).to(device)
            log.info("%s LPIPS (%s) loaded in %.2f s from %s", variant, net, time.perf_counter() - start,
                     ", ".join(map(str, files.paths)))
            _CACHE[key] = model
    return model


def clear_cache() -> None:
    """Forget every loaded network."""
    with _LOCK:
        _CACHE.clear()


def _check_images(t: torch.Tensor, name: str) -> None:
    if t.shape[1] not in (1, 3):
        raise GradleakError(f"{name} must have 1 or 3 channels for LPIPS, got shape {tuple(t.shape)}")


def _prepare(images: torch.Tensor, min_side: int) -> torch.Tensor:
    """float32 RGB in [-1, 1], upsampled (aspect kept) so that the short side is at least `min_side`."""
    x = images.to(torch.float32)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[2:]
    if min(h, w) < min_side:
        scale = min_side / min(h, w)
        size = (max(min_side, math.ceil(h * scale - 1e-9)), max(min_side, math.ceil(w * scale - 1e-9)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x * 2.0 - 1.0


def _features(model: LPIPSNetwork, images: torch.Tensor) -> list[torch.Tensor]:
    parts = [model.features(images[i : i + CHUNK]) for i in range(0, images.shape[0], CHUNK)]
    return [torch.cat(tap) for tap in zip(*parts)]


def lpips(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    net: str = "alex",
    variant: str = "standard",
    backbone: PathLike | None = None,
    heads: PathLike | None = None,
    weights: PathLike | None = None,
) -> torch.Tensor:
    """LPIPS between x[i] and y[i], shape (N,) float64; x, y (N, C, H, W) in [0, 1], C = 1 or 3.

    `variant="standard"` is LPIPS v0.1 (Zhang et al. 2018) on an ImageNet AlexNet or VGG-16
    (`backbone=` torchvision checkpoint, `heads=` LPIPS linear heads; both found
    automatically, see `gradleak.metrics.lpips.weights`). `variant="shift-tolerant"` is
    ST-LPIPS (Ghildyal & Liu 2022; `weights=` its single file): anti-aliased backbones
    retrained end to end, so its values are not comparable with standard LPIPS.

    Images are scaled to [-1, 1]; gray images are repeated to RGB. Images whose short side
    is below the network's minimum (the smallest side at which every tap is non-empty:
    standard alex 31, vgg 16; shift-tolerant alex 21, vgg 18) are first upsampled
    bilinearly, keeping the aspect ratio, until the short side equals it. Runs in
    float32 without gradients on the inputs' device.
    """
    a, b = _as_batch(x, "x"), _as_batch(y, "y")
    if a.shape != b.shape:
        raise GradleakError(f"x and y must have the same shape, got x {tuple(a.shape)} and y {tuple(b.shape)}")
    _check_images(a, "x")
    model = get_network(net, variant, backbone=backbone, heads=heads, weights=weights, device=a.device)
    if a.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64, device=a.device)
    side = MIN_SIDE[(variant, net)]
    out = []
    with torch.no_grad():
        for i in range(0, a.shape[0], CHUNK):
            # one pass over both halves: better use of the conv kernels than two small ones
            both = _prepare(torch.cat([a[i : i + CHUNK], b[i : i + CHUNK].to(a.device)]), side)
            feats = model.features(both)
            n = both.shape[0] // 2
            out.append(model.distance([f[:n] for f in feats], [f[n:] for f in feats]))
    return torch.cat(out).to(torch.float64)


def pairwise_lpips(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    net: str = "alex",
    variant: str = "standard",
    backbone: PathLike | None = None,
    heads: PathLike | None = None,
    weights: PathLike | None = None,
) -> torch.Tensor:
    """LPIPS between every x[i] and every y[j], shape (N, M) float64; options as in `lpips`.

    Each image goes through the network once; the features of all N + M images are kept.
    """
    a, b = _as_batch(x, "x"), _as_batch(y, "y")
    if a.shape[1:] != b.shape[1:]:
        raise GradleakError(
            f"x and y must hold images of the same shape, got x {tuple(a.shape)} and y {tuple(b.shape)}"
        )
    _check_images(a, "x")
    model = get_network(net, variant, backbone=backbone, heads=heads, weights=weights, device=a.device)
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    if out.numel() == 0:
        return out
    side = MIN_SIDE[(variant, net)]
    with torch.no_grad():
        fa = _features(model, _prepare(a, side))
        fb = _features(model, _prepare(b.to(a.device), side))
        for i in range(a.shape[0]):
            # row by row: memory stays at one (M, C, h, w) difference per tap
            out[i] = model.distance([f[i : i + 1] for f in fa], fb)
    return out


class LPIPS(nn.Module):
    """Module form of `lpips` (forward) and `pairwise_lpips` (pairwise); it only holds the options.

    The weight files are located when constructed (a missing file fails here) and loaded
    on the first call, then shared through the per-process cache.
    """

    def __init__(
        self,
        net: str = "alex",
        variant: str = "standard",
        *,
        backbone: PathLike | None = None,
        heads: PathLike | None = None,
        weights: PathLike | None = None,
    ) -> None:
        super().__init__()
        locate(net, variant, backbone=backbone, heads=heads, weights=weights)
        self.options = {"net": net, "variant": variant, "backbone": backbone, "heads": heads, "weights": weights}

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return lpips(x, y, **self.options)

    def pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pairwise_lpips(x, y, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items() if v is not None)


__all__ = ["CHUNK", "LPIPS", "clear_cache", "get_network", "lpips", "pairwise_lpips"]
