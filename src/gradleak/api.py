"""Python API for users with their own model and captured updates.

`reconstruct` attacks an update you captured (gradients or a weight delta) on your own
`nn.Module`; `evaluate` scores a reconstruction against the ground truth in [0, 1]
pixel space.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from gradleak.attacks import ATTACKS, ProgressCallback
from gradleak.errors import GradleakError
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


def output_classes(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Number of model outputs for one input of `input_shape` (run on a private copy)."""
    probe = copy.deepcopy(model).eval()
    try:
        with torch.no_grad():
            out = probe(torch.zeros(1, *input_shape))
    except (RuntimeError, TypeError, ValueError) as exc:
        raise GradleakError(
            f"input_shape {tuple(input_shape)} does not fit the model: {str(exc).splitlines()[0]}"
        ) from None
    return int(out.reshape(1, -1).shape[1])


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
    attack_cls = ATTACKS.get(attack)
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
    return make_attack(attack_cls, attack_options).reconstruct(model, update, knowledge, seed=seed,
                                                               callback=callback)


def option_parameters(factory: Any) -> list:
    """The keyword parameters (inspect.Parameter) a class's constructor or a function takes,
    a class's parents' included when it forwards **options; first occurrence wins."""
    import inspect

    out: dict[str, inspect.Parameter] = {}
    targets = factory.__mro__ if isinstance(factory, type) else (factory,)
    for target in targets:
        params = inspect.signature(target.__init__ if isinstance(factory, type) else target).parameters.values()
        for p in params:
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                out.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return list(out.values())


def accepted_options(factory: type) -> list[str]:
    """The keyword arguments a class's constructor takes (see `option_parameters`)."""
    return [p.name for p in option_parameters(factory)]


def make_attack(attack_cls, options: Mapping[str, Any]):
    """Instantiate an attack, naming the accepted options when one is unknown."""
    accepted = accepted_options(attack_cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise GradleakError(f"attack {attack_cls.name!r} does not take {unknown}; it takes: {', '.join(accepted)}")
    return attack_cls(**options)


def evaluate(
    reconstruction: Reconstruction | torch.Tensor,
    original: torch.Tensor,
    *,
    normalization=None,
    true_labels: torch.Tensor | None = None,
) -> ImageMetrics:
    """Score a reconstruction against the originals (both in model space when
    `normalization` is given, else in [0, 1] pixel space), with Hungarian matching."""
    from gradleak.metrics import evaluate_images

    data = reconstruction.data if isinstance(reconstruction, Reconstruction) else reconstruction
    predicted = reconstruction.labels if isinstance(reconstruction, Reconstruction) else None
    if normalization is not None:
        data, original = normalization.denormalize(data), normalization.denormalize(original)
    return evaluate_images(data.detach(), original.detach(), predicted_labels=predicted,
                           true_labels=true_labels if predicted is not None else None)


__all__ = ["as_update", "evaluate", "reconstruct", "LocalTraining", "Protocol"]
