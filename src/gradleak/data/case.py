"""A case: a data set and the model built for it, loaded one way for every pipeline.

The audit, the utility run, the R-GAP demo, IGSA and the Flower federation all start by
loading a registered data set and building a registered model whose input and outputs
fit it. `load_case` does that once, checking that the model has an output per class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from gradleak.checks import check_mapping, check_optional_str, check_seed
from gradleak.data.base import ImageDataset, Normalization
from gradleak.data.registry import load_dataset
from gradleak.errors import GradleakError
from gradleak.models import MODELS, build_model, output_classes

log = logging.getLogger(__name__)

ZOO_IMAGE_SIZE = 32  # the input side the registered models are designed for


@dataclass(frozen=True)
class DataSource:
    """Where a case's images come from: a registered data set, its files, and a resize."""

    dataset: str = "photos"
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None

    def load(self, split: str) -> ImageDataset:
        return load_dataset(self.dataset, self.data_root, split=split, download=self.download,
                            image_size=self.image_size)


@dataclass(frozen=True)
class Case:
    """A split of a data set (pixel space) and a model built for it (eval mode, seeded)."""

    source: DataSource
    data: ImageDataset
    model: nn.Module
    outputs: int
    model_options: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what loading changed (a resize to the zoo's input size)

    @property
    def normalization(self) -> Normalization:
        return self.data.normalization

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.data.image_shape

    def split(self, split: str) -> ImageDataset:
        """Another split of the same data set, loaded the same way (resized like this one)."""
        data = self.source.load(split)
        return data if data.image_shape == self.data.image_shape else data.resized(self.data.image_shape[1])


def load_case(
    source: DataSource,
    model: str,
    *,
    split: str = "train",
    model_options: Mapping[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
) -> Case:
    """Load `split` of `source` and build `model` for it under `seed`, on `device` (the data
    stays on the CPU: pipelines move the batches they use).

    The model gets one output per class of the data set, or `num_classes` outputs when
    given (R-GAP's one logit); a checkpoint with fewer outputs than classes is refused.
    """
    options = check_mapping("model_options", {} if model_options is None else model_options)
    check_optional_str("checkpoint", None if checkpoint is None else str(checkpoint))
    if checkpoint is not None and not isinstance(checkpoint, (str, Path)):
        raise GradleakError(f"checkpoint must be a file path, got {checkpoint!r}")
    check_seed(seed)
    data = source.load(split)
    notes: tuple[str, ...] = ()
    _, h, w = data.image_shape
    if source.image_size is None and model in MODELS and max(h, w) > ZOO_IMAGE_SIZE:
        # the zoo's models are built for 32 pixels: at 128 they attack noise (7.5 dB), slowly
        notes = (f"images resized from {h}x{w} to {ZOO_IMAGE_SIZE}x{ZOO_IMAGE_SIZE}, the size the model zoo is "
                 f"built for (--image-size {max(h, w)} attacks them at full size)",)
        log.warning(notes[0])
        data = data.resized(ZOO_IMAGE_SIZE)
    classes = data.num_classes if num_classes is None else num_classes
    net = build_model(model, num_classes=classes, input_shape=data.image_shape, seed=seed, checkpoint=checkpoint,
                      **options)
    net = net.to(device)
    outputs = output_classes(net, data.image_shape)
    if num_classes is None and outputs < data.num_classes:
        raise GradleakError(f"model {model!r} has {outputs} outputs but dataset {source.dataset!r} has "
                            f"{data.num_classes} classes")
    return Case(source, data, net, outputs, options, notes)


__all__ = ["Case", "DataSource", "load_case"]
