"""Analytic inversion of a fully connected first layer (Phong et al. 2018; Fowl et al. 2022).

Threat model: honest-but-curious server with the model and the update (assumption level
0); no optimization, no prior. If the first layer that sees the input is z = W x + b,
the gradient of unit i is dW_i = sum_b d_bi x_b / B and db_i = sum_b d_bi / B, so
dW_i / db_i is a convex-like mix of the samples that reach unit i, and exactly x_b when
sample b alone does (ReLU after the layer makes this common; with one sample every
unit with db_i != 0 gives x). A FedAvg delta read as one step gives the same ratios.
Candidates that agree (relative distance below `match_tol`) are grouped; the B largest
groups are the reconstruction, and `Reconstruction.units` says which units gave each.
PRECODE's bottleneck does not help against it (ALGORITHMS.md).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from gradleak.attacks.base import Attack
from gradleak.attacks.engine.labels import LABEL_RULES
from gradleak.attacks.engine.problem import build_problem, validate_update
from gradleak.attacks.engine.restarts import known_or_inferred_labels
from gradleak.checks import check_positive_float
from gradleak.devices import model_device
from gradleak.errors import GradleakError
from gradleak.records import (
    AttackerKnowledge,
    ClientUpdate,
    LabelKnowledge,
    Reconstruction,
)


def _float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter (a float64 model takes float64 inputs)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())


def first_layer(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, nn.Module]:
    """(name, module) of the first parameterized module the input reaches in a forward pass."""
    probe = copy.deepcopy(model).eval()  # hooks and mode changes stay off the caller's model
    modules = dict(model.named_modules())
    calls: list[str] = []
    for name, module in probe.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            module.register_forward_pre_hook(lambda mod, args, _name=name: calls.append(_name))
    with torch.no_grad():
        probe(torch.zeros(1, *input_shape, device=model_device(probe), dtype=_float_dtype(probe)))
    if not calls:
        raise GradleakError("the model has no parameterized layer the input reaches")
    return calls[0], modules[calls[0]]


def invert_linear(weight_grad: torch.Tensor, bias_grad: torch.Tensor, num_samples: int, *,
                  min_bias: float = 1e-6, match_tol: float = 1e-4) -> tuple[torch.Tensor, list[list[int]]]:
    """Samples (num_samples, in_features) and the units each was read from.

    Units with |db_i| <= `min_bias` * max|db| are skipped (no sample reached them). Groups
    are formed greedily from the strongest unit down; a group's value is its first member
    (an exact copy when the group is a single sample). Missing groups are zeros.
    """
    db = bias_grad.double()
    strength = db.abs()
    usable = (strength > min_bias * strength.max()).nonzero().squeeze(1)
    usable = usable[strength[usable].argsort(descending=True)]
    candidates = weight_grad.double()[usable] / db[usable, None]
    reps: list[torch.Tensor] = []
    groups: list[list[int]] = []
    for unit, cand in zip(usable.tolist(), candidates):
        for rep, members in zip(reps, groups):
            if (cand - rep).norm() <= match_tol * max(float(rep.norm()), 1e-12):
                members.append(unit)
                break
        else:
            reps.append(cand)
            groups.append([unit])
    order = sorted(range(len(groups)), key=lambda g: (-len(groups[g]), groups[g][0]))[:num_samples]
    data = torch.zeros(num_samples, weight_grad.shape[1], dtype=weight_grad.dtype, device=weight_grad.device)
    units: list[list[int]] = []
    for k, g in enumerate(order):
        data[k] = reps[g].to(weight_grad.dtype)
        units.append(sorted(groups[g]))
    units += [[] for _ in range(num_samples - len(order))]
    return data, units


class AnalyticFC(Attack):
    """Exact single-layer inversion of a fully connected first layer with a bias.

    Args:
        min_bias: skip units whose bias gradient is below this fraction of the largest.
        match_tol: relative distance under which two units' candidates are the same sample.
        label_rule: how labels are recovered when not given (`LABEL_RULES`).
    """

    name = "analytic-fc"
    label_mode = LabelKnowledge.INFERRED

    def __init__(self, *, min_bias: float = 1e-6, match_tol: float = 1e-4, label_rule: str = "auto") -> None:
        self.min_bias = check_positive_float("min_bias", min_bias)
        self.match_tol = check_positive_float("match_tol", match_tol)
        self.label_rule = LABEL_RULES.entry(label_rule).name

    def _reconstruct(self, model: nn.Module, update: ClientUpdate, knowledge: AttackerKnowledge, *,
                     seed: int, callback) -> Reconstruction:
        """Read the samples off the first layer's gradient (`seed` and `callback` are unused)."""
        start = time.perf_counter()
        validate_update(model, update)
        name, layer = first_layer(model, knowledge.input_shape)
        if not isinstance(layer, nn.Linear) or layer.bias is None:
            kind = type(layer).__name__ + ("" if not isinstance(layer, nn.Linear) else " without bias")
            raise GradleakError(f"{self.name} needs the first layer to be nn.Linear with a bias; "
                                f"layer {name!r} is {kind}")
        size = 1
        for s in knowledge.input_shape:
            size *= s
        if layer.in_features != size:
            raise GradleakError(f"layer {name!r} takes {layer.in_features} features, the input has {size}: "
                                "the flattened input must reach it unchanged")
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        by_name = dict(zip(names, update.tensors))
        prefix = f"{name}." if name else ""
        flat, units = invert_linear(by_name[prefix + "weight"], by_name[prefix + "bias"], knowledge.num_samples,
                                    min_bias=self.min_bias, match_tol=self.match_tol)
        problem = build_problem(model, update, knowledge)
        labels = known_or_inferred_labels(problem, knowledge, self.label_rule)
        found = sum(1 for u in units if u)
        return Reconstruction(
            data=flat.reshape(knowledge.num_samples, *knowledge.input_shape),
            labels=labels,
            restart_losses=(0.0,),
            best_restart=0,
            iterations=0,
            seconds=time.perf_counter() - start,
            status="ok" if found == knowledge.num_samples else "partial",
            assumptions=self._assumptions(knowledge),
            label_knowledge=self._label_knowledge(knowledge),
            restart_statuses=("ok",),
            restart_mode="analytic",
            units=tuple(tuple(u) for u in units),
        )
