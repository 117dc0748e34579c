"""MNIST and Fashion-MNIST from IDX files (LeCun et al. 1998; Xiao et al. 2017).

Looks in root, root/raw, root/MNIST/raw or root/FashionMNIST/raw for
{train,t10k}-{images-idx3,labels-idx1}-ubyte, gzipped or not.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from gradleak.data.base import ImageDataset, Normalization
from gradleak.data.download import FASHION_MNIST, MNIST, fetch
from gradleak.errors import CorruptFileError, DatasetNotFoundError

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX array of unsigned bytes with `ndim` dimensions (magic 0x0000 08 ndim)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise CorruptFileError(f"{path} cannot be read: {exc}") from None
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != ndim:
        raise CorruptFileError(f"{path} is not an IDX file of {ndim}-d unsigned bytes (bad magic number)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise CorruptFileError(f"{path} holds {len(body)} data bytes, its header promises {int(np.prod(dims))}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find(root: Path, stem: str, subdirs: tuple[str, ...]) -> Path | None:
    for sub in subdirs:
        for name in (stem, stem + ".gz"):
            p = root / sub / name
            if p.is_file():
                return p
    return None


def load_idx_dataset(name, root, split, download, resources, subdir, classes, norm) -> ImageDataset:
    if root is None:
        raise DatasetNotFoundError(f"{name} needs --data-root pointing at its IDX files (or add --download)")
    root = Path(root).expanduser()
    prefix = "train" if split == "train" else "t10k"
    subdirs = ("", "raw", f"{subdir}/raw", subdir)
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find(root, s, subdirs) for s in stems]
    if any(p is None for p in paths) and download:
        for r in resources:
            fetch(r, root)
        paths = [_find(root, s, subdirs) for s in stems]
    if any(p is None for p in paths):
        missing = [s for s, p in zip(stems, paths) if p is None]
        raise DatasetNotFoundError(f"{name} files {missing} (optionally .gz) not found under {root}; "
                                   "pass --download to fetch them")
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if len(images) != len(labels):
        raise CorruptFileError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return ImageDataset(name, x, torch.from_numpy(labels.astype(np.int64)), classes, norm,
                        f"{name} IDX files in {paths[0].parent} ({split})")


def mnist(root: Path | None, split: str, download: bool) -> ImageDataset:
    return load_idx_dataset("mnist", root, split, download, MNIST, "MNIST", tuple(str(i) for i in range(10)),
                            Normalization((0.1307,), (0.3081,)))


def fashion_mnist(root: Path | None, split: str, download: bool) -> ImageDataset:
    return load_idx_dataset("fashion-mnist", root, split, download, FASHION_MNIST, "FashionMNIST", FASHION_CLASSES,
                            Normalization((0.2860,), (0.3530,)))
