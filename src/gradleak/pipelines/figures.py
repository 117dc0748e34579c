"""Side-by-side figures of originals and reconstructions.

A grid has one column per sample (already in matched order) and three labelled rows:
the original, the reconstruction clamped to [0, 1], and the reconstruction min-max
rescaled per image (shows structure that clamping hides, e.g. R-GAP outputs that are
right up to scale and offset). Pixels are upscaled by an integer factor with nearest
neighbour, so every image pixel is an exact `scale` x `scale` block.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from gradleak.errors import GradleakError
from gradleak.io import atomic_write_bytes

ROWS = ("original", "reconstruction", "rescaled")
DEFAULT_SCALE = 3  # 32 x 32 CIFAR images become 96 x 96 px
MARGIN = 6
GAP = 4
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(math.ceil(right - left)), int(math.ceil(bottom - top))


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of a grid: where each image cell and text line goes."""

    width: int
    height: int
    cell_width: int
    cell_height: int
    left: int  # x of the first column
    row_tops: tuple[int, int, int]
    title_top: int | None
    header_top: int | None  # per-column labels, above the original row
    caption_top: int | None  # per-column PSNR, under the reconstruction row
    line_height: int

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the image in `row` (0..2) and column `col`."""
        x = self.left + col * (self.cell_width + GAP)
        y = self.row_tops[row]
        return x, y, x + self.cell_width, y + self.cell_height


def grid_layout(
    num_samples: int,
    image_height: int,
    image_width: int,
    *,
    scale: int = DEFAULT_SCALE,
    title: str | None = None,
    with_labels: bool = False,
    with_psnr: bool = False,
) -> GridLayout:
    """The geometry `render_grid` uses for these sizes and options."""
    font = _font()
    line_h = _text_size(font, "Ag")[1] + 4
    cw, ch = image_width * scale, image_height * scale
    left = MARGIN + max(_text_size(font, name)[0] for name in ROWS) + GAP * 2
    y = MARGIN
    title_top = header_top = caption_top = None
    if title:
        title_top, y = y, y + line_h + GAP
    if with_labels:
        header_top, y = y, y + line_h
    top0 = y
    top1 = top0 + ch + GAP
    y = top1 + ch
    if with_psnr:
        caption_top, y = y + 1, y + 1 + line_h
    top2 = y + GAP
    height = top2 + ch + MARGIN
    width = left + num_samples * cw + (num_samples - 1) * GAP + MARGIN
    if title:
        width = max(width, 2 * MARGIN + _text_size(font, title)[0])
    return GridLayout(width, height, cw, ch, left, (top0, top1, top2), title_top, header_top, caption_top, line_h)


def _check_images(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise GradleakError(f"{name} must be a tensor of shape (N, C, H, W), got {got}")
    if x.shape[1] not in (1, 3):
        raise GradleakError(f"{name} must have 1 (grayscale) or 3 (RGB) channels, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise GradleakError(f"{name} must hold at least one image, got shape {tuple(x.shape)}")
    return x.detach().to(torch.float64).cpu()


def _clamped(x: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(x, nan=0.5, posinf=1.0, neginf=0.0).clamp(0, 1)


def _rescaled(x: torch.Tensor) -> torch.Tensor:
    """Each image min-max rescaled to [0, 1] over its finite values; constant -> 0.5."""
    out = torch.full_like(x, 0.5)
    for i, img in enumerate(x):
        finite = img[torch.isfinite(img)]
        if finite.numel() == 0:
            continue
        lo, hi = float(finite.min()), float(finite.max())
        if hi - lo <= 0:
            continue
        img = torch.nan_to_num(img, nan=(lo + hi) / 2, posinf=hi, neginf=lo)
        out[i] = (img - lo) / (hi - lo)
    return out


def _to_pixels(img: torch.Tensor, scale: int) -> Image.Image:
    """(C, H, W) in [0, 1] -> RGB PIL image upscaled by `scale` (nearest)."""
    arr = np.rint(img.numpy() * 255.0).astype(np.uint8).transpose(1, 2, 0)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1)
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def _per_column(values: object, n: int, name: str) -> list:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().reshape(-1).tolist()
    values = list(values)  # type: ignore[call-overload]
    if len(values) != n:
        raise GradleakError(f"{name} must hold one entry per column ({n}), got {len(values)}")
    return values


def render_grid(
    original: torch.Tensor,
    reconstruction: torch.Tensor,
    *,
    psnr: Sequence[float] | torch.Tensor | None = None,
    labels: Sequence[object] | None = None,
    title: str | None = None,
    scale: int = DEFAULT_SCALE,
) -> Image.Image:
    """An RGB figure: rows original / reconstruction / rescaled, one column per sample.

    Both batches are (N, C, H, W) in [0, 1] pixel space, C = 1 or 3, in matched order.
    `psnr` (one value per column) is captioned under the reconstruction row as
    "24.1 dB"; `labels` (one per column, e.g. class names) head the columns; `title`
    goes on top. Images are upscaled by `scale` with nearest neighbour.
    """
    orig = _check_images(original, "original")
    rec = _check_images(reconstruction, "reconstruction")
    if orig.shape != rec.shape:
        raise GradleakError(
            f"original and reconstruction must have the same shape, got original {tuple(orig.shape)} "
            f"and reconstruction {tuple(rec.shape)}"
        )
    if not (isinstance(scale, int) and not isinstance(scale, bool) and scale >= 1):
        raise GradleakError(f"scale must be an integer >= 1, got {scale!r}")
    n, _, h, w = orig.shape
    psnr_values = None if psnr is None else [float(v) for v in _per_column(psnr, n, "psnr")]
    label_values = None if labels is None else [str(v) for v in _per_column(labels, n, "labels")]

    layout = grid_layout(n, h, w, scale=scale, title=title, with_labels=label_values is not None,
                         with_psnr=psnr_values is not None)
    canvas = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font()

    def text(x: float, top: int, s: str, centre: bool = False) -> None:
        tw, th = _text_size(font, s)
        # align the glyphs' bounding box, not the font's ascender, to the target line
        left, upper = font.getbbox(s)[:2]
        x0 = x - tw / 2 if centre else x
        draw.text((x0 - left, top + (layout.line_height - th) / 2 - upper), s, fill=INK, font=font)

    if title and layout.title_top is not None:
        text(MARGIN, layout.title_top, title)
    rows = (_clamped(orig), _clamped(rec), _rescaled(rec))
    for r, (name, images) in enumerate(zip(ROWS, rows)):
        top = layout.row_tops[r]
        text(MARGIN, top + (layout.cell_height - layout.line_height) // 2, name)
        for c in range(n):
            canvas.paste(_to_pixels(images[c], scale), layout.cell_box(r, c)[:2])
    for c in range(n):
        x0, _, x1, _ = layout.cell_box(0, c)
        centre = (x0 + x1) / 2
        if label_values is not None and layout.header_top is not None:
            text(centre, layout.header_top, label_values[c], centre=True)
        if psnr_values is not None and layout.caption_top is not None:
            text(centre, layout.caption_top, f"{psnr_values[c]:.1f} dB", centre=True)
    return canvas


def save_grid(
    path: str | os.PathLike[str],
    original: torch.Tensor,
    reconstruction: torch.Tensor,
    *,
    psnr: Sequence[float] | torch.Tensor | None = None,
    labels: Sequence[object] | None = None,
    title: str | None = None,
    scale: int = DEFAULT_SCALE,
) -> Path:
    """Render the grid (see `render_grid`) and write it to `path` as PNG, atomically."""
    return atomic_write_bytes(path, grid_png(original, reconstruction, psnr=psnr, labels=labels, title=title,
                                             scale=scale))


def grid_png(original: torch.Tensor, reconstruction: torch.Tensor, **options) -> bytes:
    """The grid (see `render_grid`, same options) as PNG bytes."""
    buffer = io.BytesIO()
    render_grid(original, reconstruction, **options).save(buffer, format="PNG")
    return buffer.getvalue()


def save_image(path: str | os.PathLike[str], image: torch.Tensor, *, rescale: bool = False,
               scale: int = DEFAULT_SCALE) -> Path:
    """One (C, H, W) image as PNG: clamped to [0, 1], or min-max `rescale`d; upscaled by `scale`."""
    img = _check_images(image[None] if isinstance(image, torch.Tensor) and image.dim() == 3 else image, "image")
    img = (_rescaled(img) if rescale else _clamped(img))[0]
    buffer = io.BytesIO()
    _to_pixels(img, scale).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


__all__ = ["DEFAULT_SCALE", "GridLayout", "ROWS", "grid_layout", "render_grid", "save_grid", "save_image"]
