"""CIFAR-10 / CIFAR-100 from local files (Krizhevsky 2009), python or binary format.

`root` holds the extracted folder (cifar-10-batches-py, cifar-10-batches-bin,
cifar-100-python or cifar-100-binary) or the official .tar.gz, which is extracted in
place with member paths checked. Pickles go through the restricted unpickler.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gradleak.data.base import ImageDataset, Normalization
from gradleak.data.download import CIFAR10, CIFAR100, Resource, fetch
from gradleak.data.safe_pickle import safe_load
from gradleak.errors import CorruptFileError, DatasetNotFoundError, GradleakError


@dataclass(frozen=True)
class CifarFormat:
    name: str
    python_dir: str
    binary_dir: str
    python_files: dict[str, tuple[str, ...]]
    binary_files: dict[str, tuple[str, ...]]
    label_key: bytes
    meta_file: str
    meta_key: bytes
    binary_meta: str
    label_bytes: int  # CIFAR-100 binary records carry coarse and fine labels
    resource: Resource
    normalization: Normalization


C10 = CifarFormat(
    "cifar10", "cifar-10-batches-py", "cifar-10-batches-bin",
    {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
    b"labels", "batches.meta", b"label_names", "batches.meta.txt", 1, CIFAR10,
    Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
)
C100 = CifarFormat(
    "cifar100", "cifar-100-python", "cifar-100-binary",
    {"train": ("train",), "test": ("test",)}, {"train": ("train.bin",), "test": ("test.bin",)},
    b"fine_labels", "meta", b"fine_label_names", "fine_label_names.txt", 2, CIFAR100,
    Normalization((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
)


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive, refusing members that would land outside `dest`."""
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                target = (dest / member.name).resolve()
                if not str(target).startswith(str(dest.resolve())) or member.issym() or member.islnk():
                    raise CorruptFileError(f"{archive}: member {member.name!r} would escape {dest}")
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CorruptFileError(f"{archive} is not a readable tar archive: {exc}") from None


def _read_python(folder: Path, fmt: CifarFormat, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    data, labels = [], []
    for fname in fmt.python_files[split]:
        with open(folder / fname, "rb") as fh:
            batch = safe_load(fh, source=str(folder / fname))
        if not isinstance(batch, dict) or b"data" not in batch or fmt.label_key not in batch:
            raise CorruptFileError(f"{folder / fname} lacks the keys 'data' and {fmt.label_key.decode()!r}")
        data.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[fmt.label_key], dtype=np.int64))
    classes: tuple[str, ...] = ()
    meta = folder / fmt.meta_file
    if meta.is_file():
        with open(meta, "rb") as fh:
            names = safe_load(fh, source=str(meta)).get(fmt.meta_key, [])
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return np.concatenate(data), np.concatenate(labels), classes


def _read_binary(folder: Path, fmt: CifarFormat, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    record = fmt.label_bytes + 3072
    data, labels = [], []
    for fname in fmt.binary_files[split]:
        raw = np.fromfile(folder / fname, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise CorruptFileError(f"{folder / fname} has {raw.size} bytes, not a multiple of {record}-byte records")
        rows = raw.reshape(-1, record)
        labels.append(rows[:, fmt.label_bytes - 1].astype(np.int64))  # the fine label is the last label byte
        data.append(rows[:, fmt.label_bytes:].reshape(-1, 3, 32, 32))
    meta = folder / fmt.binary_meta
    classes = tuple(line.strip() for line in meta.read_text().splitlines() if line.strip()) if meta.is_file() else ()
    return np.concatenate(data), np.concatenate(labels), classes


def _complete(folder: Path, files: tuple[str, ...]) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in files)


def load_cifar(fmt: CifarFormat, root: Path | None, split: str, download: bool) -> ImageDataset:
    if root is None:
        raise DatasetNotFoundError(f"{fmt.name} needs --data-root pointing at its files (or add --download)")
    root = Path(root).expanduser()
    py, binary = root / fmt.python_dir, root / fmt.binary_dir
    if not (_complete(py, fmt.python_files[split]) or _complete(binary, fmt.binary_files[split])):
        archive = root / fmt.resource.filename
        if download:
            archive = fetch(fmt.resource, root)
        if archive.is_file():
            safe_extract(archive, root)
    if _complete(py, fmt.python_files[split]):
        data, labels, classes = _read_python(py, fmt, split)
        source = f"{fmt.name} python format in {py}"
    elif _complete(binary, fmt.binary_files[split]):
        data, labels, classes = _read_binary(binary, fmt, split)
        source = f"{fmt.name} binary format in {binary}"
    else:
        raise DatasetNotFoundError(
            f"{fmt.name} files not found under {root} (expected {fmt.python_dir}/ or {fmt.binary_dir}/ "
            f"or {fmt.resource.filename}); pass --download to fetch them"
        )
    n_classes = 10 if fmt is C10 else 100
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise CorruptFileError(f"{source}: labels outside [0, {n_classes - 1}]")
    if len(classes) != n_classes:
        classes = tuple(str(i) for i in range(n_classes))
    images = torch.from_numpy(data.astype(np.float32) / 255.0)
    return ImageDataset(fmt.name, images, torch.from_numpy(labels), classes, fmt.normalization, f"{source} ({split})")


def cifar10(root: Path | None, split: str, download: bool) -> ImageDataset:
    return load_cifar(C10, root, split, download)


def cifar100(root: Path | None, split: str, download: bool) -> ImageDataset:
    return load_cifar(C100, root, split, download)


__all__ = ["cifar10", "cifar100", "safe_extract", "GradleakError"]
