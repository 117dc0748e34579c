"""R-GAP's demo, as the paper's code runs it (`gradleak rgap`), on our data and models.

The paper's setting: pixels in [0, 1] without normalization, a seeded random model with
one logit, the logistic loss, and the label chosen against the model's prediction so
the sample is misclassified (the last-layer step is invertible only then). One image,
or a batch whose mean gradient is inverted as one combined image (labels known).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from gradleak.attacks.rgap import RGAP
from gradleak.client import simulate_client
from gradleak.data import load_dataset
from gradleak.devices import resolve_device
from gradleak.errors import DatasetNotFoundError, GradleakError
from gradleak.metrics import score_reconstruction
from gradleak.models import build_model
from gradleak.records import (
    AttackerKnowledge,
    ImageMetrics,
    LabelKnowledge,
    LocalTraining,
    Reconstruction,
)

log = logging.getLogger(__name__)

# the paper's flags: -m picks one of these, -d one of these datasets
MODELS = {"cnn6": "cnn6", "cnn6-d": "cnn6-d", "fcn3": "fcn3"}
DATASETS = {"cifar10": ("cifar10", "photos", None), "mnist": ("mnist", "digits", 28)}  # with a built-in fallback


@dataclass(frozen=True)
class RGAPDemo:
    """Everything the demo shows: images in [0, 1], the reconstruction record and its metrics."""

    original: torch.Tensor  # (B, C, H, W)
    reconstruction: torch.Tensor  # (1, C, H, W): one image, or the batch's combination
    labels: tuple[int, ...]  # the labels the client trained on (0 -> y = -1, 1 -> y = +1)
    indices: tuple[int, ...]
    dataset_source: str
    fallback: str | None  # why built-in data replaced the asked-for dataset
    record: Reconstruction
    metrics: ImageMetrics  # every original against the reconstruction


def load_demo_data(dataset: str, data_root: str | None, image_size: int | None):
    """(ImageDataset, fallback note): the paper's CIFAR10 or MNIST when its files are present,
    else built-in data; any other registered data set (image folders included) as it is."""
    key = dataset.lower().replace("-", "") if isinstance(dataset, str) else dataset
    if key not in DATASETS:
        return load_dataset(dataset, data_root, split="train", image_size=image_size), None
    name, builtin, size = DATASETS[key]
    try:
        return load_dataset(name, data_root, split="train", image_size=image_size), None
    except DatasetNotFoundError as exc:
        note = (f"{name} files not found ({str(exc).split(';')[0]}); using the built-in {builtin} set instead"
                if data_root else f"no --data-root for {name}; using the built-in {builtin} set instead")
        return load_dataset(builtin, None, split="train", image_size=image_size or size), note


def run_rgap_demo(*, model: str = "cnn6", dataset: str = "cifar10", index: int = -1, batch_size: int = 1,
                  checkpoint: str | None = None, data_root: str | None = None, image_size: int | None = None,
                  seed: int = 0, device: str | torch.device = "cpu") -> RGAPDemo:
    """Attack one image (`index`, or a seeded random one when -1) or a batch over an R-GAP model.

    `image_size` resizes the images square (the models work at any size); the default
    keeps the dataset's size, except FCN3 on built-in digits, resized to MNIST's 28.
    """
    key = model.lower()
    if key not in MODELS:
        raise GradleakError(f"model must be one of CNN6, CNN6-d, FCN3 (the paper's), got {model!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GradleakError(f"batch size must be an integer >= 1, got {batch_size!r}")
    data, fallback = load_demo_data(dataset, data_root, image_size)
    if fallback:
        log.info(fallback)
    gen = torch.Generator().manual_seed(seed)
    if batch_size > 1:
        if index != -1:
            raise GradleakError("pick either one image (-i) or a random batch (-b), not both")
        if batch_size > len(data):
            raise GradleakError(f"batch size {batch_size} exceeds the {len(data)} images of {data.name}")
        indices = torch.randperm(len(data), generator=gen)[:batch_size].tolist()
    elif index == -1:
        indices = [int(torch.randint(len(data), (1,), generator=gen))]
    elif not 0 <= index < len(data):
        raise GradleakError(f"index must be in [0, {len(data) - 1}] for {data.name}, got {index}")
    else:
        indices = [index]
    device = resolve_device(device)
    images, _ = data.batch(indices)
    images = images.to(device)  # the client computes there; R-GAP's least squares run on the CPU
    net = build_model(MODELS[key], num_classes=1, input_shape=data.image_shape, seed=seed,
                      checkpoint=checkpoint).to(device)
    with torch.no_grad():
        logits = net(images)[:, 0]
    labels = (logits <= 0).long()  # against the prediction: misclassified on purpose, as the paper's demo
    update = simulate_client(net, images, labels, LocalTraining(loss="logistic"))
    batch = len(indices)
    knowledge = AttackerKnowledge(num_samples=batch, input_shape=data.image_shape, num_classes=2,
                                  label_knowledge=LabelKnowledge.GIVEN if batch > 1 else LabelKnowledge.UNKNOWN,
                                  labels=labels if batch > 1 else None)
    record = RGAP().reconstruct(net, update, knowledge, seed=seed)
    rec = record.data[:1].detach().float()
    images = images.cpu()
    scored = score_reconstruction(record.data.float(), images)  # pixels in [0, 1], no normalization
    return RGAPDemo(images, rec, tuple(labels.tolist()), tuple(indices), data.source, fallback, record,
                    scored.metrics)
