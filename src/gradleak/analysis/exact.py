"""Exact-leakage certificates: for each batch size, whether one update determines the whole
batch exactly, before any attack is run.

SPEAR (Dimitrov et al., NeurIPS 2024) recovers a batch of B exactly from a fully connected
first layer with a bias followed by ReLU when, for the batch's D = dL/dZ (units x B) and
inputs X: (1) [dW | db] = D [X^T | 1] has rank B (so B <= units and B <= inputs + 1), and
(2) every sample i leaves enough units off that its zeros pin its direction down: the rows
of D on which column i is zero have rank B-1 among the other columns, with at least
max(B-1 + the attack's margin, 2 (B-1)) of them (the attack's sparsity filter, and its
leave-out test, which asks the zeros to keep rank B-1 without the B-1 drawn rows). Then
each sample is found by a random (B-1)-row proposal with probability
p_i ~= (z_i / m_a)^(B-1) f_i (z_i its zero units among the m_a units the batch uses,
`solve.hit_probability`; f_i the fraction of subsets of its zeros that pin its direction,
estimated from 256 seeded subsets: about 1 for wide layers, smaller when the zero rows are
sparse), and the expected proposals and the chance that the attack's budget finds every
sample follow (`solve.expected_proposals`).

The conditions are checked on seeded probe batches (random N(0, 1) inputs unless `inputs`
gives a pool to draw from, e.g. a data set's normalized images) and random labels, as
R-GAP's rank analysis is checked at a seeded input: they are generic in the weights but
depend on how the data switch units on, so a pool of real inputs gives the honest answer.
R-GAP (Zhu & Blaschko 2021) inverts one sample: its column is exact for B = 1 when the
rank analysis finds no deficit, and "one sample only" above.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from gradleak.analysis.rank import rank_analysis
from gradleak.attacks.spear import check_spear_layer, expected_proposals, output_gradients, success_probability
from gradleak.errors import GradleakError

DEFAULT_BUDGET = 2_000_000  # Spear's default budget


@dataclass(frozen=True)
class BatchCertificate:
    """One batch size: SPEAR's conditions and cost at a probe batch, and R-GAP's verdict."""

    batch: int
    spear_exact: bool | None  # None: SPEAR does not apply to the model
    spear_reason: str
    min_zero_units: int | None  # the fewest units a probe sample leaves off
    expected_proposals: float | None
    success_probability: float | None  # that `budget` proposals find every sample
    rgap_exact: bool | None  # None: R-GAP does not apply
    rgap_reason: str


@dataclass(frozen=True)
class ExactReport:
    """Per batch size up to `max_batch`; `spear_limit`: the largest B below which every size is exact."""

    input_shape: tuple[int, ...]
    spear_layer: str | None  # the fully connected ReLU layer analysed
    spear_ends: str | None  # why SPEAR's analysis stops at the first layer, when it does
    rgap_ends: str | None  # why R-GAP's does, when it does
    budget: int
    rows: tuple[BatchCertificate, ...]
    seed: int

    @property
    def spear_limit(self) -> int:
        limit = 0
        for row in self.rows:
            if not row.spear_exact:
                break
            limit = row.batch
        return limit

    def to_json(self) -> dict:
        return {"input_shape": list(self.input_shape), "spear_layer": self.spear_layer,
                "spear_ends": self.spear_ends, "rgap_ends": self.rgap_ends, "budget": self.budget,
                "spear_limit": self.spear_limit, "seed": self.seed, "rows": [asdict(r) for r in self.rows]}


def pinning_fraction(others: torch.Tensor, gen: torch.Generator, trials: int = 256) -> float:
    """Fraction of random (B-1)-subsets S of a sample's zero units (the columns of `others`,
    (B-1, z): the other samples' gradients there) that pin its direction down as the attack
    needs: the rows S have rank B-1 (the proposal is unique) and so do the rest (the leave-out test)."""
    k, z = others.shape
    perms = torch.rand(trials, z, generator=gen).argsort(dim=1).to(others.device)
    rows = others.T  # (z, B-1)
    drawn, rest = rows[perms[:, :k]], rows[perms[:, k:]]
    full = (torch.linalg.matrix_rank(drawn) == k) & (torch.linalg.matrix_rank(rest) == k)
    return float(full.double().mean())


def spear_conditions(model: nn.Module, layer: nn.Linear, x: torch.Tensor, labels: torch.Tensor, loss: str,
                     margin: int | None = None, gen: torch.Generator | None = None
                     ) -> tuple[bool, str, list[int], int, list[float]]:
    """(conditions hold, reason, zero units per sample, units used, pinning fractions) for one
    probe batch `x` (B, n)."""
    b = x.shape[0]
    d = output_gradients(model, layer, x, labels, loss, b).double()  # (B, m)
    used = (d != 0).any(dim=0)
    m_a = int(used.sum())
    zeros = [int(((d[i] == 0) & used).sum()) for i in range(b)]
    xs = torch.cat([x.reshape(b, -1).double(), torch.ones(b, 1, dtype=torch.float64, device=x.device)], dim=1)
    if b > min(layer.out_features, layer.in_features + 1):
        return False, f"B > min(units, inputs + 1) = {min(layer.out_features, layer.in_features + 1)}", zeros, m_a, []
    if int(torch.linalg.matrix_rank(d)) < b or int(torch.linalg.matrix_rank(xs)) < b:
        return False, "the layer gradient has rank below B", zeros, m_a, []
    if b == 1:  # one sample needs no proposals: the bias column scales the single direction
        return True, "ok", zeros, m_a, [1.0]
    # the attack's filter (B-1 + margin zeros), and its leave-out test: without the B-1 drawn rows the
    # remaining zeros must still have rank B-1, which needs 2 (B-1) of them
    need = max(b - 1 + (margin if margin is not None else max(2, math.ceil(0.01 * m_a))), 2 * (b - 1))
    gen = gen or torch.Generator().manual_seed(0)
    fractions = []
    for i in range(b):
        if zeros[i] < need:
            return False, f"a sample leaves {zeros[i]} units off, the attack needs {need}", zeros, m_a, fractions
        rows = d[:, (d[i] == 0) & used]  # (B, z_i): column i of D is zero there
        others = torch.cat([rows[:i], rows[i + 1:]])
        if int(torch.linalg.matrix_rank(others)) < b - 1:
            return False, "a sample's zero units do not pin its direction (rank < B-1)", zeros, m_a, fractions
        fractions.append(pinning_fraction(others, gen))
        if fractions[-1] == 0:
            return (False, "a sample's zero units are too sparse: no drawn subset pins its direction and passes "
                    "the leave-out test", zeros, m_a, fractions)
    return True, "ok", zeros, m_a, fractions


def exact_leakage(model: nn.Module, input_shape: tuple[int, ...], *, max_batch: int = 32,
                  budget: int = DEFAULT_BUDGET, seed: int = 0, inputs: torch.Tensor | None = None,
                  num_classes: int | None = None, loss: str = "cross-entropy") -> ExactReport:
    """Certificates for B = 1..`max_batch` (see the module docstring). `inputs`: a pool (N, *input_shape)
    in the model's input space to draw probe batches from (default: seeded N(0, 1))."""
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise GradleakError(f"max_batch must be a positive integer, got {max_batch!r}")
    if inputs is not None and (inputs.dim() != len(input_shape) + 1 or tuple(inputs.shape[1:]) != tuple(input_shape)):
        raise GradleakError(f"inputs must have shape (N, {', '.join(map(str, input_shape))}), "
                            f"got {tuple(inputs.shape)}")
    work = copy.deepcopy(model).double().eval()
    device = next(work.parameters()).device
    try:
        layer_name, _ = check_spear_layer(work, tuple(input_shape))
        spear_ends = None
    except GradleakError as exc:
        layer_name, spear_ends = None, str(exc)
    try:
        rgap_ok = rank_analysis(model, input_shape, seed=seed).recoverable
        rgap_ends = None
    except GradleakError as exc:
        rgap_ok, rgap_ends = None, str(exc)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        classes = work(torch.zeros(1, *input_shape, dtype=torch.float64, device=device)).shape[1]
    if classes == 1 and loss == "cross-entropy":
        loss = "logistic"  # one logit: R-GAP's setting, labels 0 or 1
    classes = num_classes or (2 if classes == 1 else classes)
    rows = []
    for b in range(1, max_batch + 1):
        if rgap_ok is None:
            rgap = (None, rgap_ends)
        elif b == 1:
            rgap = (rgap_ok, "every layer determined" if rgap_ok else "rank deficient")
        else:
            rgap = (False, "R-GAP inverts one sample")
        if layer_name is None:
            rows.append(BatchCertificate(b, None, spear_ends, None, None, None, *rgap))
            continue
        if inputs is None:
            x = torch.randn(b, *input_shape, generator=gen, dtype=torch.float64)
        else:
            if b > inputs.shape[0]:
                rows.append(BatchCertificate(b, None, f"the pool holds {inputs.shape[0]} inputs", None, None, None,
                                             *rgap))
                continue
            x = inputs[torch.randperm(inputs.shape[0], generator=gen)[:b]].double()
        y = torch.randint(classes, (b,), generator=gen)
        layer = dict(work.named_modules())[layer_name]
        ok, reason, zeros, m_a, fractions = spear_conditions(work, layer, x.to(device), y.to(device), loss, gen=gen)
        cost = expected_proposals(zeros, m_a, b, fractions) if ok else None
        chance = success_probability(zeros, m_a, b, budget, fractions) if ok else None
        exact = ok and chance is not None and chance >= 0.99
        if ok and not exact:
            reason = f"the budget of {budget} proposals finds every sample with probability {chance:.2f}"
        rows.append(BatchCertificate(b, exact, reason, min(zeros), cost, chance, *rgap))
    return ExactReport(tuple(input_shape), layer_name, spear_ends, rgap_ends, budget, tuple(rows), seed)
