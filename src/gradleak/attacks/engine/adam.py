"""Adam over R independent restarts at once (torch.optim.Adam's update, per row).

Per-row optimizer state (the moments) keeps each restart on exactly the path it would
take alone; the stopping rules are `stopping.Tracker`'s.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from gradleak.attacks.engine.stopping import (
    Deadline,
    Halving,
    LoopResult,
    Objective,
    OnStep,
    Plateau,
    Project,
    Tracker,
    evaluate_rows,
    offer_final,
)


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
    sync_every: int = 1,
) -> LoopResult:
    """Adam (torch.optim.Adam's update) with the lr cut 10x at each milestone, per row.

    `signed` replaces gradients by their sign (Geiping et al. 2020). `decay` multiplies
    the lr after every step (exponential decay; Balunovic et al. 2022).

    `sync_every` > 1 reads the losses back from the device once per that many steps (and
    at every halving checkpoint) instead of every step, so an accelerator never waits for
    the host; each row's best iterate is still kept every step, on the device. The
    stopping rules then act up to `sync_every` - 1 steps late: a row may take a few more
    steps than it would with 1, and keep a better iterate from them.
    """
    z = start.detach().clone()
    ids = list(range(z.shape[0]))
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    tracker = Tracker(z, iterations, tol, plateau, halving, deadline, on_step)
    b1, b2 = betas
    pending: list[tuple[int, torch.Tensor]] = []  # (iteration, losses) not read back yet
    for it in range(1, iterations + 1):
        losses_t, grad = evaluate_rows(objective, z)
        tracker.observe(ids, losses_t, z)
        pending.append((it, losses_t))
        if signed:
            grad = grad.sign()
        rate = lr * decay ** (it - 1) * 0.1 ** sum(1 for ms in milestones if ms <= it - 1)
        m.lerp_(grad, 1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (v.sqrt() / math.sqrt(1 - b2**it)).add_(eps)
        z.addcdiv_(m, denom, value=-rate / (1 - b1**it))
        if project is not None:
            project(z)
        if len(pending) < sync_every and it not in tracker.halve_at and it < iterations:
            continue
        values = torch.stack([t for _, t in pending]).tolist()  # the one read-back
        for losses in values:
            tracker.settle(ids, losses)
        keep, end = ids, False
        for (step, _), losses in zip(pending, values):
            keep, end = tracker.after_step(step, ids, losses)
            if keep != ids or end:
                break
        pending.clear()
        if keep != ids:
            rows = [ids.index(r) for r in keep]
            z, m, v = z[rows], m[rows], v[rows]
            ids = keep
        if end:
            break
    offer_final(objective, tracker, z, ids)
    return tracker.result()
