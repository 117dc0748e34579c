"""Built-in offline datasets made from data that scikit-image and scikit-learn ship.

`photos`: 32x32 colour images from the 8 natural photographs inside the scikit-image
package: items 0..7 are each whole photo (centre square) as a thumbnail, the most
recognizable (item 0 is the astronaut), then the non-overlapping 32x32 tiles of each
photo downscaled to a 128-pixel short side, nearly flat tiles dropped. Class = photo.
`faces`: scikit-image's LFW subset (its docstring: the first 100 are faces, the last
100 non-faces), 25x25 grayscale resized to 32x32. `digits`: scikit-learn's 8x8
handwritten digits (values 0..16) resized to 32x32.

`root` and `download` are ignored. Splits send every fifth item to "test". The
normalization is the per-channel mean/std of the train split, computed when the data
is first built (and rounded to 4 decimals), not a published constant.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gradleak.data.base import ImageDataset, channel_stats, resize_images, split_indices

# photographs whose files ship inside the scikit-image wheel; read directly so that no
# code path can reach scikit-image's pooch downloader
PHOTO_FILES = {"astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png",
               "rocket": "rocket.jpg", "motorcycle": "motorcycle_left.png", "hubble": "hubble_deep_field.jpg",
               "immunohistochemistry": "ihc.png", "retina": "retina.jpg"}
PHOTOS = tuple(PHOTO_FILES)
SIZE = 32
TILE_SOURCE_SHORT_SIDE = 128
# per-channel spatial std; a whole-tile std would count the colour of flat blue sky as detail
FLAT_TILE_STD = 0.04

Arrays = tuple[torch.Tensor, torch.Tensor]


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return resize_images(x[None], height, width)[0]


def photo_items(x: torch.Tensor) -> list[torch.Tensor]:
    """The thumbnail of photo `x` (3, H, W), then its non-flat tiles in row-major order."""
    _, h, w = x.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    items = [_resize(x[:, top : top + s, left : left + s], SIZE, SIZE)]
    scale = TILE_SOURCE_SHORT_SIDE / s
    small = _resize(x, max(SIZE, round(h * scale)), max(SIZE, round(w * scale)))
    for i in range(0, small.shape[1] - SIZE + 1, SIZE):
        for j in range(0, small.shape[2] - SIZE + 1, SIZE):
            tile = small[:, i : i + SIZE, j : j + SIZE]
            if float(tile.std(dim=(1, 2)).max()) >= FLAT_TILE_STD:
                items.append(tile)
    return items


@functools.lru_cache(maxsize=1)
def _photos() -> Arrays:
    import skimage.data
    from PIL import Image

    folder = Path(skimage.data.__file__).parent
    thumbs, tiles, thumb_labels, tile_labels = [], [], [], []
    for label, name in enumerate(PHOTOS):
        with Image.open(folder / PHOTO_FILES[name]) as im:
            items = photo_items(_to_tensor(np.asarray(im.convert("RGB"))))
        thumbs.append(items[0])
        thumb_labels.append(label)
        tiles += items[1:]
        tile_labels += [label] * (len(items) - 1)
    return torch.stack(thumbs + tiles), torch.tensor(thumb_labels + tile_labels, dtype=torch.long)


@functools.lru_cache(maxsize=1)
def _faces() -> Arrays:
    import skimage.data

    raw = np.asarray(skimage.data.lfw_subset(), dtype=np.float32)  # floats in [0, 1] despite the docs' uint8
    if raw.max() > 1.0:
        raw = raw / 255.0
    images = resize_images(torch.from_numpy(raw)[:, None], SIZE, SIZE)
    half = len(images) // 2
    return images, torch.tensor([0] * half + [1] * (len(images) - half), dtype=torch.long)


@functools.lru_cache(maxsize=1)
def _digits() -> Arrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    raw = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    return resize_images(raw, SIZE, SIZE), torch.from_numpy(d.target.astype(np.int64))


def _builtin(name: str, loader: Callable[[], Arrays], classes: tuple[str, ...], source: str,
             split: str) -> ImageDataset:
    images, labels = loader()
    norm = channel_stats(images[split_indices(len(images), "train")])
    idx = split_indices(len(images), split)  # list indexing copies, so callers cannot touch the cache
    return ImageDataset(name, images[idx], labels[idx], classes, norm, f"{source} ({split} split)")


def photos(root: Path | None, split: str, download: bool) -> ImageDataset:
    return _builtin("photos", _photos, PHOTOS, "scikit-image's photographs, 32x32 thumbnails and tiles", split)


def faces(root: Path | None, split: str, download: bool) -> ImageDataset:
    return _builtin("faces", _faces, ("face", "non-face"), "scikit-image's LFW subset, 32x32 grayscale", split)


def digits(root: Path | None, split: str, download: bool) -> ImageDataset:
    return _builtin("digits", _digits, tuple(str(i) for i in range(10)),
                    "scikit-learn's handwritten digits, 8x8 resized to 32x32", split)
