"""AutoAugment's image operations in plain PyTorch, on batches (N, C, H, W) in [0, 1].

Cubuk et al., "AutoAugment: Learning Augmentation Strategies from Data", CVPR 2019. Each op
is `op(images, magnitude, generator)` and returns a new tensor of the same shape and dtype
in [0, 1]; the input is never modified. `magnitude` is in the op's own unit (below) and
`generator` draws the per-image random choices (the sign of a signed magnitude, Cutout's
centre), so a seeded generator gives the same result. Every image of the batch is
transformed on its own, as a data loader would. The semantics are PIL's (ImageOps,
ImageEnhance, Image.transform), which AutoAugment's CIFAR code and the ATS release
(Gao et al., CVPR 2021) both call:

- ShearX / ShearY: shear factor m, sign random per image; x_in = x + m*y about the top-left
  corner (PIL's origin), bicubic, fill 0 (black, as ATS).
- TranslateX / TranslateY: shift as a fraction of the width / height, sign random; nearest,
  fill 0 (black, as ATS).
- Rotate: degrees counterclockwise about the centre; nearest, fill 128/255. ATS's release
  does not randomize the sign (AutoAugment's TF code does); we follow ATS.
- Color / Contrast / Brightness / Sharpness: enhancement factor 1 + s*m with s = +-1 random;
  blend with the grayscale image / its mean grey / black / the 3x3 smoothed image.
- Solarize: invert the pixels >= threshold (in [0, 1] units; above 1 is the identity).
- Posterize: keep the `magnitude` high bits (int 0..8) of the 8-bit value.
- AutoContrast, Equalize, Invert, Identity: no magnitude. Equalize is PIL's per-channel
  8-bit histogram equalization; AutoContrast stretches each channel's min..max to 0..1.
- Cutout (AutoAugment's extra op; not among ATS's 50): a square of side `magnitude` times
  the image side, centre uniform per image, filled with 128/255.

`magnitude_for(name, level)` maps AutoAugment's levels 0..9 to magnitudes (`LEVEL_RANGES`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from gradleak.errors import GradleakError

Op = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]

GREY = 128 / 255  # PIL's (128, 128, 128) fill of rotations and cutout

# Level 0 and level 9 of each op, linearly interpolated. They are the ATS release's ranges:
# AutoAugment's (PyTorch-port) ranges except that the four enhancement ops span 1 +- 0.5
# where AutoAugment spans [0.1, 1.9] = 1 +- 0.9. Translations: 150 px of AutoAugment's 331.
LEVEL_RANGES: dict[str, tuple[float, float]] = {
    "ShearX": (0.0, 0.3), "ShearY": (0.0, 0.3),
    "TranslateX": (0.0, 150 / 331), "TranslateY": (0.0, 150 / 331),
    "Rotate": (0.0, 30.0),
    "Color": (0.0, 0.5), "Contrast": (0.0, 0.5), "Brightness": (0.0, 0.5), "Sharpness": (0.0, 0.5),
    "Solarize": (256 / 255, 0.0),  # 8-bit threshold 256 (nothing inverted) .. 0 (all)
    "Posterize": (8.0, 4.0),  # bits, rounded
    "Cutout": (0.0, 20 / 32),  # AutoAugment's CIFAR code: up to 20 px of 32
    "AutoContrast": (0.0, 0.0), "Equalize": (0.0, 0.0), "Invert": (0.0, 0.0), "Identity": (0.0, 0.0),
}


def magnitude_for(name: str, level: int) -> float:
    """The magnitude of op `name` at AutoAugment level 0..9."""
    if name not in LEVEL_RANGES:
        raise GradleakError(f"op must be one of {sorted(LEVEL_RANGES)}, got {name!r}")
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        raise GradleakError(f"level must be an integer in 0..9, got {level!r}")
    lo, hi = LEVEL_RANGES[name]
    value = lo + (hi - lo) * level / 9
    return float(round(value)) if name == "Posterize" else value


def _check(images: torch.Tensor, magnitude: object) -> float:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise GradleakError(f"images must be a float tensor (N, C, H, W) in [0, 1], got {got}")
    if isinstance(magnitude, bool) or not isinstance(magnitude, (int, float)) or not math.isfinite(magnitude):
        raise GradleakError(f"magnitude must be a finite number, got {magnitude!r}")
    return float(magnitude)


def _signs(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random +-1 per image, on the CPU (where the generator lives)."""
    return torch.randint(0, 2, (images.shape[0],), generator=generator, device=generator.device).to(images.dtype) * 2 - 1


def _warp(images: torch.Tensor, theta: torch.Tensor, mode: str, fill: float) -> torch.Tensor:
    """Sample `images` at theta @ (u, v, 1) (output to input, normalized coordinates)."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # zeros padding of (x - fill), plus fill: a constant fill that also blends at the edges
    out = F.grid_sample(images - fill, grid, mode=mode, padding_mode="zeros", align_corners=False) + fill
    return out.clamp(0, 1)  # bicubic overshoots


def _theta(images: torch.Tensor, rows: list[list[torch.Tensor | float]]) -> torch.Tensor:
    n = images.shape[0]
    return torch.stack([torch.stack([torch.as_tensor(v, dtype=images.dtype, device=images.device).expand(n)
                                     for v in row], -1) for row in rows], 1)


def shear_x(images: torch.Tensor, magnitude: float, generator: torch.Generator, *, fill: float = 0.0) -> torch.Tensor:
    m = _check(images, magnitude)
    s = _signs(images, generator) * m
    if m == 0:
        return images.clone()
    h, w = images.shape[-2:]
    return _warp(images, _theta(images, [[1.0, s * h / w, s * h / w], [0.0, 1.0, 0.0]]), "bicubic", fill)


def shear_y(images: torch.Tensor, magnitude: float, generator: torch.Generator, *, fill: float = 0.0) -> torch.Tensor:
    m = _check(images, magnitude)
    s = _signs(images, generator) * m
    if m == 0:
        return images.clone()
    h, w = images.shape[-2:]
    return _warp(images, _theta(images, [[1.0, 0.0, 0.0], [s * w / h, 1.0, s * w / h]]), "bicubic", fill)


def translate_x(images: torch.Tensor, magnitude: float, generator: torch.Generator, *,
                fill: float = 0.0) -> torch.Tensor:
    m = _check(images, magnitude)
    s = _signs(images, generator) * m
    if m == 0:
        return images.clone()
    return _warp(images, _theta(images, [[1.0, 0.0, 2 * s], [0.0, 1.0, 0.0]]), "nearest", fill)


def translate_y(images: torch.Tensor, magnitude: float, generator: torch.Generator, *,
                fill: float = 0.0) -> torch.Tensor:
    m = _check(images, magnitude)
    s = _signs(images, generator) * m
    if m == 0:
        return images.clone()
    return _warp(images, _theta(images, [[1.0, 0.0, 0.0], [0.0, 1.0, 2 * s]]), "nearest", fill)


def rotate(images: torch.Tensor, magnitude: float, generator: torch.Generator, *, fill: float = GREY) -> torch.Tensor:
    degrees = _check(images, magnitude)
    if degrees == 0:
        return images.clone()
    h, w = images.shape[-2:]
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    # output (u, v) reads input R(-angle)(u, v) in pixel units; y points down, so this turns
    # the picture counterclockwise as PIL's Image.rotate does
    return _warp(images, _theta(images, [[c, -s * h / w, 0.0], [s * w / h, c, 0.0]]), "nearest", fill)


def _gray(images: torch.Tensor) -> torch.Tensor:
    """PIL's "L" conversion (ITU-R 601-2 luma) for RGB; the channel mean otherwise."""
    if images.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
        return (images * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)
    return images.mean(1, keepdim=True)


def _blend(degenerate: torch.Tensor, images: torch.Tensor, magnitude: float,
           generator: torch.Generator) -> torch.Tensor:
    """ImageEnhance: degenerate + factor * (images - degenerate), factor = 1 +- magnitude."""
    signs = _signs(images, generator)  # drawn even at 0, so later draws do not shift
    if magnitude == 0:
        return images.clone()
    factor = (1 + signs * magnitude).to(images.device).view(-1, 1, 1, 1)
    return (degenerate + factor * (images - degenerate)).clamp(0, 1)


def color(images: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    return _blend(_gray(images), images, _check(images, magnitude), generator)


def contrast(images: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    m = _check(images, magnitude)
    return _blend(_gray(images).mean(dim=(1, 2, 3), keepdim=True), images, m, generator)


def brightness(images: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    return _blend(torch.zeros_like(images), images, _check(images, magnitude), generator)


def sharpness(images: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    m = _check(images, magnitude)
    degenerate = images.clone()
    n, c, h, w = images.shape
    if h >= 3 and w >= 3:  # PIL's SMOOTH filter leaves the one-pixel border as it is
        kernel = torch.ones(3, 3, dtype=images.dtype, device=images.device)
        kernel[1, 1] = 5
        kernel = (kernel / 13).expand(c, 1, 3, 3)
        degenerate[..., 1:-1, 1:-1] = F.conv2d(images, kernel, groups=c)
    return _blend(degenerate, images, m, generator)


def _bytes(images: torch.Tensor) -> torch.Tensor:
    return (images * 255).round().clamp(0, 255).long()


def solarize(images: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    threshold = _check(images, magnitude)
    return torch.where(images >= threshold, 1 - images, images)


def posterize(images: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    bits = _check(images, magnitude)
    if bits != int(bits) or not 0 <= bits <= 8:
        raise GradleakError(f"posterize magnitude must be a whole number of bits in 0..8, got {magnitude!r}")
    if bits == 8:
        return images.clone()  # PIL's identity; do not quantize a float image for nothing
    drop = 8 - int(bits)
    return ((_bytes(images) >> drop) << drop).to(images.dtype) / 255


def invert(images: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    _check(images, magnitude)
    return 1 - images


def autocontrast(images: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    _check(images, magnitude)
    lo = images.amin(dim=(2, 3), keepdim=True)
    hi = images.amax(dim=(2, 3), keepdim=True)
    flat = hi <= lo  # PIL leaves a constant channel alone
    scale = torch.where(flat, torch.ones_like(hi), hi - lo)
    return torch.where(flat, images, (images - lo) / scale).clamp(0, 1)


def equalize(images: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    """PIL's ImageOps.equalize per image and channel on the 8-bit values."""
    _check(images, magnitude)
    n, c, h, w = images.shape
    values = _bytes(images).reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=images.device).scatter_add_(
        1, values, torch.ones_like(values))
    levels = torch.arange(256, device=images.device)
    last = torch.where(hist > 0, levels, -1).amax(1, keepdim=True)  # highest occupied level
    step = (h * w - hist.gather(1, last)) // 255
    # lut[i] = (step // 2 + count below i) // step, PIL's rounding
    below = torch.cumsum(hist, 1) - hist
    lut = ((step // 2 + below) // step.clamp_min(1)).clamp(0, 255)
    out = lut.gather(1, values).to(images.dtype) / 255
    # PIL's identity lut when step is 0 (this includes a single occupied level)
    return torch.where(step == 0, images.reshape(n * c, h * w), out).reshape(n, c, h, w)


def cutout(images: torch.Tensor, magnitude: float, generator: torch.Generator, *,
           fill: float = GREY) -> torch.Tensor:
    m = _check(images, magnitude)
    if not 0 <= m <= 1:
        raise GradleakError(f"cutout magnitude must be a fraction of the image side in [0, 1], got {magnitude!r}")
    n, _, h, w = images.shape
    cy = torch.randint(0, h, (n, 1, 1), generator=generator, device=generator.device).to(images.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=generator, device=generator.device).to(images.device)
    sh, sw = round(m * h), round(m * w)
    rows = torch.arange(h, device=images.device).view(1, h, 1)
    cols = torch.arange(w, device=images.device).view(1, 1, w)
    top, left = cy - sh // 2, cx - sw // 2
    inside = (rows >= top) & (rows < top + sh) & (cols >= left) & (cols < left + sw)
    return torch.where(inside.unsqueeze(1), torch.full_like(images, fill), images)


def identity(images: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    _check(images, magnitude)
    return images.clone()


OPS: dict[str, Op] = {
    "ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x, "TranslateY": translate_y,
    "Rotate": rotate, "AutoContrast": autocontrast, "Invert": invert, "Equalize": equalize,
    "Solarize": solarize, "Posterize": posterize, "Contrast": contrast, "Color": color,
    "Brightness": brightness, "Sharpness": sharpness, "Cutout": cutout, "Identity": identity,
}
