"""Any image folder with one subfolder per class (sorted subfolder names are the classes).

Images (png, jpg, jpeg, bmp, gif, webp, tif) are read with Pillow and converted to RGB,
or to L when all are grayscale. They keep their size when they all share one and no
`image_size` is asked for; otherwise they are resized (antialiased) to `image_size`,
default 32 (`load_case` fits large images to the model zoo's 32 pixels, saying so).
Every fifth image of each class goes to "test"; normalization is the train split's
per-channel statistics. A class folder without images, or an image Pillow refuses as a
decompression bomb, is refused with its path.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gradleak.data.base import (
    ImageDataset,
    channel_stats,
    check_image_size,
    resize_images,
)
from gradleak.errors import CorruptFileError, DatasetNotFoundError, GradleakError

log = logging.getLogger(__name__)
EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DEFAULT_SIZE = 32
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})  # "I;16" as Pillow opens 16-bit PNGs


def _list_images(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    def hidden(p: Path) -> bool:  # .DS_Store, macOS "._x.png" resource forks
        return p.name.startswith(".")

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not hidden(p))
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((root / name).iterdir())
             if f.is_file() and not hidden(f) and f.suffix.lower() in EXTENSIONS]
    empty = [name for c, name in enumerate(classes) if not any(k == c for _, k in files)]
    if empty and files:
        raise GradleakError(f"class folder(s) {', '.join(repr(str(root / e)) for e in empty)} hold no images "
                            f"({', '.join(sorted(EXTENSIONS))}); every subfolder is a class: remove or fill them")
    return classes, files


def _to_array(picture: Image.Image, gray: bool) -> torch.Tensor:
    """(C, H, W) float32 in [0, 1]; 16-bit grayscale is scaled rather than clipped to 8 bits."""
    if gray and picture.mode in ("I", "I;16", "F"):
        a = np.asarray(picture, dtype=np.float32)
        a = a / (65535.0 if a.max() > 255 else 255.0) if picture.mode != "F" else a
        return torch.from_numpy(np.clip(a, 0, 1))[None]
    a = np.asarray(picture.convert("L" if gray else "RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a[None] if gray else a.transpose(2, 0, 1).copy())


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x if tuple(x.shape[1:]) == size else resize_images(x[None], *size)[0]


def image_folder(root: Path | None, split: str, download: bool, image_size: int | None = None) -> ImageDataset:
    """The `folder` dataset; `image_size` (optional) resizes while reading, avoiding a second resize."""
    if root is None:
        raise DatasetNotFoundError("folder dataset needs --data-root: a folder with one subfolder of images per class")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"folder dataset root {root} is not an existing folder")
    if download:
        log.info("folder dataset has nothing to download; ignoring download=True")
    classes, files = _list_images(root)
    if not files:
        raise DatasetNotFoundError(f"no images ({', '.join(sorted(EXTENSIONS))}) in class subfolders of {root}")
    pictures = []
    for path, _ in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    im.load()
                    pictures.append(im.copy())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise CorruptFileError(f"image {path} is refused: {exc} (a decompression bomb?)") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise CorruptFileError(f"image {path} cannot be read: {exc}") from None
    gray = all(p.mode in GRAY_MODES for p in pictures)
    sizes = {p.size for p in pictures}
    if image_size is not None:
        side = check_image_size(image_size)
        size = (side, side)
    else:  # PIL sizes are (width, height)
        size = next(iter(sizes))[::-1] if len(sizes) == 1 else (DEFAULT_SIZE, DEFAULT_SIZE)
        if len(sizes) > 1:
            log.warning("folder %s: images of %d sizes resized to %dx%d; --image-size N sets another size",
                        root, len(sizes), DEFAULT_SIZE, DEFAULT_SIZE)
    images = torch.stack([_resize(_to_array(p, gray), size) for p in pictures])
    labels = torch.tensor([c for _, c in files], dtype=torch.long)
    # every fifth image of each class, so that both splits hold every class
    rank = [0] * len(files)
    seen = [0] * len(classes)
    for i, (_, c) in enumerate(files):
        rank[i], seen[c] = seen[c], seen[c] + 1
    chosen = {"test": [i for i, r in enumerate(rank) if r % 5 == 4]}
    chosen["train"] = [i for i, r in enumerate(rank) if r % 5 != 4]
    if not chosen[split]:
        raise GradleakError(f"folder {root} has no {split} images: the test split takes every fifth image of "
                            "each class, so some class needs at least 5 images")
    norm = channel_stats(images[chosen["train"]])
    idx = chosen[split]
    return ImageDataset("folder", images[idx], labels[idx], tuple(classes), norm, f"image folder {root} ({split})")
