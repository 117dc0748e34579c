"""One generator run: load a registered data set (a class subset for out-of-distribution
studies), train a DCGAN on it, and write its checkpoint, a grid of samples and the
offline quality numbers (`gradleak.generators.quality`)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from gradleak.data import load_dataset
from gradleak.data.base import ImageDataset
from gradleak.errors import GradleakError
from gradleak.generators import (
    GeneratorQuality,
    GeneratorTraining,
    TrainedGenerator,
    generator_quality,
    sample,
    save_generator,
    train_generator,
)
from gradleak.generators.train import EpochCallback
from gradleak.io import atomic_write_text
from gradleak.pipelines.figures import save_image

log = logging.getLogger(__name__)

GRID_SIDE = 8  # the sample grid is GRID_SIDE x GRID_SIDE samples
QUALITY_SAMPLES = 256


@dataclass(frozen=True)
class GeneratorRunConfig:
    dataset: str = "digits"
    data_root: str | None = None
    image_size: int = 32
    classes: tuple[int, ...] | None = None  # class indices kept (None: all)
    training: GeneratorTraining = field(default_factory=GeneratorTraining)
    device: str = "cpu"


@dataclass(frozen=True)
class GeneratorRun:
    trained: TrainedGenerator
    quality: GeneratorQuality | None
    checkpoint: Path
    grid: Path
    images: int  # training images used


def class_subset(data: ImageDataset, classes: tuple[int, ...] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of the kept classes; unknown classes are refused naming the valid ones."""
    if classes is None:
        return data.images, data.labels
    bad = [c for c in classes if not 0 <= c < data.num_classes]
    if bad or not classes:
        raise GradleakError(f"classes must be class indices in [0, {data.num_classes - 1}] of {data.name!r}, "
                            f"got {list(classes)}")
    keep = torch.isin(data.labels, torch.tensor(classes))
    if int(keep.sum()) < 2:
        raise GradleakError(f"classes {list(classes)} hold fewer than 2 images of {data.name!r}")
    return data.images[keep], data.labels[keep]


def tile(images: torch.Tensor, side: int) -> torch.Tensor:
    """side x side images (N, C, H, W) as one (C, side * H, side * W) image."""
    n, c, h, w = images.shape
    grid = images[: side * side].reshape(side, side, c, h, w).permute(2, 0, 3, 1, 4)
    return grid.reshape(c, side * h, side * w)


@dataclass(frozen=True)
class GeneratorData:
    """The training split and the kept classes' images and labels."""

    train: ImageDataset
    images: torch.Tensor
    labels: torch.Tensor


def generator_data(config: GeneratorRunConfig) -> GeneratorData:
    """Load and subset the training data (a bad data set or class list is refused here, before any work)."""
    train = load_dataset(config.dataset, config.data_root, split="train", image_size=config.image_size)
    return GeneratorData(train, *class_subset(train, config.classes))


def run_generator(config: GeneratorRunConfig, out: Path, *, data: GeneratorData | None = None,
                  on_epoch: EpochCallback | None = None) -> GeneratorRun:
    """Train, then write OUT/generator.pt, OUT/samples.png and OUT/quality.json (`data`:
    from `generator_data(config)`, loaded here when not given)."""
    data = data or generator_data(config)
    train, images, labels = data.train, data.images, data.labels
    trained = train_generator(images, config.training, device=config.device, on_epoch=on_epoch)
    out.mkdir(parents=True, exist_ok=True)
    described = {"dataset": config.dataset, "split": "train", "image_size": config.image_size,
                 "classes": list(config.classes) if config.classes is not None else list(range(train.num_classes))}
    checkpoint = save_generator(out / "generator.pt", trained.generator, trained.discriminator, data=described)
    samples = sample(trained.generator, QUALITY_SAMPLES, seed=config.training.seed + 1)
    grid = save_image(out / "samples.png", tile(samples, GRID_SIDE), scale=2)
    quality = None
    try:
        test = load_dataset(config.dataset, config.data_root, split="test", image_size=config.image_size)
        test_images, test_labels = class_subset(test, config.classes)
        quality = generator_quality(samples, images, labels, test_images, test_labels, train.num_classes,
                                    seed=config.training.seed)
    except GradleakError as exc:  # no test split: the numbers need held-out images
        log.warning("no quality numbers: %s", exc)
    report = {"config": {**asdict(config), "training": asdict(config.training)}, "images": int(images.shape[0]),
              "seconds": trained.seconds, "history": [asdict(h) for h in trained.history],
              "quality": None if quality is None else quality.to_json()}
    atomic_write_text(out / "quality.json", json.dumps(report, indent=2))
    return GeneratorRun(trained, quality, checkpoint, grid, int(images.shape[0]))


def latent_report(run) -> tuple[dict, torch.Tensor] | None:
    """For an audit whose attack ran with a generator checkpoint (`generator=PATH`): the
    evidence (`latent_evidence`: nearest generator training image, identification among the
    client's batch) as JSON, and a figure (rows: original, reconstruction, nearest training
    image) as one (C, 3H, N*W) image. None for other attacks or generators."""
    from gradleak.generators.checkpoint import read_checkpoint
    from gradleak.generators.quality import latent_evidence

    path = dict(run.result.settings.get("attack_options") or {}).get("generator")
    if not isinstance(path, str) or not path.endswith(".pt") or not Path(path).is_file():
        return None
    data = read_checkpoint(path)["data"]
    if not data.get("dataset"):
        return None
    train = load_dataset(data["dataset"], run.result.settings.get("data_root"), split=data.get("split", "train"),
                         image_size=data.get("image_size"))
    images, _ = class_subset(train, tuple(data["classes"]) if data.get("classes") is not None else None)
    n = run.reconstruction.shape[0]
    evidence = latent_evidence(run.reconstruction, images, run.original, true_index=list(range(n)))
    nearest = images[list(evidence.nearest_training.nearest)]
    figure = torch.cat([torch.cat(list(rows.clamp(0, 1)), dim=2)
                        for rows in (run.original, run.reconstruction, nearest)], dim=1)
    return {"generator": path, "training_data": data, **evidence.to_json()}, figure
