"""Optimization loops shared by the attacks (plain functions, no attack logic).

Both loops keep the best finite iterate, stop cleanly on a non-finite loss, on a
wall-clock deadline or when the progress callback asks, and report why.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Objective = Callable[[], torch.Tensor]
OnStep = Callable[[int, float], bool]


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
    """Stop when the best loss has not fallen by `min_improvement` (relative) in `patience` steps."""

    patience: int
    min_improvement: float = 0.01

    def stalled(self, best_then: float, best_now: float) -> bool:
        return best_now > best_then * (1 - self.min_improvement)


@dataclass(frozen=True)
class LoopResult:
    status: str  # "ok", "converged", "plateau", "budget", "stopped", "nonfinite"
    iterations: int
    best_loss: float
    history: tuple[float, ...]


class _Best:
    def __init__(self, variables: Sequence[torch.Tensor]) -> None:
        self.variables = variables
        self.loss = math.inf
        self.state = [v.detach().clone() for v in variables]

    def offer(self, loss: float, state: list[torch.Tensor] | None = None) -> None:
        if loss < self.loss:
            self.loss = loss
            self.state = state if state is not None else [v.detach().clone() for v in self.variables]

    def restore(self) -> None:
        with torch.no_grad():
            for v, s in zip(self.variables, self.state):
                v.copy_(s)


def run_adam(
    objective: Objective,
    variables: Sequence[torch.Tensor],
    *,
    iterations: int,
    lr: float,
    signed: bool,
    milestones: Sequence[int] = (),
    project: Callable[[], None] | None = None,
    deadline: Deadline = Deadline(None),
    on_step: OnStep | None = None,
    tol: float = 0.0,
    plateau: Plateau | None = None,
) -> LoopResult:
    """Adam on `variables`; `signed` replaces gradients by their sign (Geiping et al.)."""
    opt = torch.optim.Adam(variables, lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=0.1)
    best = _Best(variables)
    history: list[float] = []
    best_by_step: list[float] = []
    status = "ok"
    it = 0
    for it in range(1, iterations + 1):
        opt.zero_grad(set_to_none=True)
        loss_t = objective()
        loss = loss_t.item()
        if not math.isfinite(loss):
            status = "nonfinite"
            break
        best.offer(loss)
        history.append(loss)
        best_by_step.append(best.loss)
        loss_t.backward()
        if signed:
            for v in variables:
                if v.grad is not None:
                    v.grad.sign_()
        opt.step()
        sched.step()
        if project is not None:
            project()
        status = _stop_reason(it, loss, tol, on_step, plateau, best_by_step, deadline)
        if status != "ok":
            break
    final = _final_loss(objective)
    if math.isfinite(final):
        best.offer(final)
    best.restore()
    return LoopResult(status, it, best.loss, tuple(history))


def run_lbfgs(
    objective: Objective,
    variables: Sequence[torch.Tensor],
    *,
    steps: int,
    lr: float = 1.0,
    deadline: Deadline = Deadline(None),
    on_step: OnStep | None = None,
    tol: float = 0.0,
    plateau: Plateau | None = None,
) -> LoopResult:
    """L-BFGS with torch defaults otherwise (DLG's optimizer, Zhu et al. 2019)."""
    opt = torch.optim.LBFGS(variables, lr=lr)
    best = _Best(variables)
    history: list[float] = []
    best_by_step: list[float] = []
    status = "ok"

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = objective()
        loss.backward()
        return loss.detach()

    it = 0
    for it in range(1, steps + 1):
        before = [v.detach().clone() for v in variables]
        loss = opt.step(closure).item()  # the loss at `before`, not after the step
        if not math.isfinite(loss):
            status = "nonfinite"
            break
        best.offer(loss, before)
        history.append(loss)
        best_by_step.append(best.loss)
        status = "nonfinite" if not _finite(variables) else _stop_reason(
            it, loss, tol, on_step, plateau, best_by_step, deadline)
        if status != "ok":
            break
    if _finite(variables):
        final = _final_loss(objective)
        if math.isfinite(final):
            best.offer(final)
        elif status == "ok":
            status = "nonfinite"
    best.restore()
    return LoopResult(status, it, best.loss, tuple(history))


def _stop_reason(it, loss, tol, on_step, plateau, best_by_step, deadline) -> str:
    """Why the loop should stop after this step, or "ok" to go on (the callback always runs)."""
    if on_step is not None and on_step(it, loss):
        return "stopped"
    if loss <= tol:
        return "converged"
    if _stalled(plateau, best_by_step, best_by_step[-1]):
        return "plateau"
    if deadline.passed():
        return "budget"
    return "ok"


def _stalled(plateau: Plateau | None, best_by_step: list[float], best_now: float) -> bool:
    if plateau is None or len(best_by_step) <= plateau.patience:
        return False
    return plateau.stalled(best_by_step[-1 - plateau.patience], best_now)


def _finite(variables: Sequence[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in variables)


def _final_loss(objective: Objective) -> float:
    with torch.enable_grad():
        return float(objective().detach())
