"""Read-out of trap weights (Boenisch et al., "When the Curious Abandon Honesty", EuroS&P 2023).

Threat model: a malicious server (assumption level 5) that set the first fully connected
layer with `gradleak.server.Trap`. A unit that fired for exactly one sample gives that
sample as its weight-gradient row over its bias gradient; units that fired for several
give mixtures. Candidates that several units agree on are single samples (two mixtures
rarely agree), and a candidate inside the valid pixel box is more likely a single sample
than one outside it (a mixture whose weights differ in sign leaves the box): groups are
ranked by size, then by the share of their entries inside the box, then by strength.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from gradleak.attacks.analytic_fc import AnalyticFC
from gradleak.attacks.engine.problem import build_problem, validate_update
from gradleak.attacks.engine.restarts import known_or_inferred_labels
from gradleak.errors import GradleakError
from gradleak.records import Assumption, AttackerKnowledge, ClientUpdate, Reconstruction
from gradleak.server import first_layer


def agreeing_groups(cand: torch.Tensor, match_tol: float) -> list[list[int]]:
    """Groups of rows of `cand` within `match_tol` (relative) of the group's first row, each
    group's members in row order (the first is the strongest when rows are so sorted).

    Rows closer than tol * |row| are closer along any unit direction too, so the rows are
    sorted by one fixed random projection and each is compared only with its window there.
    """
    m = cand.shape[0]
    if m == 0:
        return []
    r = torch.randn(cand.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    proj = cand @ (r / r.norm()).to(cand.device)
    order = proj.argsort()
    sorted_proj = proj[order]
    norms = cand.norm(dim=1).clamp_min(1e-12)
    taken = torch.zeros(m, dtype=torch.bool, device=cand.device)
    groups: list[list[int]] = []
    for i in range(m):  # strongest first
        if taken[i]:
            continue
        tol = match_tol * norms[i]
        lo = int(torch.searchsorted(sorted_proj, proj[i] - tol))
        hi = int(torch.searchsorted(sorted_proj, proj[i] + tol, right=True))
        window = order[lo:hi]
        window = window[~taken[window]]
        members = window[(cand[window] - cand[i]).norm(dim=1) <= tol]
        taken[members] = True
        groups.append(sorted(members.tolist()))
    return groups


def trapped_samples(weight_grad: torch.Tensor, bias_grad: torch.Tensor, num_samples: int, input_shape, *,
                    bounds=None, min_bias: float = 1e-6, match_tol: float = 1e-4):
    """Samples (num_samples, features) read from the units, and the units behind each."""
    db = bias_grad.double()
    strength = db.abs()
    usable = (strength > min_bias * strength.max()).nonzero().squeeze(1)
    usable = usable[strength[usable].argsort(descending=True)]
    cand = weight_grad.double()[usable] / db[usable, None]
    groups = agreeing_groups(cand, match_tol)
    inside = torch.ones(len(usable), dtype=torch.float64)
    if bounds is not None:
        shape = (len(usable), *input_shape)
        low = torch.tensor(bounds[0], dtype=torch.float64, device=cand.device).reshape(1, -1, *([1] * (len(input_shape) - 1)))
        high = torch.tensor(bounds[1], dtype=torch.float64, device=cand.device).reshape(low.shape)
        x = cand.reshape(shape)
        slack = 1e-3 * (high - low)
        inside = ((x >= low - slack) & (x <= high + slack)).flatten(1).double().mean(1)
    order = sorted(range(len(groups)), key=lambda g: (-len(groups[g]), -float(inside[groups[g][0]]), groups[g][0]))
    order = order[:num_samples]
    data = torch.zeros(num_samples, weight_grad.shape[1], dtype=weight_grad.dtype, device=weight_grad.device)
    units: list[tuple[int, ...]] = []
    for k, g in enumerate(order):
        data[k] = cand[groups[g][0]].to(weight_grad.dtype)
        units.append(tuple(sorted(int(usable[m]) for m in groups[g])))
    units += [()] * (num_samples - len(order))
    return data, units


class TrapReadout(AnalyticFC):
    """The samples trapped alone by units of a trap-weight first layer.

    Args: as `analytic-fc` (min_bias, match_tol, label_rule).
    """

    name = "trap"

    def _reconstruct(self, model: nn.Module, update: ClientUpdate, knowledge: AttackerKnowledge, *,
                     seed: int, callback) -> Reconstruction:
        """Read the trapped samples off the first layer's update (`seed`, `callback` unused)."""
        start = time.perf_counter()
        validate_update(model, update)
        name, layer = first_layer(model, knowledge.input_shape)
        size = 1
        for s in knowledge.input_shape:
            size *= s
        if not isinstance(layer, nn.Linear) or layer.bias is None or layer.in_features != size:
            raise GradleakError(f"attack 'trap' reads a fully connected first layer with a bias that takes the "
                                f"flattened input; layer {name!r} is {type(layer).__name__}: send the model with "
                                "the trap server (--server trap) first")
        by_name = update.as_mapping()
        prefix = f"{name}." if name else ""
        flat, units = trapped_samples(by_name[prefix + "weight"], by_name[prefix + "bias"], knowledge.num_samples,
                                      tuple(knowledge.input_shape), bounds=knowledge.bounds,
                                      min_bias=self.min_bias, match_tol=self.match_tol)
        labels = known_or_inferred_labels(build_problem(model, update, knowledge), knowledge, self.label_rule)
        found = sum(1 for u in units if u)
        return Reconstruction(
            data=flat.reshape(knowledge.num_samples, *knowledge.input_shape), labels=labels,
            restart_losses=(0.0,), best_restart=0, iterations=0, seconds=time.perf_counter() - start,
            status="ok" if found == knowledge.num_samples else "partial",
            assumptions=self._assumptions(knowledge), label_knowledge=self._label_knowledge(knowledge),
            restart_statuses=("ok",), restart_mode="analytic", units=tuple(units))

    def _assumptions(self, knowledge: AttackerKnowledge) -> tuple[Assumption, ...]:
        return tuple(sorted(set(knowledge.assumptions()) | {Assumption.MALICIOUS}))


__all__ = ["TrapReadout", "trapped_samples"]
