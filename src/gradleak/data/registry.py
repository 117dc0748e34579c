"""The data set registry; factories take (root, split, download) and return an ImageDataset."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from gradleak.checks import check_bool
from gradleak.data.base import ImageDataset, check_image_size
from gradleak.data.builtin import digits, faces, photos
from gradleak.data.cifar import cifar10, cifar100
from gradleak.data.folder import image_folder
from gradleak.data.mnist import fashion_mnist, mnist
from gradleak.errors import GradleakError
from gradleak.registry import Registry

DatasetFactory = Callable[..., ImageDataset]
SPLITS = ("train", "test")

DATASETS: Registry[DatasetFactory] = Registry("dataset")
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
    """Load a registered dataset as an `ImageDataset` in [0, 1] pixel space, optionally resized square."""
    factory = DATASETS.get(name)
    if split not in SPLITS:
        raise GradleakError(f"split must be 'train' or 'test', got {split!r}")
    if root is not None and not isinstance(root, (str, Path)):
        raise GradleakError(f"data_root must be a folder path, got {root!r}")
    check_bool("download", download)
    size = None if image_size is None else check_image_size(image_size)
    path = None if root is None or str(root) == "" else Path(root).expanduser()
    if size is not None and "image_size" in inspect.signature(factory).parameters:
        # factories that read images of mixed sizes resize once, straight to the asked size
        data = factory(path, split, download, image_size=size)
    else:
        data = factory(path, split, download)
    return data if size is None else data.resized(size)



__all__ = ["DATASETS", "SPLITS", "load_dataset"]
