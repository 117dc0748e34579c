"""The attack base class: one verb, `reconstruct`.

An attack receives the model as the server holds it at the start of the round, the
`ClientUpdate` it observed and the `AttackerKnowledge`, and returns a
`Reconstruction` in the model's input space. Restarts are independent problems with
their own seeds, optimized together in one batch where possible; the one with the
lowest objective is kept, and a restart that reaches the attack's tolerance ends the
attack early.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch
from torch import nn

from gradleak.attacks.optimize import Deadline, Halving, LoopResult, OnStep
from gradleak.attacks.problem import Layout
from gradleak.errors import GradleakError
from gradleak.memory import PeakMemory
from gradleak.records import AttackerKnowledge, ClientUpdate, LabelKnowledge, Reconstruction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """One optimization step, as reported to a callback: the best running restart."""

    restart: int
    restarts: int
    iteration: int
    iterations: int
    loss: float
    running: int = 1  # restarts still optimizing
    data: torch.Tensor | None = None  # that restart's best data so far (a view: copy it to keep it)


ProgressCallback = Callable[[Progress], "bool | None"]  # return True to stop the attack


@dataclass(frozen=True)
class Solved:
    """What `_solve` returns: every restart's best data (R, B, ...) and labels (R, B)."""

    data: torch.Tensor
    labels: torch.Tensor | None
    loop: LoopResult
    mode: str  # the restart mode that ran


RESTART_MODES = ("stacked", "interleaved", "sequential")


def restart_seeds(seed: int, restarts: int) -> list[int]:
    """Independent per-restart seeds derived from one seed (SeedSequence spawning)."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(restarts)]


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GradleakError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_positive_float(name: str, value: object, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok or value != value or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise GradleakError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_names(name: str, value: object) -> tuple[str, ...]:
    """A sequence of parameter names (a lone string is refused: it would iterate by letter)."""
    if isinstance(value, str) or not hasattr(value, "__iter__") or not all(isinstance(n, str) for n in value):
        raise GradleakError(f"{name} must be a sequence of parameter names, got {value!r}")
    return tuple(value)


def check_halving(value: object) -> Halving | None:
    """None, a `Halving`, or a sequence of budget fractions (keep half at each)."""
    if value is None or isinstance(value, Halving):
        return value
    try:
        return Halving(at=tuple(float(f) for f in value))
    except (TypeError, ValueError) as exc:  # GradleakError is a ValueError: reworded with the argument's name
        raise GradleakError(f"halving must be None or budget fractions in (0, 1) such as (0.25, 0.5), "
                            f"got {value!r}") from exc


class Attack(ABC):
    """One attack, one verb: `reconstruct` the client's data from an update."""

    name: ClassVar[str]
    label_mode: ClassVar[LabelKnowledge]  # what it does with labels when none are given

    @abstractmethod
    def reconstruct(
        self,
        model: nn.Module,
        update: ClientUpdate,
        knowledge: AttackerKnowledge,
        *,
        seed: int = 0,
        callback: ProgressCallback | None = None,
    ) -> Reconstruction:
        """Reconstruct the client's data from `update` (the caller's model is not modified)."""

    def _check_inputs(self, update: ClientUpdate, knowledge: AttackerKnowledge, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise GradleakError(f"seed must be an integer >= 0, got {seed!r}")
        if knowledge.uses_bn_statistics:
            raise GradleakError(f"attack {self.name!r} does not use BN statistics; set uses_bn_statistics=False")
        if knowledge.num_samples != update.num_samples:
            raise GradleakError(
                f"knowledge.num_samples ({knowledge.num_samples}) differs from the update's "
                f"num_samples ({update.num_samples})"
            )

    def _assumptions(self, knowledge: AttackerKnowledge):
        return knowledge.assumptions()

    def _label_knowledge(self, knowledge: AttackerKnowledge) -> LabelKnowledge:
        if knowledge.label_knowledge is LabelKnowledge.GIVEN:
            return LabelKnowledge.GIVEN
        return self.label_mode


class OptimizationAttack(Attack):
    """Base of the optimization attacks: subclasses implement `_solve`; `reconstruct`
    validates, times, and picks the best restart.

    Args common to all optimization attacks:
        restarts: independent random starts (seeds spawned from the attack's seed).
        restart_mode: "stacked" (default): all running restarts in one pass, stacked
            along the batch, each with its own gradients (falls back to "interleaved"
            for models or problems the stacked pass cannot split); "interleaved": one
            loop over all restarts, evaluated one after another inside each step
            (halving and stopping still act across restarts; can be faster for models
            whose every layer has large feature maps, see benchmarks/); "sequential":
            one restart after another, a converged one skipping the rest (the original
            recipes). All three give the same results up to float rounding.
        halving: successive halving, budget fractions at which the worse half of the
            running restarts is dropped (None: off).
        max_seconds: wall-clock budget for the whole attack (None: unlimited).
    """

    def __init__(
        self,
        *,
        restarts: int = 1,
        max_seconds: float | None = None,
        restart_mode: str = "stacked",
        halving: Halving | tuple[float, ...] | None = None,
    ) -> None:
        self.restarts = check_positive_int("restarts", restarts)
        self.max_seconds = None if max_seconds is None else check_positive_float("max_seconds", max_seconds)
        if restart_mode not in RESTART_MODES:
            raise GradleakError(f"restart_mode must be one of {', '.join(RESTART_MODES)}, got {restart_mode!r}")
        self.restart_mode = restart_mode
        self.halving = check_halving(halving)
        if self.halving is not None and restart_mode == "sequential":
            raise GradleakError("halving compares restarts while they run: use restart_mode 'stacked' or "
                                "'interleaved', not 'sequential'")

    def reconstruct(
        self,
        model: nn.Module,
        update: ClientUpdate,
        knowledge: AttackerKnowledge,
        *,
        seed: int = 0,
        callback: ProgressCallback | None = None,
    ) -> Reconstruction:
        """Reconstruct the client's data from `update` (the caller's model is not modified)."""
        self._check_inputs(update, knowledge, seed)
        start = time.perf_counter()
        generators = [torch.Generator().manual_seed(s) for s in restart_seeds(seed, self.restarts)]

        def on_step(it: int, restart: int, loss: float, running: int, data: torch.Tensor) -> bool:
            if callback is None:
                return False
            return bool(callback(Progress(restart, self.restarts, it, self._iterations(), loss, running, data)))

        with PeakMemory() as memory:
            solved = self._solve(model, update, knowledge, generators, self._deadline(start), on_step)
        loop = solved.loop
        finite = [i for i, loss in enumerate(loop.losses) if math.isfinite(loss)]
        best = min(finite, key=lambda i: loop.losses[i]) if finite else 0
        ended = {"budget", "stopped"} & set(loop.statuses)
        status = ended.pop() if ended else ("nonfinite" if loop.statuses[best] == "nonfinite" else "ok")
        log.debug("%s: restart losses %s, statuses %s", self.name, loop.losses, loop.statuses)
        return Reconstruction(
            data=solved.data[best],
            labels=None if solved.labels is None else solved.labels[best],
            restart_losses=loop.losses,
            best_restart=best,
            iterations=sum(loop.iterations),
            seconds=time.perf_counter() - start,
            status=status,
            assumptions=self._assumptions(knowledge),
            label_knowledge=self._label_knowledge(knowledge),
            loss_history=loop.histories[best],
            restart_statuses=loop.statuses,
            peak_memory_bytes=memory.bytes,
            restart_mode=solved.mode,
        )

    def _deadline(self, start: float) -> Deadline:
        return Deadline(None if self.max_seconds is None else start + self.max_seconds)

    @abstractmethod
    def _iterations(self) -> int: ...

    @abstractmethod
    def _solve(self, model, update, knowledge, generators, deadline, on_step) -> Solved: ...

    def _mode_used(self, stacked: bool) -> str:
        return "stacked" if stacked else ("sequential" if self.restart_mode == "sequential" else "interleaved")


def run_restarts(
    run: Callable[[torch.Tensor, OnStep | None], LoopResult],
    start: torch.Tensor,
    layout: Layout,
    *,
    together: bool,
    on_step: OnStep | None,
) -> LoopResult:
    """Run the loop on all rows at once, or one row after another until one converges.

    One after another, a restart that converged, was stopped or ran out of time ends
    the attack, and the restarts never started are not reported. The callback sees
    the restart's data, not its raw row.
    """
    def report(it: int, r: int, loss: float, running: int, row: torch.Tensor) -> bool:
        return on_step(it, r, loss, running, layout.data(row[None])[0]) if on_step is not None else False

    if together:
        return run(start, report)
    parts: list[LoopResult] = []
    for r in range(start.shape[0]):
        def local(it: int, _i: int, loss: float, running: int, row: torch.Tensor, _r: int = r) -> bool:
            return report(it, _r, loss, running, row)

        part = run(start[r : r + 1], local)
        parts.append(part)
        if part.statuses[0] in ("converged", "stopped", "budget"):
            break
    return LoopResult(
        best=torch.cat([p.best for p in parts]),
        losses=tuple(x for p in parts for x in p.losses),
        iterations=tuple(x for p in parts for x in p.iterations),
        statuses=tuple(x for p in parts for x in p.statuses),
        histories=tuple(x for p in parts for x in p.histories),
    )


def dummy_data(knowledge: AttackerKnowledge, generator: torch.Generator) -> torch.Tensor:
    """Random normal start in model space, one per sample."""
    shape = (knowledge.num_samples, *knowledge.input_shape)
    return torch.randn(shape, generator=generator)


def box_projection(layout: Layout, knowledge: AttackerKnowledge) -> Callable[[torch.Tensor], None] | None:
    """In-place projection of the rows' data onto the valid pixel box, or None when unknown."""
    if knowledge.bounds is None:
        return None
    low = torch.tensor(knowledge.bounds[0], dtype=torch.float32)
    high = torch.tensor(knowledge.bounds[1], dtype=torch.float32)
    if len(layout.input_shape) == 3 and low.numel() == layout.input_shape[0]:
        low, high = low.reshape(-1, 1, 1), high.reshape(-1, 1, 1)
    else:  # per-channel bounds only make sense for images: fall back to the widest box
        low, high = low.min(), high.max()

    def project(rows: torch.Tensor) -> None:
        with torch.no_grad():
            data = layout.data(rows)
            clamped = torch.maximum(torch.minimum(data, high.to(data.dtype)), low.to(data.dtype))
            rows[:, : layout.data_size] = clamped.reshape(rows.shape[0], -1)

    return project


def known_or_inferred_labels(problem, knowledge: AttackerKnowledge, rule: str = "auto") -> torch.Tensor:
    """Labels handed to the attacker, else recovered from the update's last layer by `rule`."""
    from gradleak.attacks.labels import recover_labels

    if knowledge.label_knowledge is LabelKnowledge.GIVEN:
        return knowledge.labels.detach().long().reshape(-1)
    return recover_labels(problem.model, problem.gradient_view, knowledge.num_samples, knowledge.input_shape, rule)
