"""The gradient-matching problem an optimization attack solves.

An attack compares what the client shared (`target`) with what the attacker predicts
the client would have shared for dummy data (`predict`). Two attacker models for a
FedAvg delta (SoK, Du et al., Tab. 2): one that does not know the local configuration
treats the delta as a single gradient step, target = -delta / assumed_lr (cosine
objectives are invariant to assumed_lr; L2 objectives are not); one that knows it
(assumption level 3) unrolls the client's local SGD on the dummy data and compares
deltas, differentiating through every local step.

Both compare in gradient units: the unrolling attacker divides the observed and the
simulated delta by -lr of the client's training, so at one local step its problem is the
one-step reader's at assumed_lr = lr (an L2 objective on the raw delta is lr^2 times
smaller, and L-BFGS's tolerances then stopped it early: the SoK Table 2 rerun in
experiments/README.md). `MatchingProblem.delta_scale` turns problem units back into the
update's (the Bayes attack models the defense's noise there).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gradleak.client.losses import client_loss, has_regularization, model_regularization
from gradleak.client.simulate import local_steps
from gradleak.errors import GradleakError
from gradleak.records import AttackerKnowledge, ClientUpdate, Protocol

log = logging.getLogger(__name__)

Predict = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class MatchingProblem:
    target: tuple[torch.Tensor, ...]
    predict: Predict
    gradient_view: tuple[torch.Tensor, ...]  # the update read as a gradient (for label rules)
    model: nn.Module  # the attacker's private copy, in the client's mode
    unrolled: bool
    loss: str = "cross-entropy"  # the client's training loss
    keep: tuple[bool, ...] | None = None  # tensors the objective compares (None: all)
    delta_scale: float = 1.0  # the shared update = delta_scale * (the target, in problem units)

    def select(self, tensors):
        """The compared tensors of a full per-parameter sequence."""
        return tensors if self.keep is None else [t for t, k in zip(tensors, self.keep) if k]


def validate_update(model: nn.Module, update: ClientUpdate) -> None:
    """Raise if the update does not fit the model's trainable parameters or is not finite."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if len(named) != len(update.tensors):
        raise GradleakError(
            f"the update has {len(update.tensors)} tensors but the model has {len(named)} trainable parameters"
        )
    for (name, param), tensor in zip(named, update.tensors):
        if tuple(tensor.shape) != tuple(param.shape):
            raise GradleakError(
                f"update tensor for parameter {name!r} has shape {tuple(tensor.shape)}, "
                f"the model's parameter has shape {tuple(param.shape)}"
            )
        if not torch.isfinite(tensor).all():
            raise GradleakError(f"update tensor for parameter {name!r} contains NaN or inf")


def skip_mask(update: ClientUpdate, skip: tuple[str, ...]) -> tuple[bool, ...] | None:
    """Which update tensors an objective compares when the parameters `skip` are left out
    (the adaptive attack on Soteria drops the defended layer; Balunovic et al. 2022)."""
    if not skip:
        return None
    unknown = sorted(set(skip) - set(update.names))
    if unknown:
        raise GradleakError(f"skip names parameters the update does not have: {unknown}; it has {list(update.names)}")
    keep = tuple(n not in skip for n in update.names)
    if not any(keep):
        raise GradleakError(f"skip leaves no parameter to compare: {list(skip)}")
    return keep


def build_problem(
    model: nn.Module, update: ClientUpdate, knowledge: AttackerKnowledge, *, assumed_lr: float = 1.0,
    skip: tuple[str, ...] = (),
) -> MatchingProblem:
    """The matching problem of `update`, comparing every tensor but those named in `skip`."""
    import dataclasses

    problem = _build_problem(model, update, knowledge, assumed_lr)
    keep = skip_mask(update, tuple(skip))
    return problem if keep is None else dataclasses.replace(problem, keep=keep)


def _build_problem(model, update, knowledge, assumed_lr) -> MatchingProblem:
    validate_update(model, update)
    if not (assumed_lr > 0 and math.isfinite(assumed_lr)):
        raise GradleakError(f"assumed_lr must be a positive finite number, got {assumed_lr!r}")
    work = copy.deepcopy(model).train(update.model_mode == "train")
    params = [p for p in work.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(True)
    observed = tuple(t.detach().to(device=params[0].device, dtype=params[0].dtype) for t in update.tensors)

    knows_steps = update.protocol is Protocol.FEDAVG and knowledge.knows_training
    if knows_steps and knowledge.training.steps(knowledge.num_samples) == 1:
        # One local step of plain SGD is one gradient step at the known lr: the unrolled
        # problem IS the one-step problem, so solve that one (same path, same numbers).
        knows_steps, assumed_lr = False, knowledge.training.lr

    if update.protocol is Protocol.FEDSGD:
        gradient_view = observed
    else:
        gradient_view = tuple(-t / assumed_lr for t in observed)

    if knows_steps:
        training = knowledge.training
        names = [n for n, p in work.named_parameters() if p.requires_grad]
        start = {n: p.detach().clone().requires_grad_(True) for n, p in zip(names, params)}
        buffers = {n: b.detach().clone() for n, b in work.named_buffers()}

        unit = -1.0 / training.lr  # gradient units: a delta of one step is -lr times a gradient

        def predict_unrolled(x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
            # the summed step gradients: (final - start) * unit without the float cancellation
            _, total = local_steps(
                work, start, {n: b.clone() for n, b in buffers.items()}, x, targets, training, create_graph=True
            )
            return tuple(total[n] for n in names)

        return MatchingProblem(tuple(t * unit for t in observed), predict_unrolled, gradient_view, work, True,
                               update.training.loss, delta_scale=-training.lr)

    def predict_step(x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss = client_loss(update.training.loss, work(x), targets) + model_regularization(work)
        return torch.autograd.grad(loss, params, create_graph=True)

    scale = 1.0 if update.protocol is Protocol.FEDSGD else -assumed_lr
    return MatchingProblem(gradient_view, predict_step, gradient_view, work, False, update.training.loss,
                           delta_scale=scale)


def update_mismatch(model: nn.Module, update: ClientUpdate, knowledge: AttackerKnowledge, data: torch.Tensor,
                    labels: torch.Tensor | None) -> float | None:
    """Relative L2 distance between the update `data` with `labels` would produce and the
    observed one, in the units the attacker compares; for a FedAvg delta read as one step
    of an assumed learning rate, after the best scale (the rate is unknown). None when the
    attack returned no labels or the update does not fit the model."""
    if labels is None:
        return None
    try:
        problem = build_problem(model, update, knowledge)
    except GradleakError:
        return None
    dtype, device = problem.target[0].dtype, problem.target[0].device
    x = data.detach().to(device=device, dtype=dtype).reshape(knowledge.num_samples, *knowledge.input_shape)
    y = labels.detach().reshape(-1).long().to(device)
    with torch.enable_grad():
        predicted = [p.detach().double() for p in problem.predict(x, y)]
    target = [t.double() for t in problem.target]
    norm = sum(float((t * t).sum()) for t in target) ** 0.5
    if norm == 0:
        return None
    scale = 1.0
    if update.protocol is Protocol.FEDAVG and not problem.unrolled:
        size = sum(float((p * p).sum()) for p in predicted)
        scale = sum(float((p * t).sum()) for p, t in zip(predicted, target)) / size if size > 0 else 0.0
    residual = sum(float(((scale * p - t) ** 2).sum()) for p, t in zip(predicted, target)) ** 0.5
    return residual / norm


@dataclass(frozen=True)
class Layout:
    """How one restart's unknowns sit in a row: the data (B, *input_shape), then
    optional label logits (B, C)."""

    num_samples: int
    input_shape: tuple[int, ...]
    num_classes: int | None = None  # set when labels are optimized too
    device: torch.device = torch.device("cpu")  # where the rows live: the model's device

    @property
    def data_size(self) -> int:
        return self.num_samples * math.prod(self.input_shape)

    def data(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[:, : self.data_size].reshape(rows.shape[0], self.num_samples, *self.input_shape)

    def label_logits(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[:, self.data_size:].reshape(rows.shape[0], self.num_samples, self.num_classes)

    def pack(self, data: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        parts = [data.reshape(data.shape[0], -1)]
        if logits is not None:
            parts.append(logits.reshape(logits.shape[0], -1))
        return torch.cat(parts, 1)


Distance = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], torch.Tensor]


def matching_objective(
    problem: MatchingProblem,
    layout: Layout,
    distance: str | Distance,
    labels: torch.Tensor | None,
    *,
    prior: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batched: bool = True,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], bool]:
    """The per-restart objective over rows, and whether it batches the restarts.

    Row i's loss is distance(predicted update for its data and labels, observed update)
    plus `prior` of its data (B, *shape) -> (,) . `distance` is a name of
    `STACKED_DISTANCES` or a function of stacked predictions (R, *shape) per tensor and the
    observed tensors, returning (R,) (a defense's conditional). Only the tensors
    `problem.keep` selects are compared. `labels` are fixed class indices (B,);
    None means the rows carry label logits, turned into soft labels by a softmax.
    Restarts are batched (`RestartBatcher`) when asked and the model and problem allow,
    whenever more than one row runs; otherwise rows are evaluated one after another with
    the same result up to rounding.
    """
    from gradleak.attacks.engine.batched import NotBatchable, RestartBatcher
    from gradleak.attacks.engine.objectives import RESTART_DISTANCES, STACKED_DISTANCES

    # the inner-product shortcut serves cosine over every tensor; anything else needs each gradient
    shortcut = distance == "cosine" and problem.keep is None
    stacked = STACKED_DISTANCES[distance] if isinstance(distance, str) else distance
    target = problem.select(problem.target)
    batcher = None
    if batched and not problem.unrolled and not has_regularization(problem.model):  # the batcher has no loss terms
        try:
            batcher = RestartBatcher(problem.model, problem.target, materialize=not shortcut,
                                     loss=problem.loss)
            batcher.probe(layout.num_samples, layout.input_shape)
        except NotBatchable as exc:
            batcher = None
            log.info("restarts run one after another: %s", exc)

    def targets_of(rows: torch.Tensor) -> torch.Tensor:
        if labels is None:
            return F.softmax(layout.label_logits(rows), dim=-1)
        return labels.expand(rows.shape[0], -1)

    def objective(rows: torch.Tensor) -> torch.Tensor:
        x, y = layout.data(rows), targets_of(rows)
        if batcher is not None and x.shape[0] > 1:  # one row: plain autograd is the faster path
            a, b = x.shape[0], x.shape[1]
            stats = batcher(x.reshape(a * b, *x.shape[2:]), y.reshape(a * b, *y.shape[2:]), a)
            if shortcut or (distance == "l2" and problem.keep is None):
                losses = RESTART_DISTANCES[distance](stats, problem.target)
            else:
                losses = stacked(problem.select(stats.grads), target)
        else:
            losses = torch.cat([stacked([g[None] for g in problem.select(problem.predict(x[i], y[i]))], target)
                                for i in range(x.shape[0])])
        if prior is not None:
            losses = losses + torch.stack([prior(x[i]) for i in range(x.shape[0])])
        return losses

    return objective, batcher is not None
