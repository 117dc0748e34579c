"""Optimization loops over R independent restarts at once (plain functions).

The unknowns of all running restarts are one (A, n) tensor, one row per restart; an
objective maps it to A losses, one per row, and no row's loss depends on another row,
so one backward pass yields every restart's own gradient. Per-row optimizer state
(Adam moments, L-BFGS history and step sizes) keeps each restart on exactly the path
it would take alone. Rows leave the batch when they stall (plateau), are dropped by
successive halving, or turn non-finite; a converged row ends the attack. Every row
keeps its best finite iterate, and the loops report why each row stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from gradleak.errors import GradleakError

# rows (A, n) -> (A,) losses: one function for every row, row i's loss from row i alone
Objective = Callable[[torch.Tensor], torch.Tensor]
# (iteration, best running restart, its loss, restarts running, that restart's best row) -> stop?
OnStep = Callable[[int, int, float, int, torch.Tensor], bool]
Project = Callable[[torch.Tensor], None]  # in-place projection of rows (A, n)


@dataclass(frozen=True)
class Deadline:
    """Wall-clock budget shared by all restarts of one attack (None: no limit)."""

    end: float | None

    @classmethod
    def after(cls, seconds: float | None) -> "Deadline":
        return cls(None if seconds is None else time.perf_counter() + seconds)

    def passed(self) -> bool:
        return self.end is not None and time.perf_counter() >= self.end


@dataclass(frozen=True)
class Plateau:
    """A restart stalls when its best loss fell by less than `min_improvement` (relative) in `patience` steps."""

    patience: int
    min_improvement: float = 0.01

    def stalled(self, best_then: float, best_now: float) -> bool:
        return best_now > best_then * (1 - self.min_improvement)


@dataclass(frozen=True)
class Halving:
    """Successive halving: at each fraction `at` of the iteration budget, keep the best
    `keep` share (at least one) of the running restarts, ranked by their best loss."""

    at: tuple[float, ...] = (0.25, 0.5)
    keep: float = 0.5

    def __post_init__(self) -> None:
        if not all(0 < f < 1 for f in self.at) or not 0 < self.keep < 1:
            raise GradleakError(f"Halving needs fractions in (0, 1), got at={self.at!r}, keep={self.keep!r}")

    def checkpoints(self, iterations: int) -> set[int]:
        return {max(1, int(round(f * iterations))) for f in self.at}


@dataclass(frozen=True)
class LoopResult:
    """Per restart: best iterate (rows of `best`), best loss, steps run, why it stopped, losses."""

    best: torch.Tensor
    losses: tuple[float, ...]
    iterations: tuple[int, ...]
    statuses: tuple[str, ...]  # ok, converged, plateau, halved, superseded, budget, stopped, nonfinite
    histories: tuple[tuple[float, ...], ...]


class _Tracker:
    """Per-restart bookkeeping and the stopping rules shared by both loops."""

    def __init__(self, z: torch.Tensor, iterations: int, tol: float | None, plateau: Plateau | None,
                 halving: Halving | None, deadline: Deadline, on_step: OnStep | None) -> None:
        n = z.shape[0]
        self.best = z.detach().clone()
        self.loss = [math.inf] * n
        self.steps = [0] * n
        self.status = ["ok"] * n
        self.history: list[list[float]] = [[] for _ in range(n)]
        self.best_by_step: list[list[float]] = [[] for _ in range(n)]
        self.tol, self.plateau, self.deadline, self.on_step = tol, plateau, deadline, on_step
        self.halve_at = halving.checkpoints(iterations) if halving else set()
        self.keep = halving.keep if halving else 1.0

    def offer(self, ids: list[int], losses: list[float], rows: torch.Tensor) -> None:
        for i, (r, loss) in enumerate(zip(ids, losses)):
            if math.isfinite(loss) and loss < self.loss[r]:
                self.loss[r] = loss
                self.best[r] = rows[i].detach()

    def record(self, ids: list[int], losses: list[float], rows: torch.Tensor) -> None:
        """Losses of `rows` before this step; returns nothing, updates histories and bests."""
        self.offer(ids, losses, rows)
        for r, loss in zip(ids, losses):
            self.steps[r] += 1
            if math.isfinite(loss):
                self.history[r].append(loss)
            self.best_by_step[r].append(self.loss[r])

    def after_step(self, it: int, ids: list[int], losses: list[float]) -> tuple[list[int], bool]:
        """Which restarts keep running after step `it`, and whether the attack ends."""
        keep = []
        for r, loss in zip(ids, losses):
            if not math.isfinite(loss):
                self.status[r] = "nonfinite"
            elif self.plateau is not None and self._stalled(r):
                self.status[r] = "plateau"
            else:
                keep.append(r)
        finite = [(loss, r) for r, loss in zip(ids, losses) if math.isfinite(loss)]
        if self.on_step is not None and finite:
            loss, r = min(finite)
            if self.on_step(it, r, loss, len(ids), self.best[r]):
                return self._end(keep, "stopped")
        converged = [r for r, loss in zip(ids, losses)
                     if self.tol is not None and math.isfinite(loss) and loss <= self.tol]
        if converged:
            for r in converged:
                self.status[r] = "converged"
            return self._end([r for r in keep if r not in converged], "superseded")
        if self.deadline.passed():
            return self._end(keep, "budget")
        if it in self.halve_at and len(keep) > 1:
            ranked = sorted(keep, key=lambda r: (self.loss[r], r))
            survivors = ranked[: max(1, math.ceil(len(keep) * self.keep))]
            for r in ranked[len(survivors):]:
                self.status[r] = "halved"
            keep = sorted(survivors)
        return keep, not keep

    def _end(self, ids: list[int], status: str) -> tuple[list[int], bool]:
        for r in ids:
            self.status[r] = status
        return [], True

    def _stalled(self, r: int) -> bool:
        past = self.best_by_step[r]
        if len(past) <= self.plateau.patience:
            return False
        return self.plateau.stalled(past[-1 - self.plateau.patience], past[-1])

    def result(self) -> LoopResult:
        return LoopResult(self.best, tuple(self.loss), tuple(self.steps), tuple(self.status),
                          tuple(tuple(h) for h in self.history))


def _evaluate(objective: Objective, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(losses (A,), gradients (A, n)); a non-finite row gets a zero gradient."""
    leaf = rows.detach().requires_grad_(True)
    with torch.enable_grad():
        losses = objective(leaf)
        finite = torch.isfinite(losses)
        (grad,) = torch.autograd.grad(losses.masked_fill(~finite, 0).sum(), leaf)
    grad = torch.where(finite[:, None], grad, torch.zeros_like(grad))
    return losses.detach(), torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


def _final(objective: Objective, tracker: _Tracker, z: torch.Tensor, ids: list[int]) -> None:
    """Offer the iterate left after the last step, which no step has evaluated yet."""
    if ids and bool(torch.isfinite(z).all()):
        losses, _ = _evaluate(objective, z)
        tracker.offer(ids, losses.tolist(), z)


def run_adam(
    objective: Objective,
    start: torch.Tensor,
    *,
    iterations: int,
    lr: float,
    signed: bool,
    milestones: Sequence[int] = (),
    project: Project | None = None,
    deadline: Deadline = Deadline(None),
    on_step: OnStep | None = None,
    tol: float | None = None,
    plateau: Plateau | None = None,
    halving: Halving | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    decay: float = 1.0,
) -> LoopResult:
    """Adam (torch.optim.Adam's update) with the lr cut 10x at each milestone, per row.

    `signed` replaces gradients by their sign (Geiping et al. 2020). `decay` multiplies
    the lr after every step (exponential decay; Balunovic et al. 2022).
    """
    z = start.detach().clone()
    ids = list(range(z.shape[0]))
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    tracker = _Tracker(z, iterations, tol, plateau, halving, deadline, on_step)
    b1, b2 = betas
    for it in range(1, iterations + 1):
        losses_t, grad = _evaluate(objective, z)
        losses = losses_t.tolist()
        tracker.record(ids, losses, z)
        if signed:
            grad = grad.sign()
        rate = lr * decay ** (it - 1) * 0.1 ** sum(1 for ms in milestones if ms <= it - 1)
        m.lerp_(grad, 1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (v.sqrt() / math.sqrt(1 - b2**it)).add_(eps)
        z.addcdiv_(m, denom, value=-rate / (1 - b1**it))
        if project is not None:
            project(z)
        keep, end = tracker.after_step(it, ids, losses)
        if keep != ids:
            rows = [ids.index(r) for r in keep]
            z, m, v = z[rows], m[rows], v[rows]
            ids = keep
        if end:
            break
    _final(objective, tracker, z, ids)
    return tracker.result()


@dataclass
class _LbfgsState:
    """torch.optim.LBFGS's per-parameter state, one row per restart.

    Curvature pairs live in a ring of `history` slots per row (a full ring overwrites
    its oldest pair, as torch's pop(0)); `stamp` orders them by age, empty slots have
    ro = 0 and are inert, and `sy[k, j] = s_k . y_j` is kept up to date so that the
    two-loop recursion becomes two small triangular solves (see `_lbfgs_direction`).
    """

    d: torch.Tensor
    t: torch.Tensor
    ys: torch.Tensor  # (A, history, n): y = g - g_prev
    ss: torch.Tensor  # (A, history, n): s = t * d
    ro: torch.Tensor  # (A, history): 1 / (y . s), 0 where empty
    sy: torch.Tensor  # (A, history, history)
    stamp: torch.Tensor  # (A, history): insertion number, -1 where empty
    head: torch.Tensor  # (A,) next slot to write
    h_diag: torch.Tensor
    prev_grad: torch.Tensor
    prev_loss: torch.Tensor
    n_iter: torch.Tensor  # (A,) iterations so far (torch's state['n_iter'])

    @classmethod
    def empty(cls, z: torch.Tensor, history: int) -> "_LbfgsState":
        a, n = z.shape
        return cls(torch.zeros_like(z), z.new_zeros(a), z.new_zeros(a, history, n), z.new_zeros(a, history, n),
                   z.new_zeros(a, history), z.new_zeros(a, history, history),
                   torch.full((a, history), -1, dtype=torch.long), torch.zeros(a, dtype=torch.long),
                   z.new_ones(a), torch.zeros_like(z), z.new_zeros(a), torch.zeros(a, dtype=torch.long))

    def select(self, rows: list[int]) -> "_LbfgsState":
        return _LbfgsState(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))


def _add_pairs(st: _LbfgsState, y: torch.Tensor, s: torch.Tensor, ys: torch.Tensor, add: torch.Tensor) -> None:
    """Store (y, s) for rows in `add` in their next ring slot (the s.y matrix is updated by the caller)."""
    rows = add.nonzero().squeeze(1)
    slot = st.head[rows]
    st.ys[rows, slot] = y[rows]
    st.ss[rows, slot] = s[rows]
    st.ro[rows, slot] = 1.0 / ys[rows]
    st.stamp[rows, slot] = st.n_iter[rows]
    st.head[rows] = (slot + 1) % st.ys.shape[1]
    st.h_diag[rows] = ys[rows] / (y[rows] * y[rows]).sum(1)


def _lbfgs_direction(st: _LbfgsState, g: torch.Tensor, mask: torch.Tensor) -> None:
    """Update the history of rows in `mask` with the last step and set their direction.

    torch's two-loop recursion, newest to oldest: al_k = ro_k s_k.(q0 - sum_{j>k} al_j y_j)
    with q0 = -g, is the unit upper-triangular system (I + diag(ro) U) al = ro * S q0 with
    U the strict upper triangle of s_k . y_j in age order; then, oldest to newest,
    be_i = ro_i y_i.(r0 + sum_{j<i} (al_j - be_j) s_j) is a unit lower-triangular one.
    Same values as the loops up to rounding, with four passes over the stored pairs
    and a dozen batched operations instead of a few per pair.
    """
    first = mask & (st.n_iter == 1)
    later = mask & (st.n_iter > 1)
    if bool(first.any()):
        st.d[first] = -g[first]
        st.h_diag[first] = 1.0
        st.ro[first], st.sy[first], st.stamp[first], st.head[first] = 0.0, 0.0, -1, 0
    if not bool(later.any()):
        return
    y = g - st.prev_grad
    s = st.d * st.t[:, None]
    ys = (y * s).sum(1)
    add = later & (ys > 1e-10)
    if bool(add.any()):
        _add_pairs(st, y, s, ys, add)
    # the ring fills from slot 0: slots past the fullest row's count are empty everywhere
    used = int((st.stamp >= 0).sum(1).max())
    if used == 0:
        st.d = torch.where(later[:, None], -g * st.h_diag[:, None], st.d)
        return
    ys_h, ss_h = st.ys[:, :used], st.ss[:, :used]
    q0 = -g
    # one pass over S for both s_k . y_new (new column of s.y) and s_k . q0; products are
    # written vector-times-matrix, which runs about twice as fast as matrix-times-vector here
    both = torch.bmm(torch.stack([y, q0], 1), ss_h.transpose(1, 2)).transpose(1, 2)
    if bool(add.any()):
        rows = add.nonzero().squeeze(1)
        slot = (st.head[rows] - 1) % st.ys.shape[1]
        st.sy[rows, slot, :used] = torch.bmm(s[rows, None, :], ys_h[rows].transpose(1, 2)).squeeze(1)  # s_new.y_j
        st.sy[rows, :used, slot] = both[rows, :, 0]
    # every row is computed (no copies of the history); only `later` rows keep the result
    order = st.stamp[:, :used].argsort(dim=1)  # slot of the k-th oldest pair
    ro = st.ro[:, :used].gather(1, order)
    sy_h = st.sy[:, :used, :used]
    sy = sy_h.gather(1, order[:, :, None].expand_as(sy_h)).gather(2, order[:, None, :].expand_as(sy_h))
    eye = torch.eye(used, dtype=g.dtype)
    upper = eye + ro[:, :, None] * sy.triu(1)
    a = both[:, :, 1].gather(1, order)
    al = torch.linalg.solve_triangular(upper, (ro * a)[:, :, None], upper=True).squeeze(2)
    al_slot = torch.zeros_like(al).scatter_(1, order, al)
    r0 = (q0 - torch.bmm(al_slot[:, None, :], ys_h).squeeze(1)) * st.h_diag[:, None]
    lower_sy = sy.transpose(1, 2).tril(-1)  # [i, j] = y_i . s_j for j < i
    lower = eye + ro[:, :, None] * lower_sy
    b = torch.bmm(r0[:, None, :], ys_h.transpose(1, 2)).squeeze(1).gather(1, order)
    rhs = ro * (b + torch.bmm(lower_sy, al[:, :, None]).squeeze(2))
    be = torch.linalg.solve_triangular(lower, rhs[:, :, None], upper=False).squeeze(2)
    step = torch.zeros_like(al).scatter_(1, order, al - be)
    d = r0 + torch.bmm(step[:, None, :], ss_h).squeeze(1)
    st.d = torch.where(later[:, None], d, st.d)


def _backtracking_move(objective, z, loss, g, st, gtd, running, backtrack: int, armijo: float) -> int:
    """Move running rows along d, halving t per row until the Armijo condition holds.

    A row that never satisfies it within `backtrack` halvings stays where it was and
    leaves the inner loop (its t is set to 0, so the stopping tests see no movement).
    Returns each row's number of evaluations.
    """
    evals = torch.zeros(z.shape[0], dtype=torch.long)
    moving = running.clone()
    pending = running.clone()
    t = st.t.clone()
    for _ in range(backtrack + 1):
        rows = pending.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        trial = z[rows] + t[rows, None] * st.d[rows]
        new_loss, new_g = _evaluate(objective, trial)
        evals[rows] += 1
        ok = torch.isfinite(new_loss) & (new_loss <= loss[rows] + armijo * t[rows] * gtd[rows])
        accepted = rows[ok]
        z[accepted], loss[accepted], g[accepted] = trial[ok], new_loss[ok], new_g[ok]
        pending[accepted] = False
        t[rows[~ok]] *= 0.5
    failed = pending.nonzero().squeeze(1)
    t[failed] = 0.0
    running[failed] = False
    st.t = torch.where(moving, t, st.t)
    return evals


def run_lbfgs(
    objective: Objective,
    start: torch.Tensor,
    *,
    steps: int,
    lr: float = 1.0,
    max_iter: int = 20,
    history: int = 100,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    backtrack: int = 0,
    armijo: float = 1e-4,
    deadline: Deadline = Deadline(None),
    on_step: OnStep | None = None,
    tol: float | None = None,
    plateau: Plateau | None = None,
    halving: Halving | None = None,
) -> LoopResult:
    """torch.optim.LBFGS without line search (DLG, Zhu et al. 2019), each row its own problem.

    One step is one `LBFGS.step` call: up to `max_iter` inner iterations, each row
    leaving the inner loop on torch's own tests; the loss recorded for a step is the
    loss before it. `backtrack` > 0 adds an Armijo backtracking line search (halve the
    step up to `backtrack` times until loss_new <= loss + armijo * t * g.d): without
    it, a step into a region where the sigmoids saturate can freeze a restart for good,
    which is most of DLG's failed starts.
    """
    z = start.detach().clone()
    ids = list(range(z.shape[0]))
    st = _LbfgsState.empty(z, history)
    tracker = _Tracker(z, steps, tol, plateau, halving, deadline, on_step)
    max_eval = max_iter * 5 // 4
    for it in range(1, steps + 1):
        loss, g = _evaluate(objective, z)
        before = z.clone()
        step_losses = loss.tolist()
        running = torch.isfinite(loss) & (g.abs().amax(1) > tolerance_grad)
        evals = torch.ones(z.shape[0], dtype=torch.long)  # per row: rows backtrack differently
        for n_iter in range(1, max_iter + 1):
            if not bool(running.any()):
                break
            st.n_iter[running] += 1
            _lbfgs_direction(st, g, running)
            st.prev_grad[running] = g[running]
            st.prev_loss[running] = loss[running]
            first = st.n_iter == 1
            st.t = torch.where(running & first, torch.clamp(1.0 / g.abs().sum(1), max=1.0) * lr,
                               torch.where(running, torch.full_like(st.t, lr), st.t))
            gtd = (g * st.d).sum(1)
            running = running & ~(gtd > -tolerance_change)
            if not bool(running.any()):
                break
            if backtrack:
                evals += _backtracking_move(objective, z, loss, g, st, gtd, running, backtrack, armijo)
            else:
                z[running] += st.t[running, None] * st.d[running]
                if n_iter == max_iter:
                    break
                rows = running.nonzero().squeeze(1).tolist()
                sub_loss, sub_g = _evaluate(objective, z[rows])
                loss[rows], g[rows] = sub_loss, sub_g
                evals[rows] += 1
            if n_iter == max_iter:
                break
            moved = (st.d * st.t[:, None]).abs().amax(1)
            running = (running & (g.abs().amax(1) > tolerance_grad) & (moved > tolerance_change)
                       & ((loss - st.prev_loss).abs() >= tolerance_change) & torch.isfinite(loss)
                       & (evals < max_eval))
        tracker.record(ids, step_losses, before)
        if not bool(torch.isfinite(z).all()):
            bad = (~torch.isfinite(z).all(1)).nonzero().squeeze(1).tolist()
            step_losses = [math.nan if i in bad else x for i, x in enumerate(step_losses)]
        keep, end = tracker.after_step(it, ids, step_losses)
        if keep != ids:
            rows = [ids.index(r) for r in keep]
            z, st, ids = z[rows], st.select(rows), keep
        if end:
            break
    _final(objective, tracker, z, ids)
    return tracker.result()
