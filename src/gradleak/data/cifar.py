"""CIFAR-10 / CIFAR-100 from local files (Krizhevsky 2009), python or binary format.

`root` is the folder holding the extracted folder (cifar-10-batches-py,
cifar-10-batches-bin, cifar-100-python or cifar-100-binary), that folder itself, or a
folder holding the official python .tar.gz, which is then extracted next to it with
member paths checked. Pickles go through the restricted unpickler. CIFAR-100 uses the
fine (100-class) labels.
"""

from __future__ import annotations

import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradleak.data.base import ImageDataset, Normalization
from gradleak.data.download import CIFAR10, CIFAR100, Resource, fetch
from gradleak.data.safe_pickle import safe_load
from gradleak.errors import CorruptFileError, DatasetNotFoundError

log = logging.getLogger(__name__)
Arrays = tuple[np.ndarray, np.ndarray, tuple[str, ...]]


@dataclass(frozen=True)
class CifarFormat:
    name: str
    num_classes: int
    python_dir: str
    binary_dir: str
    python_files: dict[str, tuple[str, ...]]
    binary_files: dict[str, tuple[str, ...]]
    label_key: str
    meta_file: str
    meta_key: str
    binary_meta: str
    label_bytes: int  # CIFAR-100 binary records carry a coarse then a fine label byte
    resource: Resource
    normalization: Normalization


C10 = CifarFormat(
    "cifar10", 10, "cifar-10-batches-py", "cifar-10-batches-bin",
    {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
    "labels", "batches.meta", "label_names", "batches.meta.txt", 1, CIFAR10,
    Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
)
C100 = CifarFormat(
    "cifar100", 100, "cifar-100-python", "cifar-100-binary",
    {"train": ("train",), "test": ("test",)}, {"train": ("train.bin",), "test": ("test.bin",)},
    "fine_labels", "meta", "fine_label_names", "fine_label_names.txt", 2, CIFAR100,
    Normalization((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
)


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive, refusing links and members that would land outside `dest`."""
    base = dest.resolve()
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                if m.issym() or m.islnk() or not (base / m.name).resolve().is_relative_to(base):
                    raise CorruptFileError(f"{archive}: member {m.name!r} would escape {dest}; nothing extracted")
            if hasattr(tarfile, "data_filter"):  # defence in depth where the stdlib offers it
                tar.extractall(dest, members=members, filter="data")
            else:
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CorruptFileError(f"{archive} is not a readable tar archive: {exc}") from None


def _decode_keys(obj: Any, path: Path) -> dict[str, Any]:
    # the official files are python-2 pickles, so with encoding="bytes" their keys are bytes
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{path} should hold a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _read_python(folder: Path, fmt: CifarFormat, split: str) -> Arrays:
    data, labels = [], []
    for fname in fmt.python_files[split]:
        path = folder / fname
        with open(path, "rb") as fh:
            batch = _decode_keys(safe_load(fh, source=str(path)), path)
        if "data" not in batch or fmt.label_key not in batch:
            raise CorruptFileError(f"{path} lacks the keys 'data' and {fmt.label_key!r}")
        x = np.asarray(batch["data"])
        y = np.asarray(batch[fmt.label_key])
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or y.shape != (len(x),):
            raise CorruptFileError(f"{path} should hold uint8 data of shape (N, 3072) and N labels, got data "
                                   f"{x.dtype} {x.shape} and labels {y.shape}")
        data.append(x.reshape(-1, 3, 32, 32))
        labels.append(y.astype(np.int64))
    classes: tuple[str, ...] = ()
    meta = folder / fmt.meta_file
    if meta.is_file():
        with open(meta, "rb") as fh:
            names = _decode_keys(safe_load(fh, source=str(meta)), meta).get(fmt.meta_key, [])
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return np.concatenate(data), np.concatenate(labels), classes


def _read_binary(folder: Path, fmt: CifarFormat, split: str) -> Arrays:
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
    classes = tuple(ln.strip() for ln in meta.read_text().splitlines() if ln.strip()) if meta.is_file() else ()
    return np.concatenate(data), np.concatenate(labels), classes


def _locate(root: Path, fmt: CifarFormat, split: str) -> tuple[Path, str] | None:
    """The folder holding complete files for `split` and its format, python preferred."""
    for folder, kind, files in ((root / fmt.python_dir, "python", fmt.python_files[split]),
                                (root, "python", fmt.python_files[split]),
                                (root / fmt.binary_dir, "binary", fmt.binary_files[split]),
                                (root, "binary", fmt.binary_files[split])):
        if folder.is_dir() and all((folder / f).is_file() for f in files):
            return folder, kind
    return None


def load_cifar(fmt: CifarFormat, root: Path | None, split: str, download: bool) -> ImageDataset:
    if root is None:
        raise DatasetNotFoundError(f"{fmt.name} needs --data-root: the folder holding its files, or where "
                                   "--download should put them")
    root = Path(root).expanduser()
    found = _locate(root, fmt, split)
    if found is None:
        archive = root / fmt.resource.filename
        if download:
            archive = fetch(fmt.resource, root)
        if archive.is_file():
            log.info("extracting %s", archive)
            safe_extract(archive, root)
            found = _locate(root, fmt, split)
    if found is None:
        raise DatasetNotFoundError(
            f"{fmt.name} files not found under {root} (expected {root / fmt.python_dir} or "
            f"{root / fmt.binary_dir} or {root / fmt.resource.filename}); pass --download to fetch them"
        )
    folder, kind = found
    data, labels, classes = (_read_python if kind == "python" else _read_binary)(folder, fmt, split)
    source = f"{fmt.name} {kind} format in {folder}"
    if labels.size and (labels.min() < 0 or labels.max() >= fmt.num_classes):
        raise CorruptFileError(f"{source}: labels outside [0, {fmt.num_classes - 1}]")
    if len(classes) != fmt.num_classes:  # meta file missing or odd: numbered classes still work
        classes = tuple(str(i) for i in range(fmt.num_classes))
    images = torch.from_numpy(data.astype(np.float32) / 255.0)
    return ImageDataset(fmt.name, images, torch.from_numpy(labels), classes, fmt.normalization,
                        f"{source} ({split})")


def cifar10(root: Path | None, split: str, download: bool) -> ImageDataset:
    return load_cifar(C10, root, split, download)


def cifar100(root: Path | None, split: str, download: bool) -> ImageDataset:
    return load_cifar(C100, root, split, download)
