"""The reconstruction grid and the atomic file writers."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak import io as gio
from gradleak.errors import GradleakError
from gradleak.pipelines.figures import (
    DEFAULT_SCALE,
    grid_layout,
    render_grid,
    save_grid,
)

WHITE = 255


def batch(n=3, c=3, h=8, w=8, seed=0, low=0.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, c, h, w, generator=g, dtype=torch.float64)


def expected_block(img: torch.Tensor, scale: int) -> np.ndarray:
    """What a (C, H, W) image in [0, 1] should look like in the grid (H*s, W*s, 3)."""
    arr = np.rint(img.numpy() * 255).astype(np.uint8).transpose(1, 2, 0)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1)


def block(image: Image.Image, box) -> np.ndarray:
    return np.asarray(image.crop(box))


# ---------------------------------------------------------------- render_grid


def test_default_scale_makes_cifar_images_96_px():
    layout = grid_layout(4, 32, 32)
    assert DEFAULT_SCALE == 3
    assert (layout.cell_width, layout.cell_height) == (96, 96)


@pytest.mark.parametrize("channels", [1, 3])
def test_rows_show_original_clamped_and_rescaled(channels):
    scale = 2
    original = batch(c=channels, seed=1)
    recon = batch(c=channels, seed=2, low=-0.5, high=2.0)  # far outside [0, 1]
    image = render_grid(original, recon, scale=scale)
    layout = grid_layout(3, 8, 8, scale=scale)
    assert image.mode == "RGB" and image.size == (layout.width, layout.height)
    for col in range(3):
        np.testing.assert_array_equal(block(image, layout.cell_box(0, col)), expected_block(original[col], scale))
        np.testing.assert_array_equal(block(image, layout.cell_box(1, col)),
                                      expected_block(recon[col].clamp(0, 1), scale))
        r = recon[col]
        np.testing.assert_array_equal(block(image, layout.cell_box(2, col)),
                                      expected_block((r - r.min()) / (r.max() - r.min()), scale))
    if channels == 1:
        arr = block(image, layout.cell_box(0, 0))
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_cells_do_not_overlap_and_row_labels_are_drawn():
    layout = grid_layout(2, 8, 8, scale=3, title="t", with_labels=True, with_psnr=True)
    boxes = [layout.cell_box(r, c) for r in range(3) for c in range(2)]
    for i, a in enumerate(boxes):
        assert 0 <= a[0] and 0 <= a[1] and a[2] <= layout.width and a[3] <= layout.height
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    image = render_grid(batch(2), batch(2, seed=3), scale=3)
    plain = grid_layout(2, 8, 8, scale=3)
    for row in range(3):
        top, bottom = plain.cell_box(row, 0)[1], plain.cell_box(row, 0)[3]
        label_area = np.asarray(image.crop((0, top, plain.left, bottom)))
        assert (label_area < 128).any(), f"row {row} has no label"


def test_psnr_captions_labels_and_title():
    original, recon = batch(2), batch(2, seed=4)
    bare = render_grid(original, recon)
    full = render_grid(original, recon, psnr=[24.13, 9.0], labels=["cat", "dog"], title="a title")
    layout = grid_layout(2, 8, 8, title="a title", with_labels=True, with_psnr=True)
    assert full.size == (layout.width, layout.height) and full.size[1] > bare.size[1]
    arr = np.asarray(full)
    for top in (layout.title_top, layout.header_top, layout.caption_top):
        band = arr[top : top + layout.line_height]
        assert (band < 128).any()
    # the caption band sits between the reconstruction and rescaled rows
    assert layout.cell_box(1, 0)[3] <= layout.caption_top < layout.cell_box(2, 0)[1]
    # originals still render exactly with the extra text
    np.testing.assert_array_equal(block(full, layout.cell_box(0, 1)), expected_block(original[1], DEFAULT_SCALE))


def test_long_title_widens_canvas():
    x = batch(1, c=1)
    short = render_grid(x, x)
    long = render_grid(x, x, title="dlg on lenet, fedsgd: PSNR 12.3 dB, SSIM 0.123 " * 2)
    assert long.size[0] > short.size[0]


def test_rescaled_row_handles_constant_and_nan_images():
    original = batch(2, c=1)
    recon = torch.stack([torch.full((1, 8, 8), 7.0), torch.full((1, 8, 8), float("nan"))])
    image = render_grid(original, recon, scale=1)
    layout = grid_layout(2, 8, 8, scale=1)
    for col in range(2):
        assert (block(image, layout.cell_box(2, col)) == 128).all()
    assert (block(image, layout.cell_box(1, 0)) == 255).all()


def test_render_grid_rejects_bad_inputs():
    x = batch(2)
    with pytest.raises(GradleakError) as err:
        render_grid(x, x[:1])
    assert "(2, 3, 8, 8)" in str(err.value) and "(1, 3, 8, 8)" in str(err.value)
    with pytest.raises(GradleakError, match="channels"):
        render_grid(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(GradleakError, match="psnr"):
        render_grid(x, x, psnr=[1.0])
    with pytest.raises(GradleakError, match="scale"):
        render_grid(x, x, scale=0)


def test_save_grid_writes_png(tmp_path):
    original, recon = batch(2), batch(2, seed=5)
    path = save_grid(tmp_path / "grid.png", original, recon, psnr=torch.tensor([20.0, 30.0]), title="x")
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        np.testing.assert_array_equal(np.asarray(saved.convert("RGB")),
                                      np.asarray(render_grid(original, recon, psnr=[20.0, 30.0], title="x")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


# ---------------------------------------------------------------- atomic writers


def test_atomic_writers_round_trip(tmp_path):
    gio.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    gio.atomic_write_text(tmp_path / "b.txt", "héllo")
    gio.atomic_write_json(tmp_path / "c.json", {"psnr": 24.5, "n": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "c.json").read_text()) == {"psnr": 24.5, "n": [1, 2]}
    gio.atomic_write_text(tmp_path / "b.txt", "replaced")
    assert (tmp_path / "b.txt").read_text() == "replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.json"]


def test_new_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = gio.atomic_write_bytes(tmp_path / "m.bin", b"x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


@pytest.mark.parametrize("existing", [False, True])
def test_failed_replace_leaves_no_partial_or_temp_file(tmp_path, monkeypatch, existing):
    target = tmp_path / "out.json"
    if existing:
        target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(gio.os, "replace", broken_replace)
    for write in (lambda: gio.atomic_write_bytes(target, b"new" * 1000),
                  lambda: gio.atomic_write_text(target, "new"),
                  lambda: gio.atomic_write_json(target, {"new": 1})):
        with pytest.raises(OSError, match="disk on fire"):
            write()
        assert sorted(p.name for p in tmp_path.iterdir()) == (["out.json"] if existing else [])
        if existing:
            assert target.read_text() == "old"


def test_failed_write_midway_cleans_up(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(gio.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="fsync failed"):
        gio.atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert list(tmp_path.iterdir()) == []


def test_unserializable_json_and_missing_folder(tmp_path):
    with pytest.raises(TypeError):
        gio.atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(GradleakError, match="does not exist"):
        gio.atomic_write_text(tmp_path / "missing" / "f.txt", "x")
