"""Datasets: every file format on tiny files written here, built-ins, errors, downloads (no network)."""

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.data import DATASETS, ImageDataset, Normalization, load_dataset
from gradleak.data import download as dl
from gradleak.data.safe_pickle import safe_loads
from gradleak.errors import (
    CorruptFileError,
    DatasetNotFoundError,
    GradleakError,
    UnknownNameError,
)

RNG = np.random.default_rng(0)


def pixels(ds: ImageDataset) -> np.ndarray:
    """Back to the uint8 values the files held; exact because x / 255 * 255 rounds back."""
    return np.rint(ds.images.numpy() * 255).astype(np.uint8)


# ---------------------------------------------------------------- CIFAR

def cifar_batch(n: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    return RNG.integers(0, 256, (n, 3072), dtype=np.uint8), RNG.integers(0, classes, n)


def dump(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10_python(root, bytes_keys: bool = True) -> dict:
    k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)  # the official files have bytes keys
    folder, out = root / "cifar-10-batches-py", {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x, y = cifar_batch(3, 10)
        out[name] = (x, y)
        dump(folder / name, {k("batch_label"): k(name), k("data"): x, k("labels"): [int(v) for v in y],
                             k("filenames"): [k(f"{i}.png") for i in range(3)]})
    dump(folder / "batches.meta", {k("label_names"): [k(f"c{i}") for i in range(10)], k("num_vis"): 3072})
    return out


def test_cifar10_python_round_trips_pixels_labels_and_classes(tmp_path):
    files = write_cifar10_python(tmp_path)
    train = load_dataset("cifar10", tmp_path)
    want = np.concatenate([files[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert train.images.shape == (15, 3, 32, 32) and train.images.dtype == torch.float32
    assert np.array_equal(pixels(train), want)
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == np.concatenate([files[f"data_batch_{i}"][1] for i in range(1, 6)]).tolist()
    assert train.classes == tuple(f"c{i}" for i in range(10)) and train.num_classes == 10
    assert train.normalization == Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    test = load_dataset("cifar10", tmp_path, split="test")
    assert np.array_equal(pixels(test), files["test_batch"][0].reshape(-1, 3, 32, 32))
    # root may also be the extracted folder itself, and python-3 pickles with str keys work too
    write_cifar10_python(tmp_path / "py3", bytes_keys=False)
    assert len(load_dataset("cifar10", tmp_path / "py3" / "cifar-10-batches-py", split="test")) == 3


def test_cifar10_binary_format(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    x, y = cifar_batch(4, 10)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(np.concatenate([y[:, None].astype(np.uint8), x], axis=1).tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(f"name{i}" for i in range(10)) + "\n\n")
    test = load_dataset("cifar10", tmp_path, split="test")
    assert test.source.startswith("cifar10 binary format")
    assert np.array_equal(pixels(test), x.reshape(-1, 3, 32, 32)) and test.labels.tolist() == y.tolist()
    assert test.classes[3] == "name3" and len(load_dataset("cifar10", tmp_path)) == 20
    (folder / "test_batch.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(CorruptFileError, match="test_batch.bin"):
        load_dataset("cifar10", tmp_path, split="test")


def test_cifar100_python_and_binary_use_fine_labels(tmp_path):
    fine = [f"fine{i}" for i in range(100)]
    data = {}
    for split in ("train", "test"):
        x, y = cifar_batch(5, 100)
        data[split] = (x, y)
        dump(tmp_path / "py" / "cifar-100-python" / split,
             {b"data": x, b"fine_labels": [int(v) for v in y], b"coarse_labels": [int(v) % 20 for v in y]})
        records = np.concatenate([(y % 20)[:, None], y[:, None], x], axis=1).astype(np.uint8)
        (tmp_path / "bin" / "cifar-100-binary").mkdir(parents=True, exist_ok=True)
        (tmp_path / "bin" / "cifar-100-binary" / f"{split}.bin").write_bytes(records.tobytes())
    dump(tmp_path / "py" / "cifar-100-python" / "meta",
         {b"fine_label_names": [n.encode() for n in fine], b"coarse_label_names": [b"x"] * 20})
    (tmp_path / "bin" / "cifar-100-binary" / "fine_label_names.txt").write_text("\n".join(fine))
    for sub in ("py", "bin"):
        ds = load_dataset("cifar100", tmp_path / sub, split="test")
        assert ds.images.shape == (5, 3, 32, 32) and ds.classes == tuple(fine)
        assert np.array_equal(pixels(ds), data["test"][0].reshape(-1, 3, 32, 32))
        assert ds.labels.tolist() == data["test"][1].tolist()
        assert ds.normalization.mean == (0.5071, 0.4865, 0.4409)


def test_cifar_archive_is_extracted_and_escaping_members_are_refused(tmp_path):
    src = tmp_path / "src"
    write_cifar10_python(src)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    assert len(load_dataset("cifar10", root, split="test")) == 3
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()

    evil = tmp_path / "evil"
    evil.mkdir()
    with tarfile.open(evil / "cifar-10-python.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(CorruptFileError, match="escape"):
        load_dataset("cifar10", evil)
    assert not (tmp_path / "escaped.txt").exists()


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_with_forbidden_global_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": Exploit(marker), b"labels": []}, protocol=2)
    with pytest.raises(CorruptFileError, match=r"refused to unpickle global (os|posix|nt)\.system"):
        safe_loads(payload)
    write_cifar10_python(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(payload)
    with pytest.raises(CorruptFileError, match="test_batch.*system"):
        load_dataset("cifar10", tmp_path, split="test")
    for evil in (pickle.dumps(eval), pickle.dumps(getattr)):
        with pytest.raises(CorruptFileError, match="refused"):
            safe_loads(evil)
    assert not marker.exists()
    # what dataset files do hold still loads, including numpy scalars and python-3 bytes
    obj = safe_loads(pickle.dumps({"a": np.arange(4.0), "b": np.int64(3), "c": (b"x", {1}), "d": None}, protocol=2))
    assert np.array_equal(obj["a"], np.arange(4.0)) and obj["b"] == 3 and obj["c"] == (b"x", {1})
    with pytest.raises(CorruptFileError, match="not a readable pickle"):
        safe_loads(b"\x80\x02garbage")


# ---------------------------------------------------------------- MNIST

def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx(folder, prefix: str, n: int, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8), RNG.integers(0, 10, n).astype(np.uint8)
    for stem, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
        data = idx_bytes(arr)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return x, y


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_gzipped_or_raw(tmp_path, gz):
    x, y = write_idx(tmp_path, "train", 6, gz)
    ds = load_dataset("mnist", tmp_path)
    assert ds.images.shape == (6, 1, 28, 28) and ds.classes == tuple("0123456789")
    assert np.array_equal(pixels(ds)[:, 0], x) and ds.labels.tolist() == y.tolist()
    assert ds.normalization == Normalization((0.1307,), (0.3081,))


def test_fashion_mnist_in_torchvision_layout(tmp_path):
    x, y = write_idx(tmp_path / "FashionMNIST" / "raw", "t10k", 4, gz=True)
    ds = load_dataset("fashion-mnist", tmp_path, split="test", image_size=32)
    assert ds.images.shape == (4, 1, 32, 32) and ds.classes[9] == "Ankle boot"
    assert ds.labels.tolist() == y.tolist() and 0 <= float(ds.images.min()) <= float(ds.images.max()) <= 1


def test_idx_truncated_or_bad_magic_is_corrupt(tmp_path):
    write_idx(tmp_path, "train", 3, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(CorruptFileError, match="train-images-idx3-ubyte.*promises"):
        load_dataset("mnist", tmp_path)
    images.write_bytes(b"\x00\x00\x09\x03" + b"\x00" * 12)
    with pytest.raises(CorruptFileError, match="magic"):
        load_dataset("mnist", tmp_path)
    write_idx(tmp_path / "gz", "train", 3, gz=True)
    gz = tmp_path / "gz" / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-12])
    with pytest.raises(CorruptFileError, match="train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tmp_path / "gz")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion-mnist"])
def test_missing_files_name_the_path_and_suggest_download(tmp_path, name):
    with pytest.raises(DatasetNotFoundError, match="--download") as err:
        load_dataset(name, tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="--data-root"):
        load_dataset(name)


# ---------------------------------------------------------------- image folder

def write_png(path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder_classes_labels_and_exact_pixels(tmp_path):
    arrays = {}
    for cls in ("zebra", "apple"):
        for i in range(5):
            arrays[cls, i] = RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8)
            write_png(tmp_path / cls / f"{i}.png", arrays[cls, i])
    (tmp_path / "apple" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    train = load_dataset("folder", tmp_path)
    assert train.classes == ("apple", "zebra") and train.image_shape == (3, 8, 6)
    assert train.labels.tolist() == [0] * 4 + [1] * 4
    assert np.array_equal(pixels(train)[0].transpose(1, 2, 0), arrays["apple", 0])
    test = load_dataset("folder", tmp_path, split="test")
    assert test.labels.tolist() == [0, 1]  # the fifth image of each class
    assert np.array_equal(pixels(test)[1].transpose(1, 2, 0), arrays["zebra", 4])
    assert len(train.normalization.mean) == 3


def test_image_folder_grayscale_mixed_sizes_and_unreadable_files(tmp_path):
    write_png(tmp_path / "a" / "0.png", np.full((10, 20), 200, np.uint8))
    write_png(tmp_path / "b" / "0.png", np.full((40, 40), 50, np.uint8))
    ds = load_dataset("folder", tmp_path)
    assert ds.image_shape == (1, 32, 32) and ds.normalization.std[0] > 0
    assert torch.allclose(ds.images[1], torch.full((1, 32, 32), 50 / 255))
    assert load_dataset("folder", tmp_path, image_size=16).image_shape == (1, 16, 16)
    with pytest.raises(GradleakError, match="no test images"):
        load_dataset("folder", tmp_path, split="test")
    (tmp_path / "b" / "1.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(CorruptFileError, match="1.jpg"):
        load_dataset("folder", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        load_dataset("folder", tmp_path / "nowhere")


# ---------------------------------------------------------------- built-ins

@pytest.mark.parametrize("name, channels, classes", [("photos", 3, 8), ("faces", 1, 2), ("digits", 1, 10)])
def test_builtins_shapes_classes_range_determinism_and_disjoint_splits(name, channels, classes):
    train, test = load_dataset(name), load_dataset(name, split="test")
    again = load_dataset(name)
    for ds in (train, test):
        assert ds.image_shape == (channels, 32, 32) and ds.num_classes == classes
        assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
        assert 0 <= float(ds.images.min()) and float(ds.images.max()) <= 1
        assert set(ds.labels.tolist()) == set(range(classes))  # both splits hold every class
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    assert 3.5 < len(train) / len(test) < 4.5
    assert train.normalization == test.normalization and len(train.normalization.mean) == channels
    if name != "digits":  # scikit-learn's digits hold exact duplicates; the others do not
        flat = {tuple(x.flatten().tolist()) for x in train.images}
        assert not any(tuple(x.flatten().tolist()) in flat for x in test.images)
    train.images[0] = 0  # a caller mutating its copy must not change the cached data
    assert not torch.equal(load_dataset(name).images[0], train.images[0])


def test_builtin_contents():
    photos = load_dataset("photos")
    assert photos.classes[photos.labels[0]] == "astronaut" and photos.labels[:4].tolist() == [0, 1, 2, 3]
    assert 100 <= len(photos) + len(load_dataset("photos", split="test")) <= 400
    assert float(photos.images.std(dim=(2, 3)).amax(dim=1).min()) > 0.03  # no flat tiles
    faces = load_dataset("faces")
    assert len(faces) == 160 and faces.classes == ("face", "non-face") and faces.labels[:80].eq(0).all()
    assert len(load_dataset("digits")) + len(load_dataset("digits", split="test")) == 1797


# ---------------------------------------------------------------- record, registry, arguments

def test_normalize_denormalize_round_trip_and_shape_checks():
    norm = Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    x = torch.rand(2, 3, 4, 4)
    z = norm.normalize(x)
    assert torch.allclose(z[:, 1], (x[:, 1] - 0.4) / 0.25)
    assert torch.allclose(norm.denormalize(z), x, atol=1e-6)
    assert torch.allclose(norm.denormalize(norm.normalize(x[0])), x[0], atol=1e-6)
    with pytest.raises(GradleakError, match="shape"):
        norm.normalize(torch.rand(2, 1, 4, 4))
    with pytest.raises(GradleakError, match="std"):
        Normalization((0.5,), (0.0,))
    with pytest.raises(GradleakError, match="one value per channel"):
        Normalization((0.5, 0.5), (0.2,))


def test_batch_returns_copies_and_rejects_bad_indices():
    ds = load_dataset("faces", split="test")
    x, y = ds.batch([3, 0])
    assert x.shape == (2, 1, 32, 32) and torch.equal(x[0], ds.images[3]) and y.tolist() == ds.labels[[3, 0]].tolist()
    x[:] = 0
    assert ds.images[3].abs().sum() > 0
    n = len(ds)
    for bad, value in (([n], str(n)), ([-1], "-1"), ([0, 0], "0")):
        with pytest.raises(GradleakError, match="indices") as err:
            ds.batch(bad)
        assert value in str(err.value)
    with pytest.raises(GradleakError, match=rf"\[0, {n - 1}\]"):
        ds.batch([n + 5])
    with pytest.raises(GradleakError, match="integers"):
        ds.batch([1.5])
    with pytest.raises(GradleakError, match="at least one"):
        ds.batch([])


def test_resized_and_load_arguments():
    ds = load_dataset("photos", image_size=16)
    assert ds.image_shape == (3, 16, 16) and "resized" in ds.source
    assert 0 <= float(ds.images.min()) and float(ds.images.max()) <= 1
    with pytest.raises(GradleakError, match="image_size"):
        load_dataset("photos", image_size=0)
    with pytest.raises(GradleakError, match="split"):
        load_dataset("photos", split="validation")
    with pytest.raises(UnknownNameError) as err:
        load_dataset("imagenet")
    assert "imagenet" in str(err.value) and all(n in str(err.value) for n in ("cifar10", "photos", "folder"))
    assert set(DATASETS.names()) == {"photos", "faces", "digits", "cifar10", "cifar100", "mnist",
                                     "fashion-mnist", "folder"}
    assert all(entry.summary for entry in DATASETS)


# ---------------------------------------------------------------- downloads (never touch the network)

def test_download_without_network_says_which_url_failed_and_where_to_put_files(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(GradleakError) as err:
        load_dataset("mnist", tmp_path, download=True)
    msg = str(err.value)
    assert "\n" not in msg and dl.MNIST[0].url in msg and "name resolution" in msg and str(tmp_path) in msg
    with pytest.raises(GradleakError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []  # no partial files left behind


def test_download_verifies_md5_and_renames_atomically(tmp_path):
    payload = tmp_path / "served.bin"
    payload.write_bytes(b"archive bytes")
    good = dl.Resource(payload.as_uri(), "got.bin", hashlib.md5(b"archive bytes").hexdigest())
    out = tmp_path / "out"
    assert dl.fetch(good, out).read_bytes() == b"archive bytes"
    bad = dl.Resource(payload.as_uri(), "bad.bin", "0" * 32)
    with pytest.raises(CorruptFileError, match="expected 0{32}"):
        dl.fetch(bad, out)
    assert sorted(p.name for p in out.iterdir()) == ["got.bin"]


def test_published_checksums_are_well_formed():
    resources = (dl.CIFAR10, dl.CIFAR100, *dl.MNIST, *dl.FASHION_MNIST)
    assert all(len(r.md5) == 32 and int(r.md5, 16) >= 0 and r.url.endswith(r.filename) for r in resources)
    assert len({r.md5 for r in resources}) == len(resources)


def test_bounds_are_pixels_0_and_1_in_model_space():
    norm = Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    low, high = norm.bounds()
    torch.testing.assert_close(torch.tensor(low), norm.normalize(torch.zeros(3, 1, 1)).flatten())
    torch.testing.assert_close(torch.tensor(high), norm.normalize(torch.ones(3, 1, 1)).flatten())
