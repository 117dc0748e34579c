"""GGL: generative gradient leakage by a gradient-free latent search (Li et al., CVPR 2022).

Threat model: honest-but-curious server with the model, the update and a generator
trained on data from the client's distribution (the SoK's GIA-L: assumption level 2);
when it knows the client's defense (`AttackerKnowledge.defense`) it applies that very
defense to every predicted update before comparing, which needs no gradient through
the defense: QSGD, signSGD and top-k run as they are. Random defenses draw with
`defense_seed` when the attacker knows it, else with one fixed seed for the whole
search (common random numbers keep the objective deterministic). Labels are given or
recovered from the last layer. CMA-ES (the `cma` package) searches the latents of all
samples at once within `budget` objective evaluations per restart; the objective is the
squared distance of the (defended) predicted update to the observed one, relative to
the observed update's squared norm (or 1 - cosine), plus `regularization` times the KL
divergence of each latent's empirical N(mean, var) from N(0, 1), which keeps the latent
where the generator was trained. For a FedAvg delta read as one step, the defense acts
on the predicted step in the units of -delta / assumed_lr.

The generator is a constructor argument, as for `gias` (see `engine.latent`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import torch

from gradleak.attacks.base import OptimizationAttack, Solved
from gradleak.attacks.engine.labels import LABEL_RULES
from gradleak.attacks.engine.latent import generator_argument, latent_assumptions, latent_problem
from gradleak.attacks.engine.objectives import cosine_distance, l2_distance
from gradleak.attacks.engine.stopping import LoopResult
from gradleak.checks import check_positive_float, check_positive_int
from gradleak.errors import GradleakError
from gradleak.records import LabelKnowledge

GGL_DISTANCES = ("l2", "cosine")
COMMON_DEFENSE_SEED = 0  # the defense's draws when the attacker does not know the client's seed


def latent_kl(z: torch.Tensor) -> torch.Tensor:
    """Sum over samples of KL(N(mean_i, var_i) || N(0, 1)), mean_i and var_i over sample i's latent."""
    mean, var = z.mean(1), z.var(1, unbiased=False).clamp_min(1e-8)
    return (0.5 * (mean ** 2 + var - var.log() - 1)).sum()


@contextlib.contextmanager
def numpy_seeded(seed: int):
    """numpy's global generator seeded for the block and restored after it (cma reads it)."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


class GGL(OptimizationAttack):
    """CMA-ES over the generator's latents, the known defense inside the loop.

    Args:
        generator: nn.Module (latent -> image in [0, 1]) or a generator checkpoint path.
        latent_dim: the latent size (default: the generator's `latent_dim` attribute).
        budget: objective evaluations per restart (paper: 500).
        sigma: CMA-ES's initial step size in latent units.
        population: CMA-ES's population size (None: its default, 4 + 3 ln n).
        regularization: weight of the latents' KL term.
        distance: "l2" (paper; relative to the observed update's norm) or "cosine".
        restarts: independent searches, one after another; the lowest objective wins.
        label_rule, assumed_lr, max_seconds: as for `ig`.
    """

    name = "ggl"
    label_mode = LabelKnowledge.INFERRED

    def __init__(
        self,
        *,
        generator,
        latent_dim: int | None = None,
        budget: int = 500,
        sigma: float = 0.5,
        population: int | None = None,
        regularization: float = 1e-4,
        distance: str = "l2",
        restarts: int = 1,
        max_seconds: float | None = None,
        label_rule: str = "auto",
        assumed_lr: float = 1.0,
    ) -> None:
        super().__init__(restarts=restarts, max_seconds=max_seconds, restart_mode="sequential")
        self.generator, self.latent_dim = generator_argument(generator, latent_dim)
        self.budget = check_positive_int("budget", budget)
        self.sigma = check_positive_float("sigma", sigma)
        self.population = None if population is None else check_positive_int("population", population)
        if self.population is not None and self.population < 2:
            raise GradleakError(f"population must be at least 2, got {population!r}")
        self.regularization = check_positive_float("regularization", regularization, allow_zero=True)
        if distance not in GGL_DISTANCES:
            raise GradleakError(f"distance must be one of {GGL_DISTANCES}, got {distance!r}")
        self.distance = distance
        self.label_rule = LABEL_RULES.entry(label_rule).name
        self.assumed_lr = check_positive_float("assumed_lr", assumed_lr)

    def _iterations(self) -> int:
        return self.budget

    def _assumptions(self, knowledge):
        return latent_assumptions(knowledge)

    def _solve(self, model, update, knowledge, generators, deadline, on_step) -> Solved:
        import cma

        latent = latent_problem(model, update, knowledge, self.generator, self.latent_dim,
                                assumed_lr=self.assumed_lr, label_rule=self.label_rule)
        problem, labels, view, device = latent.problem, latent.labels, latent.view, latent.device
        dim = view.latent_dim
        shared = self._shared(model, update, knowledge)
        target = [t.double() for t in problem.target]
        scale = float(sum((t * t).sum() for t in target)) or 1.0

        def objective(z: np.ndarray) -> float:
            rows = torch.as_tensor(z, dtype=torch.float32, device=device)[None]
            with torch.no_grad():
                x = view.data(rows)[0]
            with torch.enable_grad():
                predicted = tuple(g.detach() for g in problem.predict(x, labels))
            predicted = [p.double() for p in shared(predicted, x, labels)]
            match = (l2_distance(predicted, target) / scale if self.distance == "l2"
                     else cosine_distance(predicted, target))
            return float(match + self.regularization * latent_kl(rows.reshape(-1, dim).double()))

        bests, losses, counts, statuses, histories = [], [], [], [], []
        for r, g in enumerate(generators):
            seed = int(g.initial_seed())
            x0 = torch.randn(knowledge.num_samples * dim, generator=g, device=device).cpu().double().numpy()
            rng = np.random.default_rng(seed)
            options = {"seed": float("nan"), "randn": lambda *shape, _rng=rng: _rng.standard_normal(shape),
                       "maxfevals": self.budget, "verbose": -9, "verb_log": 0, "verb_disp": 0}
            if self.population is not None:
                options["popsize"] = self.population
            best_z, best, history, evals, status = x0, math.inf, [], 0, "ok"
            with numpy_seeded(seed):
                es = cma.CMAEvolutionStrategy(x0, self.sigma, options)
                while not es.stop() and evals < self.budget:
                    candidates = es.ask()
                    values = []
                    for c in candidates:  # the budget is checked per evaluation: a generation can be long
                        values.append(objective(c))
                        if deadline.passed():
                            break
                    evals += len(values)
                    i = int(np.argmin(values))
                    if values[i] < best:
                        best, best_z = values[i], np.array(candidates[i])
                    history.append(best)
                    if len(values) < len(candidates):  # cut short by the budget: nothing to tell
                        status = "budget"
                        break
                    es.tell(candidates, values)
                    if on_step(evals, r, best, 1, view.data(torch.as_tensor(best_z, dtype=torch.float32,
                                                                            device=device)[None])[0]):
                        status = "stopped"
                        break
                    if deadline.passed():
                        status = "budget"
                        break
            bests.append(torch.as_tensor(best_z, dtype=torch.float32, device=device))
            losses.append(best)
            counts.append(evals)
            statuses.append(status)
            histories.append(tuple(history))
            if status != "ok":
                break
        rows = torch.stack(bests)
        with torch.no_grad():
            data = view.data(rows)
        loop = LoopResult(rows, tuple(losses), tuple(counts), tuple(statuses), tuple(histories))
        return Solved(data, labels.expand(data.shape[0], -1), loop, "sequential")

    def _shared(self, model, update, knowledge):
        """predicted tensors -> what the client would share under the known defense."""
        defense = knowledge.defense
        if defense is None:
            return lambda tensors, x, y: tensors
        from gradleak.defenses import ClientBatch

        seed = COMMON_DEFENSE_SEED if knowledge.defense_seed is None else knowledge.defense_seed

        def shared(tensors, x, y):
            clean = dataclasses.replace(update, tensors=tuple(tensors), defenses=())
            client = (ClientBatch(model, x.detach(), y, training=update.training, model_mode=update.model_mode)
                      if defense.needs_client else None)
            return defense.transform(clean, seed=seed, client=client).tensors

        return shared
