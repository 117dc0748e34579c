"""Inverting Gradients (Geiping et al., NeurIPS 2020).

Threat model: honest-but-curious server with the model and the update, using a
total-variation prior (assumption levels 0 and 1). Labels are given or recovered
from the last layer. Objective: 1 - cosine similarity of all parameter gradients plus
`tv` times the total variation; Adam on signed gradients with the learning rate cut
by 10x at 3/8, 5/8 and 7/8 of the iterations; pixels clamped to the valid box after
each step; restarts keep the lowest objective.
"""

from __future__ import annotations

import torch

from gradleak.attacks.base import OptimizationAttack, Solved
from gradleak.attacks.engine.adam import run_adam
from gradleak.attacks.engine.bn_statistics import combine_priors
from gradleak.attacks.engine.labels import LABEL_RULES
from gradleak.attacks.engine.objectives import DISTANCES, total_variation
from gradleak.attacks.engine.problem import Layout, build_problem, matching_objective
from gradleak.attacks.engine.restarts import (
    box_projection,
    dummy_data,
    known_or_inferred_labels,
    run_restarts,
    sync_every_for,
)
from gradleak.checks import check_names, check_positive_float, check_positive_int
from gradleak.devices import model_device
from gradleak.errors import GradleakError
from gradleak.records import Assumption, LabelKnowledge


class InvertingGradients(OptimizationAttack):
    """Cosine gradient matching + TV prior, signed Adam, step schedule, box constraint.

    Args:
        iterations: Adam steps per restart (paper: 24,000; our default suits a CPU).
        lr: Adam learning rate (paper: 0.1).
        tv: total-variation weight (releases use 1e-4 to 0.2; 1e-2 worked best for our
            small models at 32x32, see benchmarks/).
        restarts: independent random starts; the lowest objective wins.
        distance: "cosine" (paper) or "l2".
        signed: use the sign of the gradient (paper: True).
        max_seconds: wall-clock budget for the whole attack.
        assumed_lr: FedAvg delta read as one step of this learning rate when the local
            configuration is unknown (cosine is invariant to it).
        label_rule: how labels are recovered when not given (`LABEL_RULES`).
        skip: parameter names left out of the objective (the adaptive attack on Soteria
            drops the defended layer; Balunovic et al. 2022).
        restart_mode, halving, bn, bn_source, bn_proxy, group, group_start: see
            `OptimizationAttack`.
        sync_every: steps between reading the losses back from the device (None: 1 on the
            CPU, 16 on a GPU; see `run_adam`).
    """

    name = "ig"
    label_mode = LabelKnowledge.INFERRED

    def __init__(
        self,
        *,
        iterations: int = 2000,
        lr: float = 0.1,
        tv: float = 1e-2,
        restarts: int = 1,
        distance: str = "cosine",
        signed: bool = True,
        max_seconds: float | None = None,
        assumed_lr: float = 1.0,
        label_rule: str = "auto",
        skip: tuple[str, ...] = (),
        restart_mode: str = "stacked",
        halving: tuple[float, ...] | None = None,
        sync_every: int | None = None,
        bn: float = 0.0,
        bn_source: str = "client",
        bn_proxy: torch.Tensor | None = None,
        group: float = 0.0,
        group_start: float = 0.5,
    ) -> None:
        super().__init__(restarts=restarts, max_seconds=max_seconds, restart_mode=restart_mode,
                         halving=halving, bn=bn, bn_source=bn_source, bn_proxy=bn_proxy, group=group,
                         group_start=group_start)
        self.sync_every = None if sync_every is None else check_positive_int("sync_every", sync_every)
        self.label_rule = LABEL_RULES.entry(label_rule).name
        self.iterations = check_positive_int("iterations", iterations)
        self.lr = check_positive_float("lr", lr)
        self.tv = check_positive_float("tv", tv, allow_zero=True)
        if distance not in DISTANCES:
            raise GradleakError(f"distance must be one of {sorted(DISTANCES)}, got {distance!r}")
        self.distance = distance
        self.signed = bool(signed)
        self.assumed_lr = check_positive_float("assumed_lr", assumed_lr)
        self.skip = check_names("skip", skip)

    def _iterations(self) -> int:
        return self.iterations

    def _assumptions(self, knowledge):
        return tuple(sorted(set(super()._assumptions(knowledge)) | {Assumption.PRIORS}))

    def _solve(self, model, update, knowledge, generators, deadline, on_step) -> Solved:
        problem = build_problem(model, update, knowledge, assumed_lr=self.assumed_lr, skip=self.skip)
        labels = known_or_inferred_labels(problem, knowledge, self.label_rule)
        layout = Layout(knowledge.num_samples, knowledge.input_shape, device=model_device(model))
        start = torch.cat([layout.pack(dummy_data(knowledge, gen)[None]) for gen in generators])
        tv = self.tv
        prior = combine_priors((lambda x: tv * total_variation(x)) if tv > 0 else None,
                               self._bn_prior(problem, update, knowledge.input_shape))
        objective, stacked = matching_objective(problem, layout, self.distance, labels, prior=prior,
                                                batched=self.restart_mode == "stacked")
        n = self.iterations
        objective = self._grouped(objective, layout, n)
        milestones = [int(n * f) for f in (3 / 8, 5 / 8, 7 / 8)]

        def run(rows, step_cb):
            return run_adam(objective, rows, iterations=n, lr=self.lr, signed=self.signed, milestones=milestones,
                            project=box_projection(layout, knowledge), deadline=deadline, on_step=step_cb,
                            halving=self.halving, sync_every=sync_every_for(self.sync_every, layout.device))

        loop = run_restarts(run, start, layout, together=self.restart_mode != "sequential",
                            on_step=on_step)
        data = layout.data(loop.best)
        return Solved(data, labels.expand(data.shape[0], -1), loop, self._mode_used(stacked))
