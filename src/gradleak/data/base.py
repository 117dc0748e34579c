"""The dataset record: images in [0, 1] pixel space plus the normalization models see."""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from gradleak.errors import GradleakError


@dataclass(frozen=True)
class Normalization:
    """Per-channel (x - mean) / std; part of the dataset description, undone before metrics."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.mean or len(self.mean) != len(self.std):
            raise GradleakError(f"Normalization mean and std must have one value per channel, got "
                                f"mean={self.mean!r}, std={self.std!r}")
        if any(not s > 0 for s in self.std):
            raise GradleakError(f"Normalization std must be positive, got {self.std!r}")

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() not in (3, 4) or x.shape[-3] != len(self.mean):
            raise GradleakError(f"images to (de)normalize must be (N, {len(self.mean)}, H, W) or "
                                f"({len(self.mean)}, H, W), got shape {tuple(x.shape)}")
        view = (-1, 1, 1) if x.dim() == 3 else (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).reshape(view)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).reshape(view)
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return x * std + mean

    def bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (low, high) in model space of pixels 0 and 1: the attacker's box."""
        return (tuple((0.0 - m) / s for m, s in zip(self.mean, self.std)),
                tuple((1.0 - m) / s for m, s in zip(self.mean, self.std)))


@dataclass(frozen=True)
class ImageDataset:
    """Images (N, C, H, W) float32 in [0, 1], int64 labels, class names, normalization, source."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    normalization: Normalization
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = (int(s) for s in self.images.shape[1:])
        return c, h, w

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel-space images, labels) at `indices`; bad indices raise naming the valid range."""
        try:
            idx = [operator.index(i) for i in indices]
        except TypeError:
            raise GradleakError(f"indices must be integers, got {list(indices)!r}") from None
        if not idx:
            raise GradleakError("indices must name at least one image, got none")
        bad = [i for i in idx if not 0 <= i < len(self)]
        if bad:
            raise GradleakError(f"indices must lie in [0, {len(self) - 1}] for dataset {self.name!r} "
                                f"({len(self)} images), got {bad[0] if len(bad) == 1 else bad}")
        if len(set(idx)) != len(idx):
            dup = sorted(i for i, k in Counter(idx).items() if k > 1)
            raise GradleakError(f"indices must be distinct, got {dup[0] if len(dup) == 1 else dup} more than once")
        return self.images[idx].clone(), self.labels[idx].clone()

    def resized(self, size: int) -> "ImageDataset":
        """A copy with square `size` x `size` images (antialiased bilinear, clamped to [0, 1])."""
        size = check_image_size(size)
        if tuple(self.images.shape[-2:]) == (size, size):
            return self
        from gradleak.memory import check_fits

        n, c = self.images.shape[:2]
        check_fits(f"image_size {size} on the {n} images of {self.name!r}", 2 * n * c * size * size * 4,
                   "choose a smaller --image-size")
        return ImageDataset(self.name, resize_images(self.images, size, size), self.labels, self.classes,
                            self.normalization, f"{self.source}, resized to {size}x{size}")


def check_image_size(size: object) -> int:
    """`size` as a positive int, or a GradleakError naming `image_size`."""
    try:
        value = operator.index(size)  # type: ignore[arg-type]
    except TypeError:
        value = 0
    if isinstance(size, bool) or value < 1:
        raise GradleakError(f"image_size must be a positive integer, got {size!r}")
    return value


def resize_images(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bilinear resize of (N, C, H, W) pixel-space images, clamped back to [0, 1]."""
    if images.shape[0] == 0:
        return images.new_zeros(0, images.shape[1], height, width)
    out = F.interpolate(images, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return out.clamp(0, 1)


def channel_stats(images: torch.Tensor) -> Normalization:
    """Per-channel mean and std of a set of images, rounded like published constants."""
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3)  # a constant channel must not divide by zero
    return Normalization(tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std))


def split_indices(n: int, split: str) -> list[int]:
    """Deterministic 80/20 split: every fifth item (4, 9, ...) goes to "test", so item 0 stays in "train"."""
    if split == "test":
        return [i for i in range(n) if i % 5 == 4]
    return [i for i in range(n) if i % 5 != 4]
