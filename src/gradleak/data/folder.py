"""Any image folder with one subfolder per class (sorted names are the classes).

Images are read with Pillow, converted to RGB (or L when all are grayscale) and resized
to 32x32 unless they already share one size (`--image-size` resizes afterwards). The
split is every fifth image of each class to "test"; normalization is computed from the
train split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gradleak.data.base import ImageDataset, channel_stats, split_indices
from gradleak.errors import CorruptFileError, DatasetNotFoundError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_SIZE = 32


def image_folder(root: Path | None, split: str, download: bool) -> ImageDataset:
    from PIL import Image, UnidentifiedImageError

    if root is None or not Path(root).is_dir():
        raise DatasetNotFoundError(f"folder dataset needs --data-root pointing at an existing folder, got {root}")
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((root / name).iterdir())
             if f.suffix.lower() in EXTENSIONS]
    if not files:
        raise DatasetNotFoundError(f"no images ({', '.join(sorted(EXTENSIONS))}) in class subfolders of {root}")
    pictures = []
    for path, _ in files:
        try:
            with Image.open(path) as im:
                im.load()
                pictures.append(im.copy())
        except (UnidentifiedImageError, OSError) as exc:
            raise CorruptFileError(f"image {path} cannot be read: {exc}") from None
    gray = all(p.mode in ("L", "1", "I;16", "I") for p in pictures)
    sizes = {p.size for p in pictures}
    size = next(iter(sizes)) if len(sizes) == 1 else (DEFAULT_SIZE, DEFAULT_SIZE)
    arrays = []
    for p in pictures:
        p = p.convert("L" if gray else "RGB")
        if p.size != size:
            p = p.resize(size, Image.BILINEAR)
        a = np.asarray(p, dtype=np.float32) / 255.0
        arrays.append(a[None] if gray else a.transpose(2, 0, 1))
    images = torch.from_numpy(np.stack(arrays))
    labels = torch.tensor([c for _, c in files], dtype=torch.long)
    per_class = [[i for i, (_, c) in enumerate(files) if c == k] for k in range(len(classes))]
    chosen = {s: sorted(i for idx in per_class for j, i in enumerate(idx) if j in split_indices(len(idx), s))
              for s in ("train", "test")}
    norm = channel_stats(images[chosen["train"]] if chosen["train"] else images)
    idx = chosen[split]
    return ImageDataset("folder", images[idx], labels[idx], tuple(classes), norm, f"image folder {root} ({split})")
