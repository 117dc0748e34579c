"""The dataset record: images in [0, 1] pixel space plus the normalization models see."""

from __future__ import annotations

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

    def _shape(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        view = (-1, 1, 1) if x.dim() == 3 else (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).reshape(view)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).reshape(view)
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._shape(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._shape(x)
        return x * std + mean


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
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel-space images, labels) at `indices`; bad indices raise naming the valid range."""
        idx = [int(i) for i in indices]
        if not idx:
            raise GradleakError("indices must name at least one image, got none")
        bad = [i for i in idx if not 0 <= i < len(self)]
        if bad:
            raise GradleakError(f"indices must lie in [0, {len(self) - 1}] for dataset {self.name!r}, got {bad}")
        if len(set(idx)) != len(idx):
            raise GradleakError(f"indices must be distinct, got {idx}")
        return self.images[idx].clone(), self.labels[idx].clone()

    def resized(self, size: int) -> "ImageDataset":
        if not isinstance(size, int) or size < 1:
            raise GradleakError(f"image_size must be a positive integer, got {size!r}")
        if self.images.shape[-2:] == (size, size):
            return self
        images = F.interpolate(self.images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return ImageDataset(self.name, images.clamp(0, 1), self.labels, self.classes, self.normalization,
                            f"{self.source}, resized to {size}x{size}")


def channel_stats(images: torch.Tensor) -> Normalization:
    """Per-channel mean and std of a set of images."""
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return Normalization(tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std))


def split_indices(n: int, split: str) -> list[int]:
    """Deterministic 80/20 split: every fifth item (4, 9, ...) goes to "test"."""
    if split == "test":
        return [i for i in range(n) if i % 5 == 4]
    return [i for i in range(n) if i % 5 != 4]
