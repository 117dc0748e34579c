"""L-BFGS over R independent restarts at once (torch.optim.LBFGS's update, per row).

Per-row state (curvature history, step sizes) keeps each restart on exactly the path it
would take alone; the stopping rules are `stopping.Tracker`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gradleak.attacks.engine.stopping import (
    Deadline,
    Halving,
    LoopResult,
    Objective,
    OnStep,
    Plateau,
    Tracker,
    evaluate_rows,
    offer_final,
)


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
                   torch.full((a, history), -1, dtype=torch.long, device=z.device),
                   torch.zeros(a, dtype=torch.long, device=z.device),
                   z.new_ones(a), torch.zeros_like(z), z.new_zeros(a), torch.zeros(a, dtype=torch.long, device=z.device))

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
        # masked fills take the scalars as they are (an indexed assignment would make a tensor of them)
        st.h_diag.masked_fill_(first, 1.0)
        st.ro.masked_fill_(first[:, None], 0.0)
        st.sy.masked_fill_(first[:, None, None], 0.0)
        st.stamp.masked_fill_(first[:, None], -1)
        st.head.masked_fill_(first, 0)
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
    eye = torch.eye(used, dtype=g.dtype, device=g.device)
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
    evals = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    moving = running.clone()
    pending = running.clone()
    t = st.t.clone()
    for _ in range(backtrack + 1):
        rows = pending.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        trial = z[rows] + t[rows, None] * st.d[rows]
        new_loss, new_g = evaluate_rows(objective, trial)
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
    tracker = Tracker(z, steps, tol, plateau, halving, deadline, on_step)
    max_eval = max_iter * 5 // 4
    for it in range(1, steps + 1):
        loss, g = evaluate_rows(objective, z)
        before = z.clone()
        step_losses = loss.tolist()
        running = torch.isfinite(loss) & (g.abs().amax(1) > tolerance_grad)
        evals = torch.ones(z.shape[0], dtype=torch.long, device=z.device)  # per row: rows backtrack differently
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
                sub_loss, sub_g = evaluate_rows(objective, z[rows])
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
    offer_final(objective, tracker, z, ids)
    return tracker.result()
