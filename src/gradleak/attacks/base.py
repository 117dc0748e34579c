"""The attack base class: one verb, `reconstruct`.

An attack receives the model as the server holds it at the start of the round, the
`ClientUpdate` it observed and the `AttackerKnowledge`, and returns a
`Reconstruction` in the model's input space. Restarts are independent problems with
their own seeds, optimized together in one batch where possible; the one with the
lowest objective is kept, and a restart that reaches the attack's tolerance ends the
attack early.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from gradleak.attacks.engine.attention import attention_notes, math_attention
from gradleak.attacks.engine.problem import update_mismatch
from gradleak.attacks.engine.restarts import check_halving, restart_seeds
from gradleak.attacks.engine.stopping import Deadline, Halving, LoopResult
from gradleak.checks import check_positive_float, check_positive_int, check_seed
from gradleak.devices import generator, model_device
from gradleak.errors import GradleakError
from gradleak.memory import PeakMemory, check_fits
from gradleak.records import (
    AttackerKnowledge,
    ClientUpdate,
    LabelKnowledge,
    Reconstruction,
)

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


class Attack(ABC):
    """One attack, one verb: `reconstruct` the client's data from an update.

    `reconstruct` is the same for every attack: it checks the inputs, runs the attack's
    own `_reconstruct` (under the math attention kernel when the model has attention,
    whose fused kernels have no double backward), and measures how well the result
    explains the observed update (`Reconstruction.gradient_mismatch`).
    """

    name: ClassVar[str]
    label_mode: ClassVar[LabelKnowledge]  # what it does with labels when none are given

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
        notes = attention_notes(model)
        with math_attention(bool(notes)):
            recon = self._reconstruct(model, update, knowledge, seed=seed, callback=callback)
            mismatch = update_mismatch(model, update, knowledge, recon.data, recon.labels)
        # results leave the accelerator: records hold CPU tensors wherever the attack ran
        labels = None if recon.labels is None else recon.labels.detach().cpu()
        return dataclasses.replace(recon, data=recon.data.detach().cpu(), labels=labels, gradient_mismatch=mismatch,
                                   notes=recon.notes + notes)

    @abstractmethod
    def _reconstruct(self, model: nn.Module, update: ClientUpdate, knowledge: AttackerKnowledge, *, seed: int,
                     callback: ProgressCallback | None) -> Reconstruction:
        """The attack itself, on checked inputs (the caller's model is not to be modified)."""

    def _check_inputs(self, update: ClientUpdate, knowledge: AttackerKnowledge, seed: int) -> None:
        check_seed(seed)
        if knowledge.uses_bn_statistics and getattr(self, "bn_source", None) not in ("client", "client-running"):
            raise GradleakError(f"attack {self.name!r} does not use BN statistics; set uses_bn_statistics=False "
                                "or give it the prior (bn > 0, bn_source 'client')")
        if knowledge.num_samples != update.num_samples:
            raise GradleakError(
                f"knowledge.num_samples ({knowledge.num_samples}) differs from the update's "
                f"num_samples ({update.num_samples})"
            )

    def _assumptions(self, knowledge: AttackerKnowledge):
        from gradleak.attacks.engine.bn_statistics import BN_SOURCES

        source = getattr(self, "bn_source", None)
        return tuple(sorted(set(knowledge.assumptions()) | ({BN_SOURCES[source]} if source else set())))

    def _bn_prior(self, problem, update, input_shape=None):
        """The BN-statistics prior of this attack's options on `problem`, or None."""
        from gradleak.attacks.engine.bn_statistics import bn_prior, bn_target

        if not getattr(self, "bn_source", None):
            return None
        return bn_prior(problem.model, bn_target(self.bn_source, problem.model, update, self.bn_proxy,
                                                   input_shape), self.bn)

    def _grouped(self, objective, layout, iterations: int):
        from gradleak.attacks.engine.bn_statistics import group_consistency

        return group_consistency(objective, layout.data, getattr(self, "group", 0.0),
                                 int(getattr(self, "group_start", 0.5) * iterations))

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
        bn: weight of the BatchNorm-statistics prior (Yin et al. 2021; 0: off), for the
            attacks that take it (`engine/bn_statistics.py`).
        bn_source: where its target comes from: "client" (the client's batch statistics,
            level 4), "client-running" (the same, derived from a FedAvg client's updated
            running buffers, level 4), "running" (the model's running statistics, level 0) or "proxy"
            (`bn_proxy`, public samples in model space, level 2). The result records the level.
        group, group_start: weight of Yin's group consistency (each restart pulled towards
            the restarts' mean image; 0: off) and the fraction of the iterations after which
            it starts.
    """

    def __init__(
        self,
        *,
        restarts: int = 1,
        max_seconds: float | None = None,
        restart_mode: str = "stacked",
        halving: Halving | tuple[float, ...] | None = None,
        bn: float = 0.0,
        bn_source: str = "client",
        bn_proxy: torch.Tensor | None = None,
        group: float = 0.0,
        group_start: float = 0.5,
    ) -> None:
        from gradleak.attacks.engine.bn_statistics import BN_SOURCES

        self.restarts = check_positive_int("restarts", restarts)
        self.bn = check_positive_float("bn", bn, allow_zero=True)
        if bn_source not in BN_SOURCES:
            raise GradleakError(f"bn_source must be one of {', '.join(BN_SOURCES)}, got {bn_source!r}")
        self.bn_source = bn_source if self.bn > 0 else None
        self.bn_proxy = bn_proxy
        if self.bn_source == "proxy" and not isinstance(bn_proxy, torch.Tensor):
            raise GradleakError(f"bn_source 'proxy' needs bn_proxy, a tensor of public samples, got "
                                f"{type(bn_proxy).__name__}")
        self.group = check_positive_float("group", group, allow_zero=True)
        self.group_start = check_positive_float("group_start", group_start, allow_zero=True)
        if self.group_start >= 1:
            raise GradleakError(f"group_start is a fraction of the iterations in [0, 1), got {group_start!r}")
        if self.group > 0 and (restarts < 2 or restart_mode == "sequential"):
            raise GradleakError(f"group consistency needs restarts >= 2 optimized together (restart_mode "
                                f"'stacked' or 'interleaved'); got {restarts} restart(s), {restart_mode!r}")
        self.max_seconds = None if max_seconds is None else check_positive_float("max_seconds", max_seconds)
        if restart_mode not in RESTART_MODES:
            raise GradleakError(f"restart_mode must be one of {', '.join(RESTART_MODES)}, got {restart_mode!r}")
        self.restart_mode = restart_mode
        self.halving = check_halving(halving)
        if self.halving is not None and restart_mode == "sequential":
            raise GradleakError("halving compares restarts while they run: use restart_mode 'stacked' or "
                                "'interleaved', not 'sequential'")

    def _reconstruct(self, model: nn.Module, update: ClientUpdate, knowledge: AttackerKnowledge, *, seed: int,
                     callback: ProgressCallback | None) -> Reconstruction:
        start = time.perf_counter()
        device = model_device(model)
        generators = [generator(device, s) for s in restart_seeds(seed, self.restarts)]

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

    def _check_inputs(self, update: ClientUpdate, knowledge: AttackerKnowledge, seed: int) -> None:
        super()._check_inputs(update, knowledge, seed)
        # every restart keeps its unknowns, best iterate, gradient and two optimizer moments
        unknowns = knowledge.num_samples * math.prod(knowledge.input_shape) * self.restarts
        check_fits(f"attack {self.name!r} with {self.restarts} restart(s) of {knowledge.num_samples} sample(s) "
                   f"of shape {tuple(knowledge.input_shape)}", unknowns * 4 * 6,
                   "use fewer restarts or samples")

    def _deadline(self, start: float) -> Deadline:
        return Deadline(None if self.max_seconds is None else start + self.max_seconds)

    @abstractmethod
    def _iterations(self) -> int: ...

    @abstractmethod
    def _solve(self, model, update, knowledge, generators, deadline, on_step) -> Solved: ...

    def _mode_used(self, stacked: bool) -> str:
        return "stacked" if stacked else ("sequential" if self.restart_mode == "sequential" else "interleaved")
