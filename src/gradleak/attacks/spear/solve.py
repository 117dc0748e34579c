"""SPEAR's linear algebra (Dimitrov, Baader, Müller & Vechev, NeurIPS 2024), as plain functions.

A fully connected layer Z = W X + b 1^T (X: n x B, one column per sample) followed by
ReLU has the gradients dW = D X^T and db = D 1 with D = dL/dZ (m x B). Stacked,
G = [dW | db] = D [X^T | 1] has rank B, so its rank-B factorization G = L R gives
D = L Q and [X^T | 1] = Q^-1 R for one unknown invertible B x B matrix Q. ReLU makes D
sparse: D_ji = 0 wherever unit j is off for sample i. Any B-1 rows of L on which column
i of D is zero have q_i (column i of Q) as their null vector, so random subsets of B-1
rows propose directions; a proposal from a wrong subset is zero only on its own B-1
rows, a right one on every row where the sample is off (about half the units), which
filters them. B independent directions of high sparsity are kept (greedy), and the
bias column of R fixes their scales: with Q = Qn diag(s), Qn^-1 r_bias = s.

Our choices where the description leaves them open: the factorization is a truncated
SVD (L = U S, R = V^T); a proposal's null vector is a batched linear solve with its
last entry set to 1; every accepted direction is refined as the smallest right singular
vector of L on all rows it zeroes, and refused when those rows leave a null space of
more than one dimension (rows zero for two samples at once); a row is zero when
|L_j q| <= zero_tol * |L_j|.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch

from gradleak.errors import GradleakError


@dataclass(frozen=True)
class Factorization:
    """G = [dW | db] ~= left @ right, rank `b`; `active` are the units with a nonzero row."""

    left: torch.Tensor  # (m, b) float64
    right: torch.Tensor  # (b, n + 1) float64
    singular: torch.Tensor  # the leading singular values (up to b + 1)
    active: torch.Tensor  # (m_a,) indices of units whose gradient row is nonzero
    noise: float = 0.0  # RMS of G's entries beyond rank b: the noise floor of L's entries


@dataclass(frozen=True)
class Directions:
    """Accepted directions (unit columns) with the units each one zeroes, and the b chosen."""

    columns: torch.Tensor  # (k, b) float64, unit norm
    zeros: torch.Tensor  # (k, m) bool: units where L q is zero
    proposals: int  # proposals drawn to find them
    chosen: tuple[int, ...] = ()  # the selection (`select`); fewer than b when none was found
    consistent: bool = False  # the selection passed the consistency check


# per chosen direction: does the sample it yields switch on exactly the units its column uses?
Consistency = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def factorize(weight_grad: torch.Tensor, bias_grad: torch.Tensor, b: int, *, rank_tol: float = 1e-9) -> Factorization:
    """Truncated SVD of [dW | db] at rank `b` (float64); raises when its rank is below `b`."""
    g = torch.cat([weight_grad.double(), bias_grad.double()[:, None]], dim=1)
    if b > min(g.shape):
        raise GradleakError(f"spear needs num_samples <= min(units, inputs + 1) = {min(g.shape)}, got {b}")
    u, s, vh = _truncated_svd(g, b)
    if not bool(s[b - 1] > rank_tol * s[0]):
        raise GradleakError(f"the layer gradient has rank below num_samples ({b}): singular values "
                            f"{[float(v) for v in s[:b]]}; samples repeat or units are too few")
    row_norm = g.norm(dim=1)
    active = (row_norm > 1e-12 * row_norm.max()).nonzero().squeeze(1)
    left = torch.zeros_like(u[:, :b])
    left[active] = u[active, :b] * s[:b]  # dead units' rows are exactly zero, not SVD round-off
    rest = float((g[active] - left[active] @ vh[:b]).pow(2).sum())  # directly: a difference of squares cancels
    dof = max(active.numel() * g.shape[1] - b * (active.numel() + g.shape[1]), 1)
    return Factorization(left, vh[:b], s[: b + 1], active, math.sqrt(rest / dof))


def _truncated_svd(g: torch.Tensor, b: int, oversample: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leading singular triplets of `g` by a seeded randomized range finder with two power
    iterations (exact when g has rank <= b + oversample; the full SVD for small matrices)."""
    k = min(b + oversample, *g.shape)
    if k == min(g.shape) or g.numel() < 200_000:
        return torch.linalg.svd(g, full_matrices=False)
    omega = torch.randn(g.shape[1], k, dtype=g.dtype, device="cpu",
                        generator=torch.Generator().manual_seed(0)).to(g.device)
    basis = torch.linalg.qr(g @ omega).Q
    for _ in range(2):
        basis = torch.linalg.qr(g @ torch.linalg.qr(g.T @ basis).Q).Q
    u, s, vh = torch.linalg.svd(basis.T @ g, full_matrices=False)
    return basis @ u, s, vh


def zero_rows(left: torch.Tensor, q: torch.Tensor, zero_tol: float, floor: float = 0.0) -> torch.Tensor:
    """(k, m) bool: |L_j q| <= zero_tol |L_j| |q| + floor |q| for each column of q (b, k)."""
    scale = left.norm(dim=1)[:, None] * q.norm(dim=0)[None, :]
    return ((left @ q).abs() <= zero_tol * scale + floor * q.norm(dim=0)[None, :]).T


def propose(left_active: torch.Tensor, count: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, b) unit null vectors of random (b-1)-row subsets of `left_active` (NaN: singular
    draws), and the subsets (count, b-1)."""
    m_a, b = left_active.shape
    rows = torch.randint(m_a, (count, b - 1), generator=gen, device=left_active.device)
    a = left_active[rows]  # (count, b-1, b)
    y, info = torch.linalg.solve_ex(a[..., : b - 1], -a[..., b - 1:])
    q = torch.cat([y[..., 0], torch.ones(count, 1, dtype=a.dtype, device=a.device)], dim=1)
    q = q / q.norm(dim=1, keepdim=True)
    sorted_rows = rows.sort(dim=1).values
    bad = (info != 0) | (sorted_rows[:, 1:] == sorted_rows[:, :-1]).any(dim=1) | ~torch.isfinite(q).all(dim=1)
    q[bad] = float("nan")
    return q, rows


def refine(left: torch.Tensor, zeros: torch.Tensor, *, gap: float = 30.0) -> torch.Tensor | None:
    """Smallest right singular vector of L on the rows `zeros`; None when the rows leave
    more than one null direction (their two smallest singular values within `gap`)."""
    b = left.shape[1]
    rows = left[zeros]
    if rows.shape[0] < b - 1:
        return None
    _, s, vh = torch.linalg.svd(rows, full_matrices=True)
    if b >= 2:
        second = s[b - 2]
        smallest = s[b - 1] if s.numel() >= b else s.new_zeros(())
        if not bool(second > gap * smallest) or not bool(second > 1e-12 * s[0]):
            return None
    return vh[b - 1]


def find_directions(fact: Factorization, b: int, gen: torch.Generator, *, budget: int, chunk: int,
                    zero_tol: float, min_zeros: int, consistent: Consistency | None = None,
                    noise_sigmas: float = 4.0, deadline: float | None = None) -> Directions:
    """Draw proposals in chunks (growing to `chunk`) until `select` finds `b` directions that
    pass `consistent` (or just `b` independent ones without it), or `budget` proposals are spent,
    or `deadline` (time.perf_counter()) passes. A zero is |L_j q| <= zero_tol |L_j| plus
    `noise_sigmas` times the update's noise floor (`Factorization.noise`).

    A proposal is kept when L q is zero on at least `min_zeros` units and, without the rows it
    was drawn from, those zeros still pin q down (a one-dimensional null space). The second test
    rejects mixtures of several samples that vanish where all of them are off: there the rows
    that remain have rank below b-1 once the drawn rows are removed; a sample's own direction
    keeps all its ~m/2 zeros.
    """
    left = fact.left
    m = left.shape[0]
    floor = noise_sigmas * fact.noise  # a zero of dL/dZ is only as zero as the noise lets it be
    if b == 1:
        q = torch.ones(1, 1, dtype=left.dtype, device=left.device)
        zeros = zero_rows(left, q, zero_tol, floor)
        return Directions(q, zeros, 0, (0,), consistent is None or bool(consistent(q, zeros).all()))
    left_active = left[fact.active]
    norms = left_active.norm(dim=1, keepdim=True)
    unit_active = left_active / norms
    tol_active = zero_tol + floor / norms  # (m_a, 1): the zero test on unit rows
    m_a = left_active.shape[0]
    probe = None if m_a <= 128 or min_zeros < 8 else torch.randperm(m_a, generator=gen, device=left.device)[:96]
    found: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
    drawn, size, new_since = 0, min(chunk, 512), 0
    while drawn < budget and (deadline is None or time.perf_counter() < deadline):
        count = min(size, budget - drawn)
        size = min(chunk, size * 2)
        q, rows = propose(left_active, count, gen)
        drawn += count
        if probe is not None:  # a cheap look at a few rows first: a sample's direction zeroes ~half of them
            looks = (unit_active[probe] @ q.T).abs() <= tol_active[probe]  # NaN proposals compare False
            keep = looks.sum(dim=0) >= 4
            q, rows = q[keep], rows[keep]
        pattern = ((unit_active @ q.T).abs() <= tol_active).T
        sparse = pattern.sum(dim=1) >= min_zeros
        if not bool(sparse.any()):
            continue
        q, rows, pattern = q[sparse], rows[sparse], pattern[sparse]
        _, inverse = torch.unique(pattern, dim=0, return_inverse=True)
        index = torch.arange(inverse.numel(), device=q.device)
        first = torch.full((int(inverse.max()) + 1,), inverse.numel(), dtype=torch.long, device=q.device)
        first = first.scatter_reduce(0, inverse, index, reduce="amin")  # the first proposal of each zero pattern
        # the sparsest patterns first, a bounded number per chunk (noisy updates make every pattern new)
        first = first[pattern[first].sum(dim=1).argsort(descending=True)[:512]]
        for cand, drawn_rows in zip(q[first], rows[first]):
            z = zero_rows(left, cand[:, None], zero_tol, floor)[0]
            z[fact.active[drawn_rows]] = False
            fine = refine(left, z)
            if fine is None:
                continue
            z = zero_rows(left, fine[:, None], zero_tol, floor)[0]
            key = z.cpu().numpy().tobytes()
            if key not in found and int(z[fact.active].sum()) >= min_zeros:
                found[key] = (fine, z)
        if len(found) >= b and independent_count([v[0] for v in found.values()]) >= b and new_since < len(found):
            new_since = len(found)
            dirs = _stack(found, drawn)
            chosen, ok = select(dirs, b, consistent)
            if ok:
                return replace(dirs, chosen=tuple(chosen), consistent=True)
    if not found:
        return Directions(left.new_zeros(0, b), torch.zeros(0, m, dtype=torch.bool, device=left.device), drawn)
    dirs = _stack(found, drawn)
    chosen, ok = select(dirs, b, consistent)
    return replace(dirs, chosen=tuple(chosen), consistent=ok)


def _stack(found: dict, drawn: int) -> Directions:
    return Directions(torch.stack([v[0] for v in found.values()]), torch.stack([v[1] for v in found.values()]), drawn)


def select(dirs: Directions, b: int, consistent: Consistency | None) -> tuple[list[int], bool]:
    """`greedy_select`, then, while the check fails for some chosen direction, ban the least sparse
    failing one and select again. Mixtures of samples can be sparse too (dense rows of dL/dZ span
    only as many dimensions as the loss has classes); the forward pass tells them apart: the
    samples a wrong selection yields switch on other units than their columns use."""
    banned: set[int] = set()
    counts = dirs.zeros.sum(dim=1).tolist()
    while True:
        keep = [i for i in range(dirs.columns.shape[0]) if i not in banned]
        sub = Directions(dirs.columns[keep], dirs.zeros[keep], dirs.proposals)
        chosen = [keep[i] for i in greedy_select(sub, b)]
        if len(chosen) < b:
            return chosen, False
        if consistent is None:
            return chosen, True
        ok = consistent(dirs.columns[chosen], dirs.zeros[chosen]).tolist()
        if all(ok):
            return chosen, True
        banned.add(min((i for i, good in zip(chosen, ok) if not good), key=lambda i: counts[i]))


def independent_count(columns: list[torch.Tensor], tol: float = 1e-6) -> int:
    if not columns:
        return 0
    return int(torch.linalg.matrix_rank(torch.stack(columns), rtol=tol))


def greedy_select(directions: Directions, b: int, tol: float = 1e-6) -> list[int]:
    """Indices of `b` directions: sparsest first, each kept when it adds a dimension."""
    order = directions.zeros.sum(dim=1).argsort(descending=True, stable=True).tolist()
    chosen: list[int] = []
    for i in order:
        trial = directions.columns[chosen + [i]]
        if int(torch.linalg.matrix_rank(trial, rtol=tol)) == len(chosen) + 1:
            chosen.append(i)
        if len(chosen) == b:
            break
    return chosen


def recover_inputs(fact: Factorization, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(X (b, n), D (m, b)) from unit directions `columns` (b, b): the bias column fixes the scales."""
    qn = columns.T  # (b, b), one direction per column
    r = fact.right
    scales = torch.linalg.solve(qn, r[:, -1])
    xt = torch.linalg.solve(qn, r[:, :-1]) / scales[:, None]
    return xt, fact.left @ (qn * scales[None, :])


def hit_probability(zeros: int, active: int, b: int) -> float:
    """Probability that one proposal (b-1 rows drawn with replacement, repeats discarded) lies
    in a sample's `zeros` zero units out of `active`: z (z-1) ... (z-b+2) / active^(b-1)."""
    if active <= 0:
        return 0.0
    return math.prod(max(zeros - k, 0) / active for k in range(b - 1))


def expected_proposals(zero_counts: list[int], active: int, b: int, factors: list[float] | None = None) -> float:
    """Expected proposals until every sample has been drawn once (Poissonized coupon collector
    over the `hit_probability` p_i, times `factors[i]`, the fraction of its hits that pin its
    direction down): E = integral_0^inf 1 - prod_i (1 - exp(-p_i t)) dt."""
    if b == 1:
        return 0.0
    p = [hit_probability(z, active, b) * (1.0 if factors is None else f) for z, f in
         zip(zero_counts, factors or [1.0] * len(zero_counts))]
    if min(p) <= 0:
        return math.inf
    # substitute t = u / min(p): the integrand falls off as exp(-u)
    scale = 1 / min(p)
    total, steps, top = 0.0, 4000, 60.0 + math.log(len(p))
    for k in range(steps):
        u = (k + 0.5) * top / steps
        total += 1 - math.prod(1 - math.exp(-pi * scale * u) for pi in p)
    return total * top / steps * scale


def success_probability(zero_counts: list[int], active: int, b: int, budget: int,
                        factors: list[float] | None = None) -> float:
    """Probability that `budget` proposals draw every sample at least once (`factors` as above)."""
    if b == 1:
        return 1.0
    factors = factors or [1.0] * len(zero_counts)
    return math.prod(1 - (1 - hit_probability(z, active, b) * f) ** budget for z, f in zip(zero_counts, factors))
