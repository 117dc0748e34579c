"""The front door for users with their own model and captured updates.

`reconstruct` attacks an update you captured (gradients or a weight delta) on your own
`nn.Module`; `evaluate` scores a reconstruction against the ground truth in [0, 1]
pixel space; `as_update` wraps captured tensors as a `ClientUpdate`. Nothing inside
gradleak imports this module: it only calls down into the library.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from gradleak.attacks import ATTACKS, ProgressCallback
from gradleak.checks import check_positive_int
from gradleak.data import Normalization
from gradleak.devices import model_device, resolve_device
from gradleak.errors import GradleakError
from gradleak.metrics import DEFAULT_METRICS, score_reconstruction
from gradleak.models import output_classes
from gradleak.server import ServerModel, parse_server
from gradleak.records import (
    AttackerKnowledge,
    ClientUpdate,
    ImageMetrics,
    LabelKnowledge,
    LocalTraining,
    Protocol,
    Reconstruction,
)


def as_update(
    model: nn.Module,
    tensors: Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | ClientUpdate,
    *,
    num_samples: int,
    training: LocalTraining | None = None,
    model_mode: str = "eval",
) -> ClientUpdate:
    """Wrap captured tensors (parameter order, or name -> tensor) as a `ClientUpdate`."""
    if isinstance(tensors, ClientUpdate):
        device = model_device(model)
        return dataclasses.replace(tensors, tensors=tuple(t.to(device) for t in tensors.tensors))
    training = training or LocalTraining()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    if isinstance(tensors, Mapping):
        unknown = sorted(set(tensors) - set(names))
        missing = [n for n in names if n not in tensors]
        if unknown:
            raise GradleakError(f"gradients name parameters the model does not have: {unknown}; model has {names}")
        if missing:
            raise GradleakError(f"gradients lack the model's parameters {missing}")
        ordered = [tensors[n] for n in names]
    else:
        ordered = list(tensors)
        if len(ordered) != len(names):
            raise GradleakError(
                f"gradients hold {len(ordered)} tensors but the model has {len(names)} trainable parameters"
            )
    for (name, param), t in zip(named, ordered):
        if not isinstance(t, torch.Tensor):
            raise GradleakError(f"gradient for parameter {name!r} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != tuple(param.shape):
            raise GradleakError(
                f"gradient for parameter {name!r} has shape {tuple(t.shape)}, expected {tuple(param.shape)}"
            )
        if not torch.isfinite(t).all():
            raise GradleakError(f"gradient for parameter {name!r} contains NaN or inf")
    return ClientUpdate(
        protocol=training.protocol,
        names=tuple(names),
        tensors=tuple(t.detach().to(device=param.device, dtype=param.dtype) for (_, param), t in zip(named, ordered)),
        num_samples=num_samples,
        training=training,
        local_steps=training.steps(num_samples),
        model_mode=model_mode,
    )


def reconstruct(
    model: nn.Module,
    gradients: Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | ClientUpdate,
    *,
    input_shape: Sequence[int],
    num_samples: int = 1,
    labels: torch.Tensor | Sequence[int] | None = None,
    attack: str = "ig",
    training: LocalTraining | None = None,
    knows_training: bool = False,
    model_mode: str = "eval",
    normalization: Normalization | tuple[Sequence[float], Sequence[float]] | None = None,
    bounds: tuple[Sequence[float], Sequence[float]] | str | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    callback: ProgressCallback | None = None,
    server: str | None = None,
    **attack_options: Any,
) -> Reconstruction:
    """Reconstruct a client's inputs from an update observed on `model`.

    Threat model: an honest-but-curious server that holds the model and sees the update
    (SoK level 0; `labels` and `knows_training` add levels the result records).

    Args:
        model: the model as it was when the client computed the update (not modified).
        gradients: tensors in `model.parameters()` order, a name -> tensor mapping, or
            a `ClientUpdate`. FedSGD gradients by default; pass `training` with
            protocol "fedavg" for a weight delta. A model with one output is read as
            R-GAP's logistic setting (labels 0 and 1) unless `training` says otherwise.
        input_shape: one sample's shape, e.g. (3, 32, 32).
        num_samples: number of samples behind the update.
        labels: known labels (an extra assumption); None lets the attack infer or
            optimize them.
        attack: a registered attack name (`gradleak list`). The default, inverting
            gradients, is the field's standard attack on a user's own (ReLU, trained)
            model; the CLI's demo uses iDLG because it runs DLG's own sigmoid LeNet.
        knows_training: the attacker knows the local configuration (`training`) and
            simulates the local steps (SoK assumption level 3).
        normalization: how the model's inputs were made from [0, 1] pixels, a
            `gradleak.data.Normalization` or (mean, std) per channel: the valid pixel box
            in model space follows from it.
        bounds: the box directly, per-channel (low, high) in model space; or "none" to
            leave pixels unbounded. With neither, inputs are assumed to be [0, 1] pixels
            (a warning says so): attacks lose several dB when pixels may drift.
        device: where to attack ("auto", "cpu", "cuda", "cuda:N", "mps" or a torch.device):
            a copy of the model goes there; None attacks where the model is. The result is on
            the CPU either way.
        server: the spec of the malicious server that built `model` (`serve`): the result
            records assumption level 5.
        **attack_options: the attack's constructor arguments (iterations, restarts, ...).
    """
    attacker = ATTACKS.create(attack, attack_options)
    if device is not None:
        model = copy.deepcopy(model).to(resolve_device(device))
    shape = _input_shape(input_shape)
    check_positive_int("num_samples", num_samples)
    outputs = output_classes(model, shape)
    if training is None and outputs == 1:
        log.info("the model has one output: reading the update under R-GAP's logistic loss (labels 0 and 1)")
        training = LocalTraining(loss="logistic")
    update = as_update(model, gradients, num_samples=num_samples, training=training, model_mode=model_mode)
    label_tensor = None if labels is None else _labels(labels, num_samples)
    if label_tensor is not None:
        label_tensor = label_tensor.to(model_device(model))
    knowledge = AttackerKnowledge(
        num_samples=num_samples,
        input_shape=shape,
        num_classes=2 if update.training.loss == "logistic" else outputs,
        label_knowledge=LabelKnowledge.GIVEN if label_tensor is not None else LabelKnowledge.UNKNOWN,
        labels=label_tensor,
        knows_training=knows_training,
        training=update.training if knows_training else None,
        bounds=pixel_box(shape, normalization, bounds),
        server=server,
    )
    return attacker.reconstruct(model, update, knowledge, seed=seed, callback=callback)


def serve(model: nn.Module, server: str, *, input_shape: Sequence[int], seed: int = 0,
          public: torch.Tensor | None = None) -> ServerModel:
    """The model a server sends in place of `model` (not modified), from its spec
    ("imprint:bins=128", "trap:fire=0.02", "honest"): give `ServerModel.model` to your
    client, then `reconstruct(server_model.model, update, attack="imprint",
    server=server_model.spec, ...)`. `public`: public images in model space for the
    behaviours that estimate from them. Threat model: a malicious server (level 5).
    `ServerModel.expected(n)` says what it expects to recover before any attack."""
    return parse_server(server).build(model, _input_shape(input_shape), seed=seed, public=public)


def _input_shape(input_shape: object) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) or not input_shape or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in input_shape):
        raise GradleakError(f"input_shape must be a sequence of positive sizes such as (3, 32, 32), "
                            f"got {input_shape!r}")
    return tuple(input_shape)


def _labels(labels: object, num_samples: int) -> torch.Tensor:
    """Class indices; a float label must be a whole number (2.7 is refused, not truncated)."""
    values = torch.as_tensor(labels).reshape(-1) if not isinstance(labels, torch.Tensor) else labels.reshape(-1)
    if values.is_floating_point() or values.is_complex():
        if values.is_complex() or not bool(torch.isfinite(values).all()) or not torch.equal(values, values.round()):
            raise GradleakError(f"labels must be class indices (whole numbers), got {values.tolist()}")
    elif values.dtype == torch.bool:
        raise GradleakError(f"labels must be class indices, got booleans {values.tolist()}")
    if values.numel() != num_samples:
        raise GradleakError(f"labels must hold one class index per sample ({num_samples}), got {values.numel()}")
    return values.long()


def pixel_box(input_shape: tuple[int, ...], normalization: object, bounds: object
              ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The valid box in model space from `bounds`, else `normalization`, else [0, 1] (warned)."""
    channels = input_shape[0] if len(input_shape) == 3 else 1
    if isinstance(bounds, str):
        if bounds != "none":
            raise GradleakError(f"bounds must be (low, high) per channel or 'none', got {bounds!r}")
        return None
    if bounds is not None:
        try:
            low, high = (tuple(float(v) for v in side) for side in bounds)
        except (TypeError, ValueError):
            raise GradleakError(f"bounds must be (low, high), each a sequence of per-channel values, "
                                f"got {bounds!r}") from None
        if len(low) != len(high) or len(low) not in (1, channels) or any(a >= b for a, b in zip(low, high)):
            raise GradleakError(f"bounds must give low < high for 1 or {channels} channel(s), got {bounds!r}")
        return low, high
    if normalization is not None:
        if not isinstance(normalization, Normalization):
            try:
                mean, std = normalization
                normalization = Normalization(tuple(float(v) for v in mean), tuple(float(v) for v in std))
            except (TypeError, ValueError):
                raise GradleakError(f"normalization must be a Normalization or (mean, std) per channel, "
                                    f"got {normalization!r}") from None
        if len(normalization.mean) not in (1, channels):
            raise GradleakError(f"normalization has {len(normalization.mean)} channels, the input {channels}")
        return normalization.bounds()
    log.warning("no pixel range given: assuming inputs are [0, 1] pixels; pass normalization=(mean, std), "
                "bounds=(low, high) or bounds='none'")
    return (0.0,) * channels, (1.0,) * channels


def evaluate(
    reconstruction: Reconstruction | torch.Tensor,
    original: torch.Tensor,
    *,
    normalization=None,
    true_labels: torch.Tensor | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    matching: str = "mse",
) -> ImageMetrics:
    """Score a reconstruction against the originals (both in model space when
    `normalization` is given, else in [0, 1] pixel space), with Hungarian matching by
    `matching`; `metrics` are names of `gradleak.metrics.METRICS`."""
    if normalization is not None:
        original = normalization.denormalize(original)
    return score_reconstruction(reconstruction, original.detach(), normalization=normalization,
                                true_labels=true_labels, metrics=metrics, matching=matching).metrics


log = logging.getLogger(__name__)

__all__ = ["as_update", "evaluate", "pixel_box", "reconstruct", "serve", "LocalTraining", "Protocol"]
