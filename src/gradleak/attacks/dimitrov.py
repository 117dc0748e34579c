"""Data leakage in federated averaging (Dimitrov, Balunovic, Konstantinov, Vechev, TMLR 2022).

Threat model: honest-but-curious server that knows the client's local configuration
(epochs, mini-batch size, learning rate, loss: assumption level 3) but not the order in
which the client visits its samples in each epoch, and uses image priors (level 1).

Method (from the paper's description; ours where it leaves room):
- one dummy set per epoch, X_e (N images) with soft labels, simulated in positional order:
  batch k of epoch e is X_e[k b : (k + 1) b]; the attacker differentiates through every
  local SGD step;
- objective: 1 - cosine between the simulated and the observed delta (in gradient units,
  delta / -lr), plus `tv` x total variation, plus the epoch-order-invariant prior: `invariance`
  x the mean squared distance of each epoch's images to the epochs' mean image after matching
  them (Hungarian assignment to epoch 0, recomputed every step): the same images reappear
  every epoch in an unknown order; plus `count_weight` x the squared distance of each epoch's
  summed soft labels to the label counts (given, or estimated from the update by the
  `count` rule on the delta read as the mean step's gradient). The paper estimates label
  counts per local step; we constrain them per epoch and let each step's share be optimized;
- signed Adam with inverting gradients' schedule and the pixel box; the result is the
  matched mean over epochs, one reconstructed data set.

A FedSGD update is the degenerate case: one epoch, one full batch, lr 1.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch.func import functional_call

from gradleak.attacks.base import OptimizationAttack, Solved
from gradleak.attacks.engine.adam import run_adam
from gradleak.attacks.engine.labels import recover_labels
from gradleak.attacks.engine.objectives import total_variation
from gradleak.attacks.engine.problem import Layout, validate_update
from gradleak.attacks.engine.restarts import (
    box_projection,
    run_restarts,
    sync_every_for,
)
from gradleak.checks import check_positive_float, check_positive_int
from gradleak.client.losses import client_loss, model_regularization
from gradleak.devices import model_device
from gradleak.errors import GradleakError
from gradleak.records import Assumption, LabelKnowledge, LocalTraining, Protocol


def simulate_epochs(model, start, buffers, x, soft, training: LocalTraining) -> list[torch.Tensor]:
    """The delta in gradient units (delta / -lr) of local SGD over per-epoch sets x (E, N, ...)
    with soft labels (E, N, C), batch k of epoch e being x[e, k b : (k + 1) b]."""
    names = list(start)
    current = dict(start)
    n = x.shape[1]
    b = n if training.batch_size is None else min(training.batch_size, n)
    bufs = {k: v.clone() for k, v in buffers.items()}
    for e in range(x.shape[0]):
        for k in range(0, n, b):
            out = functional_call(model, (current, bufs), (x[e, k:k + b],))
            loss = client_loss(training.loss, out, soft[e, k:k + b]) + model_regularization(model)
            grads = torch.autograd.grad(loss, [current[m] for m in names], create_graph=True)
            current = {m: current[m] - training.lr * g for m, g in zip(names, grads)}
    return [(current[m] - start[m]) / -training.lr for m in names]


def match_epochs(x: torch.Tensor) -> list[torch.Tensor]:
    """Per epoch, the permutation that aligns its images to epoch 0's (Hungarian on L2)."""
    flat = x.detach().reshape(x.shape[0], x.shape[1], -1)
    orders = [torch.arange(x.shape[1], device=x.device)]
    for e in range(1, x.shape[0]):
        cost = torch.cdist(flat[0].double(), flat[e].double()).cpu().numpy()
        _, cols = linear_sum_assignment(cost)
        orders.append(torch.as_tensor(cols, device=x.device))
    return orders


def assign_labels(probs: torch.Tensor, multiset: torch.Tensor) -> torch.Tensor:
    """The counted labels given to the reconstructed images, maximizing the summed log soft
    label (Hungarian); argmax when the counts do not cover every image."""
    if multiset.numel() != probs.shape[0]:
        return probs.argmax(-1)
    cost = -torch.log(probs.detach().double().cpu()[:, multiset] + 1e-12).numpy()
    rows, cols = linear_sum_assignment(cost)
    out = torch.empty(probs.shape[0], dtype=torch.long, device="cpu")
    out[torch.as_tensor(rows, device="cpu")] = multiset[torch.as_tensor(cols, device="cpu")]
    return out


class DimitrovFedAvg(OptimizationAttack):
    """Simulate the client's epochs with per-epoch dummy sets tied by an order-invariant prior.

    Args:
        iterations, lr, tv, restarts, signed, max_seconds: as inverting gradients.
        invariance: weight of the epoch-order-invariant prior (mean squared distance to the
            matched epoch mean).
        count_weight: weight of the per-epoch label-count constraint on the soft labels.
        restart_mode, halving: see `OptimizationAttack` (restarts run one row after another
            inside each step: the simulation does not batch).
    """

    name = "dimitrov"
    label_mode = LabelKnowledge.INFERRED

    def __init__(self, *, iterations: int = 1000, lr: float = 0.1, tv: float = 1e-2, invariance: float = 1.0,
                 count_weight: float = 1.0, restarts: int = 1, signed: bool = True,
                 max_seconds: float | None = None, restart_mode: str = "stacked",
                 halving: tuple[float, ...] | None = None, sync_every: int | None = None) -> None:
        super().__init__(restarts=restarts, max_seconds=max_seconds, restart_mode=restart_mode, halving=halving)
        self.iterations = check_positive_int("iterations", iterations)
        self.lr = check_positive_float("lr", lr)
        self.tv = check_positive_float("tv", tv, allow_zero=True)
        self.invariance = check_positive_float("invariance", invariance, allow_zero=True)
        self.count_weight = check_positive_float("count_weight", count_weight, allow_zero=True)
        self.signed = bool(signed)
        self.sync_every = None if sync_every is None else check_positive_int("sync_every", sync_every)

    def _iterations(self) -> int:
        return self.iterations

    def _assumptions(self, knowledge):
        return tuple(sorted(set(super()._assumptions(knowledge)) | {Assumption.PRIORS, Assumption.TRAINING_DETAILS}))

    def _training(self, update, knowledge) -> LocalTraining:
        if update.protocol is Protocol.FEDSGD:
            return LocalTraining(Protocol.FEDAVG, lr=1.0, epochs=1, batch_size=None, loss=update.training.loss)
        if not knowledge.knows_training or knowledge.training is None:
            raise GradleakError("attack 'dimitrov' simulates the client's epochs: it needs the local configuration "
                                "(knows_training=True with the client's LocalTraining)")
        return knowledge.training

    def _solve(self, model, update, knowledge, generators, deadline, on_step) -> Solved:
        validate_update(model, update)
        training = self._training(update, knowledge)
        work = copy.deepcopy(model).train(update.model_mode == "train")
        start = {n: p.detach().clone().requires_grad_(True) for n, p in work.named_parameters() if p.requires_grad}
        buffers = {n: b.detach().clone() for n, b in work.named_buffers()}
        device = model_device(model)
        target = [t.detach().to(device) / -training.lr for t in update.tensors]
        n, c, epochs = knowledge.num_samples, knowledge.num_classes, training.epochs
        counts = self._counts(work, update, knowledge, training, target).to(device)
        layout = Layout(epochs * n, knowledge.input_shape, c, device=device)
        t_norm = torch.sqrt(sum((t * t).sum() for t in target))

        def one(row: torch.Tensor) -> torch.Tensor:
            x = layout.data(row[None])[0].reshape(epochs, n, *knowledge.input_shape)
            logits = layout.label_logits(row[None])[0].reshape(epochs, n, c)
            soft = F.softmax(logits, -1)
            pred = simulate_epochs(work, start, buffers, x, soft, training)
            dot = sum((p * t).sum() for p, t in zip(pred, target))
            p_norm = torch.sqrt(sum((p * p).sum() for p in pred))
            loss = 1 - dot / (p_norm * t_norm + 1e-12)
            if self.tv > 0:
                loss = loss + self.tv * total_variation(x)
            if self.invariance > 0 and epochs > 1:
                orders = match_epochs(x)
                aligned = torch.stack([x[e, o] for e, o in enumerate(orders)])
                loss = loss + self.invariance * ((aligned - aligned.detach().mean(0)) ** 2).mean()
            if self.count_weight > 0:
                loss = loss + self.count_weight * ((soft.sum(1) - counts) ** 2).sum() / n
            return loss

        def objective(rows: torch.Tensor) -> torch.Tensor:
            return torch.stack([one(rows[i]) for i in range(rows.shape[0])])

        multiset = torch.repeat_interleave(torch.arange(c, device="cpu"), counts.round().long().cpu())
        rows = []
        for gen in generators:
            x = torch.randn(epochs * n, *knowledge.input_shape, generator=gen, device=gen.device)
            # soft labels start at the counted labels, in a random order per epoch (the order is unknown)
            base = int(torch.randint(2**31, (1,), generator=gen, device=gen.device))
            start_labels = torch.cat([multiset[torch.randperm(
                n, device="cpu", generator=torch.Generator(device="cpu").manual_seed(base + e))] for e in range(epochs)])
            logits = F.one_hot(start_labels, c).to(device=device, dtype=torch.float32)
            rows.append(layout.pack(x[None], logits[None]))
        milestones = [int(self.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]

        def run(r, step_cb):
            return run_adam(objective, r, iterations=self.iterations, lr=self.lr, signed=self.signed,
                            milestones=milestones, project=box_projection(layout, knowledge), deadline=deadline,
                            on_step=step_cb, halving=self.halving, sync_every=sync_every_for(self.sync_every, device))

        loop = run_restarts(run, torch.cat(rows), layout, together=self.restart_mode != "sequential", on_step=on_step)
        data, labels = [], []
        for row in loop.best:
            x = layout.data(row[None])[0].reshape(epochs, n, *knowledge.input_shape)
            soft = F.softmax(layout.label_logits(row[None])[0].reshape(epochs, n, c), -1)
            orders = match_epochs(x)
            data.append(torch.stack([x[e, o] for e, o in enumerate(orders)]).mean(0))
            probs = torch.stack([soft[e, o] for e, o in enumerate(orders)]).mean(0)
            labels.append(assign_labels(probs, multiset).to(device))
        return Solved(torch.stack(data), torch.stack(labels), loop, self._mode_used(False))

    def _counts(self, work, update, knowledge, training, target) -> torch.Tensor:
        """Per-class label counts: given, else the `count` rule on the mean step's gradient."""
        c = knowledge.num_classes
        if knowledge.label_knowledge is LabelKnowledge.GIVEN:
            labels = knowledge.labels.detach().long().reshape(-1)
        else:
            steps = training.steps(knowledge.num_samples)
            labels = recover_labels(work, tuple(t / steps for t in target), knowledge.num_samples,
                                    knowledge.input_shape, "count")
        return torch.bincount(labels.cpu(), minlength=c).to(torch.float32)
