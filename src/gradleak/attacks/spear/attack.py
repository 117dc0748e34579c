"""SPEAR (Dimitrov, Baader, Müller & Vechev, NeurIPS 2024): exact recovery of a whole batch
from the gradient of a fully connected first layer with a bias, followed by ReLU.

Threat model: honest-but-curious server with the model and the update (assumption level
0); no prior, no optimization, no tuning. FedSGD, or a FedAvg delta of one local step
(the delta is a multiple of the gradient; the scale cancels). ReLU is required: its zeros
in dL/dZ are what separates the samples; LeakyReLU, tanh or sigmoid leave no exact zeros,
and are refused by name, as are first layers that are not nn.Linear with a bias. The
cost grows like 2^B proposals (`solve.expected_proposals`); `budget` bounds it.

Each recovered sample carries a certificate (`SampleCertificate`): run through the model
with its label, it reproduces its own column of dL/dZ to a stated tolerance and switches
on exactly the units that column uses. Labels: "layer" (default) picks, for each sample,
the class whose gradient column matches (exact when the sample is); "last-layer" takes
the label multiset from the last layer by `label_rule` like the other attacks (or the
given labels) and assigns it to the samples by the same match.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.analytic_fc import _float_dtype, first_layer
from gradleak.attacks.base import Attack
from gradleak.attacks.engine.labels import LABEL_RULES
from gradleak.attacks.engine.problem import build_problem, validate_update
from gradleak.attacks.engine.restarts import known_or_inferred_labels
from gradleak.attacks.spear.solve import (
    Directions,
    factorize,
    find_directions,
    recover_inputs,
)
from gradleak.checks import check_choice, check_positive_float, check_positive_int
from gradleak.client.losses import client_loss
from gradleak.devices import generator, model_device
from gradleak.errors import GradleakError
from gradleak.records import (
    AttackerKnowledge,
    ClientUpdate,
    LabelKnowledge,
    Protocol,
    Reconstruction,
    SampleCertificate,
)

LABEL_SOURCES = ("layer", "last-layer")


@dataclass(frozen=True)
class SpearSolution:
    """SPEAR on one layer: the chosen directions, the layer's B inputs `xt` (B, n), its dL/dZ
    columns `d` (m, B) and their zeros (B, m), and the relative mismatch of d xt^T to [dW | db]."""

    chosen: list[int]
    directions: Directions
    xt: torch.Tensor
    d: torch.Tensor
    zeros: torch.Tensor
    dw: torch.Tensor
    certify_tol: float
    mismatch: float


def call_order(model: nn.Module, input_shape: tuple[int, ...], name: str | None = None) -> list[str]:
    """Names of the leaf modules (and of module `name`) in the order one forward pass finishes them."""
    probe = copy.deepcopy(model).eval()
    calls: list[str] = []
    for mod_name, module in probe.named_modules():
        if not list(module.children()) or mod_name == name:
            module.register_forward_hook(lambda *_a, _n=mod_name: calls.append(_n))
    with torch.no_grad():
        probe(torch.zeros(1, *input_shape, device=model_device(probe), dtype=_float_dtype(probe)))
    return calls


def following_module(model: nn.Module, input_shape: tuple[int, ...], name: str) -> tuple[str, nn.Module] | None:
    """The leaf module the forward pass calls right after module `name` (None: none, or a functional call)."""
    modules = dict(model.named_modules())
    calls = call_order(model, input_shape, name)
    if name not in calls:
        return None
    after = calls[calls.index(name) + 1:]
    return (after[0], modules[after[0]]) if after else None


def check_spear_layer(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, nn.Linear]:
    """(name, layer) of the first layer if SPEAR applies to it; refuses other layers by name."""
    name, layer = first_layer(model, input_shape)
    if not isinstance(layer, nn.Linear) or layer.bias is None:
        kind = type(layer).__name__ + ("" if not isinstance(layer, nn.Linear) else " without bias")
        raise GradleakError(f"spear needs the first layer to be nn.Linear with a bias followed by ReLU; "
                            f"layer {name!r} is {kind}")
    if layer.in_features != math.prod(input_shape):
        raise GradleakError(f"layer {name!r} takes {layer.in_features} features, the input has "
                            f"{math.prod(input_shape)}: the flattened input must reach it unchanged")
    nxt = following_module(model, input_shape, name)
    if nxt is not None and not isinstance(nxt[1], nn.ReLU):
        raise GradleakError(f"spear needs ReLU after layer {name!r} (its zeros separate the samples); "
                            f"it is followed by {nxt[0]!r}, {type(nxt[1]).__name__}")
    return name, layer


def output_gradients(model: nn.Module, layer: nn.Module, x: torch.Tensor, labels: torch.Tensor, loss: str,
                     batch: int) -> torch.Tensor:
    """dL/dz of `layer` for each row of `x` with its label, L = sum of losses / `batch` (FedSGD's mean)."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.enable_grad():
            out = model(x)
            total = client_loss(loss, out, labels, reduction="sum") / batch
            (grad,) = torch.autograd.grad(total, captured[0])
    finally:
        handle.remove()
    return grad.detach()


def pattern_mismatches(xt: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, zeros: torch.Tensor,
                       tol: float) -> torch.Tensor:
    """Per sample (rows of `xt`), the units it switches off (z < 0 by more than `tol`, relative)
    where its gradient column (`zeros`, (B, m): where it is zero) is not zero: an off ReLU passes
    no gradient, so each such unit proves the sample wrong. (The converse, an active unit with a
    gradient below the zero tolerance, can happen by chance; the residual covers those units.)"""
    z = xt @ weight.T + bias  # (B, m)
    margin = tol * (weight.norm(dim=1)[None, :] * xt.norm(dim=1)[:, None] + bias.abs()[None, :])
    return ((z < -margin) & ~zeros).sum(dim=1)


def candidate_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        outputs = model(x[:1]).shape[1]
    return 2 if outputs == 1 else outputs


def assign(scores: torch.Tensor, labels: list[int]) -> list[int]:
    """Give each sample (row of `scores`, (B, C)) one label of the multiset `labels`, best score first."""
    free = list(range(len(labels)))
    out = [-1] * scores.shape[0]
    pairs = sorted(((float(scores[i, labels[k]]), i, k) for i in range(scores.shape[0]) for k in free), reverse=True)
    used_s, used_k = set(), set()
    for _, i, k in pairs:
        if i in used_s or k in used_k:
            continue
        out[i] = labels[k]
        used_s.add(i)
        used_k.add(k)
    return out


class Spear(Attack):
    """Exact batch recovery from a fully connected ReLU first layer (SPEAR).

    Args:
        budget: most proposals (random (B-1)-row subsets) to draw.
        chunk: proposals evaluated together.
        zero_tol: |L_j q| <= zero_tol |L_j| counts as a zero (None: by the update's dtype,
            1e-10 in float64, 1e-5 in float32).
        min_zeros: zeros a direction needs beyond its own B-1 (None: max(2, 1% of the units)).
        certify_tol: residual a certified sample stays below (None: 1e-7 in float64, 1e-3 in float32).
        labels: "layer" (per-sample match, default) or "last-layer" (`label_rule`'s multiset).
        label_rule: the last-layer rule (`LABEL_RULES`) when labels="last-layer".
        max_seconds: wall-clock budget for the sampling (None: only `budget` bounds it).

    A zero of dL/dZ is tested against zero_tol and 4x the update's noise floor (the RMS of
    [dW | db] beyond rank B), so small noise on the update is tolerated
    (experiments/spear/noise.py).
    """

    name = "spear"
    label_mode = LabelKnowledge.INFERRED

    def __init__(self, *, budget: int = 2_000_000, chunk: int = 8192, zero_tol: float | None = None,
                 min_zeros: int | None = None, certify_tol: float | None = None, labels: str = "layer",
                 label_rule: str = "auto", max_seconds: float | None = None) -> None:
        self.budget = check_positive_int("budget", budget)
        self.max_seconds = None if max_seconds is None else check_positive_float("max_seconds", max_seconds)
        self.chunk = check_positive_int("chunk", chunk)
        self.zero_tol = None if zero_tol is None else check_positive_float("zero_tol", zero_tol)
        self.min_zeros = None if min_zeros is None else check_positive_int("min_zeros", min_zeros)
        self.certify_tol = None if certify_tol is None else check_positive_float("certify_tol", certify_tol)
        self.labels = str(check_choice("labels", labels, LABEL_SOURCES))
        self.label_rule = LABEL_RULES.entry(label_rule).name

    def _reconstruct(self, model: nn.Module, update: ClientUpdate, knowledge: AttackerKnowledge, *,
                     seed: int, callback) -> Reconstruction:
        """Factorize, sample directions, select B, fix scales, certify (`callback` is unused)."""
        start = time.perf_counter()
        validate_update(model, update)
        name, _ = check_spear_layer(model, knowledge.input_shape)
        b = knowledge.num_samples
        sol = self._solve(model, update, name, b, seed, start)
        chosen, directions, xt, d, zeros, dw = sol.chosen, sol.directions, sol.xt, sol.d, sol.zeros, sol.dw
        certify_tol = sol.certify_tol
        data = xt.to(dw.dtype).reshape(b, *knowledge.input_shape)
        problem = build_problem(model, update, knowledge)
        work = problem.model
        layer = dict(work.named_modules())[name]
        labels, certs = self._certify(work, layer, data, d, zeros, problem, knowledge, certify_tol,
                                     update.protocol is Protocol.FEDAVG)
        mismatch = sol.mismatch
        ok = len(chosen) == b and all(c.certified for c in certs)
        return Reconstruction(
            data=data, labels=labels, restart_losses=(mismatch,), best_restart=0, iterations=directions.proposals,
            seconds=time.perf_counter() - start, status="ok" if ok else "partial",
            assumptions=knowledge.assumptions(), label_knowledge=self._label_knowledge(knowledge),
            restart_statuses=("ok" if ok else "partial",), restart_mode="analytic", certificates=tuple(certs),
            notes=(f"spear: {sum(c.certified for c in certs)} of {b} samples certified (gradient residual <= "
                   f"{certify_tol:g}, worst {max(c.residual for c in certs):.1e}; ReLU pattern mismatches "
                   f"{sum(c.pattern_mismatches for c in certs)})",)
            + (() if len(chosen) == b else (f"spear found {len(chosen)} of {b} directions in "
                                            f"{directions.proposals} proposals; raise budget",))
            + (() if directions.consistent or len(chosen) < b else
               ("spear's selection failed the forward-pass check within the budget",)))

    def _solve(self, model: nn.Module, update: ClientUpdate, name: str, b: int, seed: int,
               start: float) -> SpearSolution:
        """SPEAR's linear algebra on the weight/bias gradient of layer `name`: its B inputs and dL/dZ columns."""
        by_name = dict(zip([n for n, p in model.named_parameters() if p.requires_grad], update.tensors))
        prefix = f"{name}." if name else ""
        dw, db = by_name[prefix + "weight"], by_name[prefix + "bias"]
        double = dw.dtype == torch.float64
        zero_tol = self.zero_tol or (1e-10 if double else 1e-5)
        certify_tol = self.certify_tol or (1e-7 if double else 1e-3)
        fact = factorize(dw, db, b)
        min_zeros = b - 1 + (self.min_zeros or max(2, math.ceil(0.01 * fact.active.numel())))
        gen = generator(dw.device, seed)
        weight, bias = (dict(model.named_parameters())[prefix + k].detach().double() for k in ("weight", "bias"))

        allowed = int(0.01 * fact.active.numel())  # a noisy update blurs a few units near the kink

        def consistent(columns: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
            xt, _ = recover_inputs(fact, columns)
            return pattern_mismatches(xt, weight, bias, zeros, certify_tol) <= allowed

        directions = find_directions(fact, b, gen, budget=self.budget, chunk=self.chunk, zero_tol=zero_tol,
                                     min_zeros=min_zeros, consistent=consistent,
                                     deadline=None if self.max_seconds is None else start + self.max_seconds)
        chosen = list(directions.chosen)
        columns = directions.columns[chosen]
        zeros = directions.zeros[chosen]
        if len(chosen) < b:  # complete the basis so that a batch still comes out; none of it is certified
            basis = torch.linalg.qr(torch.cat([columns.T, torch.eye(b, dtype=columns.dtype, device=columns.device)],
                                              dim=1)).Q
            columns = torch.cat([columns, basis[:, len(chosen):b].T])
            zeros = torch.cat([zeros, torch.zeros(b - len(chosen), zeros.shape[1], dtype=torch.bool,
                                                  device=zeros.device)])
        xt, d = recover_inputs(fact, columns)
        g = torch.cat([dw.double(), db.double()[:, None]], dim=1)
        rebuilt = d @ torch.cat([xt, torch.ones(b, 1, dtype=xt.dtype, device=xt.device)], dim=1)
        mismatch = float((rebuilt - g).norm() / g.norm())
        return SpearSolution(chosen=chosen, directions=directions, xt=xt, d=d, zeros=zeros, dw=dw,
                             certify_tol=certify_tol, mismatch=mismatch)

    def _certify(self, work, layer, data, d, zeros, problem, knowledge, tol, fedavg):
        """Labels and one certificate per sample (see `SampleCertificate`)."""
        b = data.shape[0]
        x = data.to(next(work.parameters()).dtype)
        classes = candidate_classes(work, x)
        every = torch.arange(classes, device=x.device).repeat(b)
        grads = output_gradients(work, layer, x.repeat_interleave(classes, 0), every, problem.loss, b)
        grads = grads.double().reshape(b, classes, -1)  # (B, C, m)
        target = d.T  # (B, m): the recovered columns of dL/dZ
        cos = torch.einsum("bcm,bm->bc", grads, target) / (grads.norm(dim=2) * target.norm(dim=1)[:, None] + 1e-300)
        if fedavg:
            cos = -cos  # a descent step: the delta points against the gradient
        if self.labels == "layer" and knowledge.label_knowledge is not LabelKnowledge.GIVEN:
            chosen = cos.argmax(dim=1).tolist()
        else:
            multiset = known_or_inferred_labels(problem, knowledge, self.label_rule).tolist()
            chosen = assign(cos, [int(v) for v in multiset])
        pred = grads[torch.arange(b, device=grads.device), torch.tensor(chosen, device=grads.device)]  # (B, m)
        scale = 1.0  # FedSGD shares the gradient itself; a FedAvg step shares about -lr times it
        if fedavg:
            per_sample = (pred * target).sum(dim=1) / (pred * pred).sum(dim=1).clamp_min(1e-300)
            scale = float(per_sample.median())  # one wrong sample does not move it
        residual = ((scale * pred - target).norm(dim=1) / target.norm(dim=1).clamp_min(1e-300)).tolist()
        with torch.no_grad():
            mismatches = pattern_mismatches(x.reshape(b, -1).double(), layer.weight.detach().double(),
                                            layer.bias.detach().double(), zeros, tol)
        certs = [SampleCertificate(residual=float(r), pattern_mismatches=int(n), tolerance=tol,
                                   certified=bool(r <= tol and n == 0))
                 for r, n in zip(residual, mismatches.tolist())]
        return torch.tensor(chosen, dtype=torch.long, device=x.device), certs
