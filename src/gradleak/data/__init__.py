"""Datasets, registered by name; factories take (root, split, download)."""

from __future__ import annotations

from pathlib import Path

from gradleak.data.base import ImageDataset, Normalization
from gradleak.data.builtin import digits, faces, photos
from gradleak.data.cifar import cifar10, cifar100
from gradleak.data.folder import image_folder
from gradleak.data.mnist import fashion_mnist, mnist
from gradleak.errors import GradleakError
from gradleak.registry import Registry

DATASETS: Registry = Registry("dataset")
DATASETS.add("photos", photos, "built-in: 32x32 colour thumbnails and tiles of scikit-image's 8 photographs")
DATASETS.add("faces", faces, "built-in: scikit-image's LFW subset, 100 faces + 100 non-faces, 32x32 gray")
DATASETS.add("digits", digits, "built-in: scikit-learn's 1797 handwritten digits, 32x32 gray")
DATASETS.add("cifar10", cifar10, "CIFAR-10 from --data-root (python or binary format)")
DATASETS.add("cifar100", cifar100, "CIFAR-100 from --data-root (python or binary format), fine labels")
DATASETS.add("mnist", mnist, "MNIST from --data-root (IDX, gzipped or not)")
DATASETS.add("fashion-mnist", fashion_mnist, "Fashion-MNIST from --data-root (IDX, gzipped or not)")
DATASETS.add("folder", image_folder, "any folder of images with one subfolder per class (--data-root)")


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    split: str = "train",
    download: bool = False,
    image_size: int | None = None,
) -> ImageDataset:
    """Load a registered dataset as an `ImageDataset` in [0, 1] pixel space."""
    factory = DATASETS.get(name)
    if split not in ("train", "test"):
        raise GradleakError(f"split must be 'train' or 'test', got {split!r}")
    data = factory(None if root is None else Path(root), split, download)
    return data if image_size is None else data.resized(image_size)


__all__ = ["DATASETS", "ImageDataset", "Normalization", "load_dataset"]
