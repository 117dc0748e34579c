"""GIAS: gradient inversion in a generator's latent space (Jeon et al., NeurIPS 2021).

Threat model: honest-but-curious server with the model and the update, and a generator
trained on data from the client's distribution (the SoK's GIA-L: assumption level 2,
data distribution). Labels are given or recovered from the last layer, as for inverting
gradients. Two stages: (1) Adam over the latents z (one per sample, every restart at
once) on the gradient-matching objective of G(z), cosine by default with an optional TV
prior; (2) from the best restart, Adam over the latents and a private copy of the
generator's parameters per sample, with the penalty `penalty` * sum ||w_i - w_0||^2
keeping each copy near the pretrained weights w_0, so the image can leave the
generator's range where the update asks for it. The result is the image of the latent
and parameters with the lowest objective.

The generator is a constructor argument: any `nn.Module` mapping latents (N, latent_dim)
to images in [0, 1] of the attacked input shape, or a checkpoint path written by
`gradleak.generators.save_generator`; see `engine.latent`.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch.func import functional_call

from gradleak.attacks.base import OptimizationAttack, Solved
from gradleak.attacks.engine.adam import run_adam
from gradleak.attacks.engine.labels import LABEL_RULES
from gradleak.attacks.engine.latent import LatentView, generator_argument, latent_assumptions, latent_problem
from gradleak.attacks.engine.objectives import DISTANCES, total_variation
from gradleak.attacks.engine.problem import Layout, matching_objective
from gradleak.attacks.engine.restarts import run_restarts, sync_every_for
from gradleak.checks import check_positive_float, check_positive_int
from gradleak.errors import GradleakError
from gradleak.records import LabelKnowledge


class GIAS(OptimizationAttack):
    """Latent search, then generator-parameter search near the pretrained weights.

    Args:
        generator: nn.Module (latent -> image in [0, 1]) or a generator checkpoint path.
        latent_dim: the latent size (default: the generator's `latent_dim` attribute).
        latent_iterations: Adam steps of stage 1 (paper: 400 for CIFAR).
        generator_iterations: Adam steps of stage 2 (paper: 6,000; 0 skips the stage).
        lr: stage 1 learning rate over the latents (also the latents' in stage 2).
        generator_lr: stage 2 learning rate over the generator's parameters.
        penalty: weight of sum ||w_i - w_0||^2 in stage 2.
        tv: total-variation weight on the model-space image (0: none).
        distance: "cosine" (default) or "l2".
        restarts: independent latent starts in stage 1; the best goes on to stage 2.
        label_rule, assumed_lr, max_seconds, restart_mode, sync_every: as for `ig`.
    """

    name = "gias"
    label_mode = LabelKnowledge.INFERRED

    def __init__(
        self,
        *,
        generator,
        latent_dim: int | None = None,
        latent_iterations: int = 400,
        generator_iterations: int = 400,
        lr: float = 0.03,
        generator_lr: float = 1e-3,
        penalty: float = 1e-3,
        tv: float = 0.0,
        distance: str = "cosine",
        restarts: int = 4,
        max_seconds: float | None = None,
        label_rule: str = "auto",
        assumed_lr: float = 1.0,
        restart_mode: str = "stacked",
        sync_every: int | None = None,
    ) -> None:
        super().__init__(restarts=restarts, max_seconds=max_seconds, restart_mode=restart_mode)
        self.generator, self.latent_dim = generator_argument(generator, latent_dim)
        self.latent_iterations = check_positive_int("latent_iterations", latent_iterations)
        if not isinstance(generator_iterations, int) or isinstance(generator_iterations, bool) \
                or generator_iterations < 0:
            raise GradleakError(f"generator_iterations must be an integer >= 0, got {generator_iterations!r}")
        self.generator_iterations = generator_iterations
        self.lr = check_positive_float("lr", lr)
        self.generator_lr = check_positive_float("generator_lr", generator_lr)
        self.penalty = check_positive_float("penalty", penalty, allow_zero=True)
        self.tv = check_positive_float("tv", tv, allow_zero=True)
        if distance not in DISTANCES:
            raise GradleakError(f"distance must be one of {sorted(DISTANCES)}, got {distance!r}")
        self.distance = distance
        self.label_rule = LABEL_RULES.entry(label_rule).name
        self.assumed_lr = check_positive_float("assumed_lr", assumed_lr)
        self.sync_every = None if sync_every is None else check_positive_int("sync_every", sync_every)

    def _iterations(self) -> int:
        return self.latent_iterations + self.generator_iterations

    def _assumptions(self, knowledge):
        return latent_assumptions(knowledge)

    def _solve(self, model, update, knowledge, generators, deadline, on_step) -> Solved:
        latent = latent_problem(model, update, knowledge, self.generator, self.latent_dim,
                                assumed_lr=self.assumed_lr, label_rule=self.label_rule)
        problem, labels, view, device = latent.problem, latent.labels, latent.view, latent.device
        dim = view.latent_dim
        layout = Layout(knowledge.num_samples, knowledge.input_shape, device=device)
        tv = self.tv
        prior = (lambda x: tv * total_variation(x)) if tv > 0 else None
        data_objective, stacked = matching_objective(problem, layout, self.distance, labels, prior=prior,
                                                     batched=self.restart_mode == "stacked")
        start = torch.cat([torch.randn(1, knowledge.num_samples * dim, generator=g, device=device)
                           for g in generators])

        def run(rows, step_cb):
            return run_adam(lambda z: data_objective(view.flat(z)), rows, iterations=self.latent_iterations,
                            lr=self.lr, signed=False, deadline=deadline, on_step=step_cb,
                            sync_every=sync_every_for(self.sync_every, device))

        loop = run_restarts(run, start, view, together=self.restart_mode != "sequential", on_step=on_step)
        with torch.no_grad():
            data = view.data(loop.best)
        finite = [i for i, loss in enumerate(loop.losses) if math.isfinite(loss)]
        if self.generator_iterations and finite and not deadline.passed():
            best = min(finite, key=lambda i: loop.losses[i])
            x, loss, history = self._stage_two(view, loop.best[best], data_objective, deadline, on_step, best)
            if loss < loop.losses[best]:
                data = data.clone()
                data[best] = x
                loop = dataclasses.replace(
                    loop,
                    losses=tuple(loss if i == best else v for i, v in enumerate(loop.losses)),
                    iterations=tuple(n + len(history) if i == best else n for i, n in enumerate(loop.iterations)),
                    histories=tuple(h + history if i == best else h for i, h in enumerate(loop.histories)))
        return Solved(data.detach(), labels.expand(data.shape[0], -1), loop, self._mode_used(stacked))

    def _stage_two(self, view: LatentView, row: torch.Tensor, data_objective, deadline, on_step, restart: int):
        """Adam over the latents and one generator copy per sample; (best data, its loss, losses)."""
        gen, b, dim = view.generator, view.num_samples, view.latent_dim
        base = {n: p.detach() for n, p in gen.named_parameters()}
        buffers = {n: t for n, t in gen.named_buffers()}
        copies = [{n: p.clone().requires_grad_(True) for n, p in base.items()} for _ in range(b)]
        z = row.detach().clone().reshape(b, dim).requires_grad_(True)
        opt = torch.optim.Adam([{"params": [z], "lr": self.lr},
                                {"params": [p for c in copies for p in c.values()], "lr": self.generator_lr}])

        def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
            images = torch.cat([functional_call(gen, (copies[i], buffers), (z[i:i + 1],)) for i in range(b)])
            x = view.to_model(images)
            drift = sum(((c[n] - base[n]) ** 2).sum() for c in copies for n in base)
            return data_objective(x.reshape(1, -1))[0] + self.penalty * drift, x.detach()

        best_loss, best_x, history = math.inf, None, []
        for it in range(self.generator_iterations + 1):  # the first evaluation is stage 1's best
            with torch.enable_grad():
                loss, x = evaluate()
            value = float(loss.detach())
            if math.isfinite(value) and value < best_loss:
                best_loss, best_x = value, x
            if it > 0:
                history.append(value)
                if on_step is not None and on_step(self.latent_iterations + it, restart, best_loss, 1, best_x):
                    break
            if it == self.generator_iterations or deadline.passed() or not math.isfinite(value):
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return best_x, best_loss, tuple(history)
