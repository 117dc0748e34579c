"""The front door for users with their own model and captured updates.

`reconstruct` attacks an update you captured (gradients or a weight delta) on your own
`nn.Module`; `evaluate` scores a reconstruction against the ground truth in [0, 1]
pixel space; `as_update` wraps captured tensors as a `ClientUpdate`. Nothing inside
gradleak imports this module: it only calls down into the library.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from gradleak.attacks import ATTACKS, ProgressCallback
from gradleak.errors import GradleakError
from gradleak.metrics import DEFAULT_METRICS, score_reconstruction
from gradleak.models import output_classes
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
        return tensors
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
        tensors=tuple(t.detach().cpu().float() for t in ordered),
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
    bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    seed: int = 0,
    callback: ProgressCallback | None = None,
    **attack_options: Any,
) -> Reconstruction:
    """Reconstruct a client's inputs from an update observed on `model`.

    Args:
        model: the model as it was when the client computed the update (not modified).
        gradients: tensors in `model.parameters()` order, a name -> tensor mapping, or
            a `ClientUpdate`. FedSGD gradients by default; pass `training` with
            protocol "fedavg" for a weight delta.
        input_shape: one sample's shape, e.g. (3, 32, 32).
        num_samples: number of samples behind the update.
        labels: known labels (an extra assumption); None lets the attack infer or
            optimize them.
        attack: a registered attack name (`gradleak list`).
        knows_training: the attacker knows the local configuration (`training`) and
            simulates the local steps (SoK assumption level 3).
        bounds: per-channel (low, high) of valid inputs in model space, for clamping.
        **attack_options: the attack's constructor arguments (iterations, restarts, ...).
    """
    attacker = ATTACKS.create(attack, attack_options)
    update = as_update(model, gradients, num_samples=num_samples, training=training, model_mode=model_mode)
    label_tensor = None
    if labels is not None:
        label_tensor = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    knowledge = AttackerKnowledge(
        num_samples=num_samples,
        input_shape=tuple(input_shape),
        num_classes=output_classes(model, input_shape),
        label_knowledge=LabelKnowledge.GIVEN if label_tensor is not None else LabelKnowledge.UNKNOWN,
        labels=label_tensor,
        knows_training=knows_training,
        training=update.training if knows_training else None,
        bounds=None if bounds is None else (tuple(bounds[0]), tuple(bounds[1])),
    )
    return attacker.reconstruct(model, update, knowledge, seed=seed, callback=callback)


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


__all__ = ["as_update", "evaluate", "reconstruct", "LocalTraining", "Protocol"]
