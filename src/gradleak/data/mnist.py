"""MNIST and Fashion-MNIST from IDX files (LeCun et al. 1998; Xiao et al. 2017).

Files {train,t10k}-{images-idx3,labels-idx1}-ubyte, gzipped (.gz) or not, are looked
for in root, root/raw, root/MNIST/raw (root/FashionMNIST/raw), which is torchvision's
layout, and root/MNIST (root/FashionMNIST). --download puts them in root.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from gradleak.data.base import ImageDataset, Normalization
from gradleak.data.download import FASHION_MNIST, MNIST, Resource, fetch
from gradleak.errors import CorruptFileError, DatasetNotFoundError

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX array of unsigned bytes with `ndim` dimensions (magic 0x00 0x00 0x08 ndim)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:  # includes a truncated or non-gzip .gz
        raise CorruptFileError(f"{path} cannot be read: {exc}") from None
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != ndim:
        raise CorruptFileError(f"{path} is not an IDX file of {ndim}-d unsigned bytes (bad magic number "
                               f"{raw[:4].hex() or 'missing'}, expected 000008{ndim:02x})")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim :]
    expected = int(np.prod(dims, dtype=np.int64))
    if len(body) != expected:
        raise CorruptFileError(f"{path} holds {len(body)} data bytes, its header {dims} promises {expected}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find(root: Path, stem: str, subdirs: tuple[str, ...]) -> Path | None:
    for sub in subdirs:
        for name in (stem, stem + ".gz"):
            p = root / sub / name
            if p.is_file():
                return p
    return None


def load_idx_dataset(name: str, root: Path | None, split: str, download: bool, resources: tuple[Resource, ...],
                     subdir: str, classes: tuple[str, ...], norm: Normalization) -> ImageDataset:
    if root is None:
        raise DatasetNotFoundError(f"{name} needs --data-root: the folder holding its IDX files, or where "
                                   "--download should put them")
    root = Path(root).expanduser()
    prefix = "train" if split == "train" else "t10k"
    subdirs = ("", "raw", f"{subdir}/raw", subdir)
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    images_path, labels_path = (_find(root, s, subdirs) for s in stems)
    if (images_path is None or labels_path is None) and download:
        for r in resources:
            fetch(r, root)
        images_path, labels_path = (_find(root, s, subdirs) for s in stems)
    if images_path is None or labels_path is None:
        missing = [str(root / s) + "[.gz]" for s, p in zip(stems, (images_path, labels_path)) if p is None]
        raise DatasetNotFoundError(f"{name} files not found: {', '.join(missing)} (also looked in "
                                   f"raw/, {subdir}/raw/, {subdir}/); pass --download to fetch them")
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise CorruptFileError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if labels.size and labels.max() >= len(classes):
        raise CorruptFileError(f"{labels_path} has label {int(labels.max())}, expected 0..{len(classes) - 1}")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return ImageDataset(name, x, torch.from_numpy(labels.astype(np.int64)), classes, norm,
                        f"{name} IDX files in {images_path.parent} ({split})")


def mnist(root: Path | None, split: str, download: bool) -> ImageDataset:
    return load_idx_dataset("mnist", root, split, download, MNIST, "MNIST", tuple(str(i) for i in range(10)),
                            Normalization((0.1307,), (0.3081,)))


def fashion_mnist(root: Path | None, split: str, download: bool) -> ImageDataset:
    return load_idx_dataset("fashion-mnist", root, split, download, FASHION_MNIST, "FashionMNIST", FASHION_CLASSES,
                            Normalization((0.2860,), (0.3530,)))
