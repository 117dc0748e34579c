"""Fetch official dataset archives with checksum verification (for users with a network).

Downloads go to a temporary file in the target folder, are verified (md5, as the
datasets publish them) and only then renamed into place, so an interrupted or corrupt
download never looks like a dataset. Without a network the error says which URL failed
and where to put the files by hand.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gradleak.errors import CorruptFileError, GradleakError

log = logging.getLogger(__name__)
TIMEOUT_S = 20


@dataclass(frozen=True)
class Resource:
    url: str
    filename: str
    md5: str


# md5 sums as published by the dataset authors (CIFAR: cs.toronto.edu/~kriz/cifar.html;
# Fashion-MNIST: its GitHub README) and used by torchvision's CIFAR10/CIFAR100/MNIST/
# FashionMNIST classes; cross-checked against several independent copies of those tables.
CIFAR10 = Resource("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
                   "c58f30108f718f92721af3b95e74349a")
CIFAR100 = Resource("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
                    "eb9058c3a382ffc7106e4002c42a8d85")
# yann.lecun.com no longer serves MNIST reliably; torchvision's S3 mirror holds the same files
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
              "t10k-labels-idx1-ubyte.gz")
MNIST = tuple(Resource(_MNIST + f, f, md5) for f, md5 in zip(_IDX_FILES, (
    "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")))
FASHION_MNIST = tuple(Resource(_FASHION + f, f, md5) for f, md5 in zip(_IDX_FILES, (
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
    "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")))


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(resource: Resource, folder: Path) -> Path:
    """Download `resource` into `folder` unless a verified copy is there; return its path."""
    target = folder / resource.filename
    if target.is_file() and md5sum(target) == resource.md5:
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{resource.filename}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise GradleakError(f"cannot write downloads to {folder}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    log.info("downloading %s to %s", resource.url, target)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(resource.url, timeout=TIMEOUT_S) as response:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as exc:  # OSError covers timeouts and resets
                reason = getattr(exc, "reason", None) or exc
                raise GradleakError(
                    f"could not download {resource.url} ({reason}); without a network, place "
                    f"{resource.filename} (or its extracted files) in {folder} by hand"
                ) from None
        digest = md5sum(tmp)
        if digest != resource.md5:
            raise CorruptFileError(
                f"{resource.url} downloaded with md5 {digest}, expected {resource.md5}; the file was discarded"
            )
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)
