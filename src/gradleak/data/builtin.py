"""Built-in offline datasets made from data that scikit-image and scikit-learn ship.

`photos`: 32x32 colour images from scikit-image's photographs: first each whole photo
(centre square) as a thumbnail, the most recognizable, then 32x32 tiles of each photo
downscaled to a 128-pixel short side, nearly flat tiles dropped. Class = photo.
`faces`: scikit-image's LFW subset, 100 faces then 100 non-faces, 25x25 grayscale
resized to 32x32. `digits`: scikit-learn's 8x8 handwritten digits resized to 32x32.
Splits are every fifth item to "test"; normalization is the train split's statistics.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gradleak.data.base import ImageDataset, Normalization, channel_stats, split_indices

# photographs whose files ship inside the scikit-image wheel (read directly: no pooch download)
PHOTO_FILES = {"astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png",
               "rocket": "rocket.jpg", "motorcycle": "motorcycle_left.png", "hubble": "hubble_deep_field.jpg",
               "immunohistochemistry": "ihc.png", "retina": "retina.jpg"}
PHOTOS = tuple(PHOTO_FILES)
TILE_SOURCE_SHORT_SIDE = 128
FLAT_TILE_STD = 0.04


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    arr = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(arr[..., :3].copy()).permute(2, 0, 1)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[torch.Tensor, torch.Tensor]:
    import skimage.data
    from PIL import Image

    folder = Path(skimage.data.__file__).parent
    thumbs, tiles, thumb_labels, tile_labels = [], [], [], []
    for label, name in enumerate(PHOTOS):
        with Image.open(folder / PHOTO_FILES[name]) as im:
            x = _to_tensor(np.asarray(im.convert("RGB")))
        _, h, w = x.shape
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        thumbs.append(_resize(x[:, top : top + s, left : left + s], (32, 32)))
        thumb_labels.append(label)
        scale = TILE_SOURCE_SHORT_SIDE / s
        small = _resize(x, (max(32, round(h * scale)), max(32, round(w * scale))))
        for i in range(0, small.shape[1] - 31, 32):
            for j in range(0, small.shape[2] - 31, 32):
                tile = small[:, i : i + 32, j : j + 32]
                if float(tile.std()) >= FLAT_TILE_STD:
                    tiles.append(tile)
                    tile_labels.append(label)
    images = torch.stack(thumbs + tiles)
    labels = torch.tensor(thumb_labels + tile_labels, dtype=torch.long)
    return images, labels


@functools.lru_cache(maxsize=1)
def _faces() -> tuple[torch.Tensor, torch.Tensor]:
    import skimage.data

    raw = torch.from_numpy(skimage.data.lfw_subset().astype(np.float32))[:, None]
    images = F.interpolate(raw, size=(32, 32), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    labels = torch.tensor([0] * 100 + [1] * 100, dtype=torch.long)
    return images, labels


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    raw = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    images = F.interpolate(raw, size=(32, 32), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return images, torch.from_numpy(d.target.astype(np.int64))


def _builtin(name: str, loader, classes: tuple[str, ...], source: str, split: str) -> ImageDataset:
    images, labels = loader()
    train = split_indices(len(images), "train")
    norm: Normalization = channel_stats(images[train])
    idx = split_indices(len(images), split)
    return ImageDataset(name, images[idx], labels[idx], classes, norm, f"{source} ({split} split)")


def photos(root: Path | None, split: str, download: bool) -> ImageDataset:
    return _builtin("photos", _photos, PHOTOS, "scikit-image's photographs, 32x32 thumbnails and tiles", split)


def faces(root: Path | None, split: str, download: bool) -> ImageDataset:
    return _builtin("faces", _faces, ("face", "non-face"), "scikit-image's LFW subset, 32x32 grayscale", split)


def digits(root: Path | None, split: str, download: bool) -> ImageDataset:
    return _builtin("digits", _digits, tuple(str(i) for i in range(10)),
                    "scikit-learn's handwritten digits, 8x8 resized to 32x32", split)
