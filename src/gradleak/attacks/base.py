"""The attack base class: one verb, `reconstruct`.

An attack receives the model as the server holds it at the start of the round, the
`ClientUpdate` it observed and the `AttackerKnowledge`, and returns a
`Reconstruction` in the model's input space. Restarts are independent problems with
their own seeds; the one with the lowest objective is kept, and a restart that reaches
the attack's tolerance ends the attack early.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.records import AttackerKnowledge, ClientUpdate, LabelKnowledge, Reconstruction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """One optimization step of one restart, as reported to a callback."""

    restart: int
    restarts: int
    iteration: int
    iterations: int
    loss: float


ProgressCallback = Callable[[Progress], "bool | None"]  # return True to stop the attack


@dataclass(frozen=True)
class RestartResult:
    data: torch.Tensor
    labels: torch.Tensor | None
    loss: float
    iterations: int
    status: str
    history: tuple[float, ...]


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


class Attack(ABC):
    """Base class: subclasses implement `_restart`; `reconstruct` runs the restarts."""

    name: ClassVar[str]
    label_mode: ClassVar[LabelKnowledge]  # what it does with labels when none are given

    def __init__(self, *, restarts: int = 1, max_seconds: float | None = None) -> None:
        self.restarts = check_positive_int("restarts", restarts)
        self.max_seconds = None if max_seconds is None else check_positive_float("max_seconds", max_seconds)

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
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise GradleakError(f"seed must be an integer >= 0, got {seed!r}")
        if knowledge.uses_bn_statistics:
            raise GradleakError(f"attack {self.name!r} does not use BN statistics; set uses_bn_statistics=False")
        if knowledge.num_samples != update.num_samples:
            raise GradleakError(
                f"knowledge.num_samples ({knowledge.num_samples}) differs from the update's "
                f"num_samples ({update.num_samples})"
            )
        start = time.perf_counter()
        results: list[RestartResult] = []
        stopped = False
        for r, rseed in enumerate(restart_seeds(seed, self.restarts)):
            gen = torch.Generator().manual_seed(rseed)

            def on_step(it: int, loss: float, _r: int = r) -> bool:
                if callback is None:
                    return False
                return bool(callback(Progress(_r, self.restarts, it, self._iterations(), loss)))

            result = self._restart(model, update, knowledge, gen, self._deadline(start), on_step)
            log.debug("%s restart %d: loss %.4g after %d iterations (%s)", self.name, r, result.loss,
                      result.iterations, result.status)
            results.append(result)
            if result.status in ("stopped", "budget"):
                stopped = True
                break
            if result.status == "converged":  # reached `tol`: later restarts cannot do meaningfully better
                break
        finite = [i for i, res in enumerate(results) if res.loss == res.loss and res.loss != float("inf")]
        best = min(finite, key=lambda i: results[i].loss) if finite else 0
        status = results[best].status
        if stopped:
            status = results[-1].status
        elif status in ("converged", "plateau"):
            status = "ok"
        return Reconstruction(
            data=results[best].data,
            labels=results[best].labels,
            restart_losses=tuple(res.loss for res in results),
            best_restart=best,
            iterations=sum(res.iterations for res in results),
            seconds=time.perf_counter() - start,
            status=status,
            assumptions=self._assumptions(knowledge),
            label_knowledge=self._label_knowledge(knowledge),
            loss_history=results[best].history,
            restart_statuses=tuple(res.status for res in results),
        )

    def _deadline(self, start: float):
        from gradleak.attacks.optimize import Deadline

        return Deadline(None if self.max_seconds is None else start + self.max_seconds)

    def _assumptions(self, knowledge: AttackerKnowledge):
        return knowledge.assumptions()

    def _label_knowledge(self, knowledge: AttackerKnowledge) -> LabelKnowledge:
        if knowledge.label_knowledge is LabelKnowledge.GIVEN:
            return LabelKnowledge.GIVEN
        return self.label_mode

    @abstractmethod
    def _iterations(self) -> int: ...

    @abstractmethod
    def _restart(self, model, update, knowledge, generator, deadline, on_step) -> RestartResult: ...


def dummy_data(knowledge: AttackerKnowledge, generator: torch.Generator) -> torch.Tensor:
    """Random normal start in model space, one per sample."""
    shape = (knowledge.num_samples, *knowledge.input_shape)
    return torch.randn(shape, generator=generator).requires_grad_(True)


def clamp_fn(x: torch.Tensor, knowledge: AttackerKnowledge) -> Callable[[], None] | None:
    """A projection onto the valid pixel box, or None when the bounds are unknown."""
    if knowledge.bounds is None:
        return None
    low = torch.tensor(knowledge.bounds[0], dtype=x.dtype)
    high = torch.tensor(knowledge.bounds[1], dtype=x.dtype)
    if x.dim() == 4 and low.numel() == x.shape[1]:
        low, high = low.reshape(1, -1, 1, 1), high.reshape(1, -1, 1, 1)
    else:  # per-channel bounds only make sense for images: fall back to the widest box
        low, high = low.min(), high.max()

    def project() -> None:
        with torch.no_grad():
            x.clamp_(min=low, max=high)

    return project


def known_or_inferred_labels(problem, knowledge: AttackerKnowledge, rule: str = "auto") -> torch.Tensor:
    """Labels handed to the attacker, else recovered from the update's last layer by `rule`."""
    from gradleak.attacks.labels import recover_labels

    if knowledge.label_knowledge is LabelKnowledge.GIVEN:
        return knowledge.labels.detach().long().reshape(-1)
    return recover_labels(problem.model, problem.gradient_view, knowledge.num_samples, knowledge.input_shape, rule)
