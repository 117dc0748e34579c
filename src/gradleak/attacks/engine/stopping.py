"""The restart loops' shared parts: stopping rules, per-restart bookkeeping, evaluation.

The unknowns of all running restarts are one (A, n) tensor, one row per restart; an
objective maps it to A losses, one per row, and no row's loss depends on another row,
so one backward pass yields every restart's own gradient. Rows leave the batch when they
stall (plateau), are dropped by successive halving, or turn non-finite; a converged row
ends the attack. Every row keeps its best finite iterate, and the loops report why each
row stopped. The loops themselves are `adam.run_adam` and `lbfgs.run_lbfgs`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

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


class Tracker:
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
        self._best_loss: torch.Tensor | None = None  # device-side bests of `observe`
        self._index: tuple[list[int], torch.Tensor] | None = None

    def observe(self, ids: list[int], losses: torch.Tensor, rows: torch.Tensor) -> None:
        """Keep each row's best iterate without reading the losses back (no host sync): the
        bests stay on the rows' device, and `settle` does the bookkeeping later."""
        if self._best_loss is None:
            self._best_loss = torch.full((self.best.shape[0],), math.inf, dtype=losses.dtype, device=losses.device)
        if self._index is None or self._index[0] != ids:  # a host-to-device copy only when rows leave
            self._index = (list(ids), torch.tensor(ids, device=rows.device))
        index = self._index[1]
        current = self._best_loss.index_select(0, index)
        better = torch.isfinite(losses) & (losses < current)
        self._best_loss.index_copy_(0, index, torch.where(better, losses, current))
        self.best.index_copy_(0, index, torch.where(better[:, None], rows.detach(), self.best.index_select(0, index)))

    def settle(self, ids: list[int], losses: list[float]) -> None:
        """The host-side bookkeeping of one step whose bests `observe` already kept."""
        for r, loss in zip(ids, losses):
            if math.isfinite(loss) and loss < self.loss[r]:
                self.loss[r] = loss
            self.steps[r] += 1
            if math.isfinite(loss):
                self.history[r].append(loss)
            self.best_by_step[r].append(self.loss[r])

    def offer(self, ids: list[int], losses: list[float], rows: torch.Tensor) -> None:
        for i, (r, loss) in enumerate(zip(ids, losses)):
            if math.isfinite(loss) and loss < self.loss[r]:
                self.loss[r] = loss
                self.best[r] = rows[i].detach()
                if self._best_loss is not None:
                    self._best_loss[r] = loss

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


def evaluate_rows(objective: Objective, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(losses (A,), gradients (A, n)); a non-finite row gets a zero gradient."""
    leaf = rows.detach().requires_grad_(True)
    with torch.enable_grad():
        losses = objective(leaf)
        finite = torch.isfinite(losses)
        (grad,) = torch.autograd.grad(losses.masked_fill(~finite, 0).sum(), leaf)
    grad = torch.where(finite[:, None], grad, torch.zeros_like(grad))
    return losses.detach(), torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


def offer_final(objective: Objective, tracker: Tracker, z: torch.Tensor, ids: list[int]) -> None:
    """Offer the iterate left after the last step, which no step has evaluated yet."""
    if ids and bool(torch.isfinite(z).all()):
        losses, _ = evaluate_rows(objective, z)
        tracker.offer(ids, losses.tolist(), z)
