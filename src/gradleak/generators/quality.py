"""Offline quality numbers of a generator, and the evidence a latent-space reconstruction needs.

Two numbers need nothing but the data: `nn_psnr`, the mean PSNR of each sample to its
nearest training image (higher: samples look like training images; compare it with
`real_nn_psnr`, the same for held-out real images, its reference), and the verdict of a
small classifier trained on the real training images: its accuracy on held-out real
images, its mean confidence on the samples and how many classes the samples cover.
A generator whose samples the classifier calls confidently, over most classes, draws
recognisable images; one that copies its training set has `nn_psnr` far above
`real_nn_psnr`.

`latent_evidence` answers the question a latent-space attack raises: did it recover the
client's image or draw a plausible image of that class? It returns the generator's
nearest training image for each reconstruction and the identification against the
client's data (`metrics.identify`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gradleak.devices import generator as seeded
from gradleak.errors import GradleakError
from gradleak.metrics.identify import Identification, identify


@dataclass(frozen=True)
class GeneratorQuality:
    samples: int
    nn_psnr: float  # mean PSNR of a sample to its nearest training image
    real_nn_psnr: float  # the same for held-out real images: the reference
    classifier_accuracy: float  # the classifier on held-out real images
    sample_confidence: float  # its mean top-class probability on the samples
    real_confidence: float  # the same on held-out real images: the reference
    class_coverage: float  # share of classes the classifier assigns to at least one sample

    def to_json(self) -> dict:
        return asdict(self)


def nearest_psnr(images: torch.Tensor, training: torch.Tensor) -> torch.Tensor:
    """PSNR of each image to its nearest training image (by PSNR)."""
    return torch.tensor(identify(images.clamp(0, 1), training, metric="psnr").nearest_score)


def small_classifier(channels: int, size: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (size // 4) ** 2, classes))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, classes: int, *, epochs: int = 8,
                     seed: int = 0) -> nn.Module:
    """A small CNN trained with Adam on pixel images (seeded; inputs untouched)."""
    gen = seeded("cpu", seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))  # the init, without leaking state
    try:
        model = small_classifier(images.shape[1], images.shape[-1], classes)
    finally:
        torch.random.set_rng_state(torch_state)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=gen)
        for i in range(0, len(order), 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval().requires_grad_(False)


def generator_quality(samples: torch.Tensor, train_images: torch.Tensor, train_labels: torch.Tensor,
                      test_images: torch.Tensor, test_labels: torch.Tensor, classes: int, *,
                      seed: int = 0) -> GeneratorQuality:
    """The quality numbers of `samples` (N, C, S, S) in [0, 1] against real data of the same shape."""
    if samples.shape[1:] != train_images.shape[1:] or test_images.shape[1:] != train_images.shape[1:]:
        raise GradleakError(f"samples, training and held-out images must share one shape, got "
                            f"{tuple(samples.shape)}, {tuple(train_images.shape)}, {tuple(test_images.shape)}")
    held = test_images[: samples.shape[0]]
    clf = train_classifier(train_images, train_labels, classes, seed=seed)
    with torch.no_grad():
        p_fake = F.softmax(clf(samples), -1)
        p_real = F.softmax(clf(test_images), -1)
    covered = torch.unique(p_fake.argmax(-1)).numel()
    present = torch.unique(train_labels).numel()
    return GeneratorQuality(
        samples=int(samples.shape[0]),
        nn_psnr=float(nearest_psnr(samples, train_images).mean()),
        real_nn_psnr=float(nearest_psnr(held, train_images).mean()),
        classifier_accuracy=float((p_real.argmax(-1) == test_labels).double().mean()),
        sample_confidence=float(p_fake.max(-1).values.mean()),
        real_confidence=float(p_real.max(-1).values.mean()),
        class_coverage=covered / present,
    )


@dataclass(frozen=True)
class LatentEvidence:
    """Per reconstruction: the generator's nearest training image, and identification
    against the client's data. A reconstruction nearer to a training image than to the
    client's true image drew a plausible image rather than recovering the client's."""

    nearest_training: Identification  # candidates: the generator's training images
    client: Identification  # candidates: the client's data, with the true indices

    def to_json(self) -> dict:
        return {"nearest_training": self.nearest_training.to_json(), "client": self.client.to_json()}


def latent_evidence(reconstruction: torch.Tensor, training_images: torch.Tensor, client_images: torch.Tensor,
                    true_index: Sequence[int | None] | None = None, *, metric: str = "psnr") -> LatentEvidence:
    """`reconstruction` (N, C, H, W) in [0, 1] against the generator's training images and
    the client's data (`true_index[j]`: the client image reconstruction j should identify)."""
    rec = reconstruction.clamp(0, 1)
    return LatentEvidence(identify(rec, training_images, metric=metric),
                          identify(rec, client_images, true_index=true_index, metric=metric))
