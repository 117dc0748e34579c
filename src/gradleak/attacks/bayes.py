"""The Bayes-optimal attack (Balunovic, Dimitrov, Jovanovic, Vechev, ICLR 2022).

Threat model: honest-but-curious server with the model and the defended update, which
knows the client's defense as a distribution p(g | x) (`AttackerKnowledge.defense`; its
random masks too when `defense_seed` is known) and uses an image prior (assumption levels
0 and 1). It maximizes log p(g | x) + log p(x): the defense's conditional
(`Defense.conditional`) at the update predicted for x, plus a prior of squared
wrap-around total variation and a penalty on pixels outside the valid box, from a random
start; restarts keep the lowest objective. Without a known defense the conditional is
`Identity` (the L2 attack).

Optimizer: L-BFGS with an Armijo backtracking line search by default (ours), or the
paper's Adam with an exponentially decaying learning rate (`optimizer="adam"`). On DLG's
LeNet the Adam recipe stayed below a flat mean-colour image even with no defense, where
L-BFGS recovers the image (experiments/honest/README.md, sections 5 and 6). The objective
is divided by its value at the start, so that L-BFGS's tolerances and first step mean the
same under every distance, conditional and noise scale.

`PriorMatching` is the shared recipe; `l2`, `l1` and `cosine` (`attacks/baselines.py`)
keep it and swap the conditional for a fixed distance, the paper's baselines.
"""

from __future__ import annotations

import logging

import torch

from gradleak.attacks.base import OptimizationAttack, Solved
from gradleak.attacks.engine.adam import run_adam
from gradleak.attacks.engine.bn_statistics import combine_priors
from gradleak.attacks.engine.labels import LABEL_RULES
from gradleak.attacks.engine.lbfgs import run_lbfgs
from gradleak.attacks.engine.objectives import (
    normalized,
    range_penalty,
    squared_tv_wrap,
)
from gradleak.attacks.engine.problem import Layout, build_problem, matching_objective
from gradleak.attacks.engine.restarts import (
    dummy_data,
    known_or_inferred_labels,
    run_restarts,
    sync_every_for,
)
from gradleak.checks import check_names, check_positive_float, check_positive_int
from gradleak.defenses.conditionals import (
    Gaussian,
    Identity,
    Laplace,
    gaussianized,
    smoothed,
)
from gradleak.devices import model_device
from gradleak.errors import GradleakError
from gradleak.records import Assumption, LabelKnowledge

log = logging.getLogger(__name__)

OPTIMIZERS = ("lbfgs", "adam")
# prior weights of the L2 and L1 baselines (experiments/honest/bayes_tune.jsonl); Bayes under a
# known defense scales the one whose distance its conditional is (`matched_tv`)
L2_TV = 0.1
L1_TV = 100.0
DEFAULT_ITERATIONS = {"lbfgs": 200, "adam": 1000}
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.1}


def _in_units(distance, problem):
    """A conditional models the shared delta; the problem reads it in gradient units."""
    if isinstance(distance, str) or problem.delta_scale == 1.0:
        return distance
    unit = problem.delta_scale

    def scaled(predicted, target):
        return distance([unit * p for p in predicted], [unit * t for t in target])

    return scaled


def matched_tv(conditional) -> float | None:
    """The prior weight for a Bayes attacker that knows its defense's conditional: the
    weight tuned for the baseline whose distance the conditional is, times the factor
    between them (Laplace(b): L1 / b; Gaussian(sigma): L2 / (2 sigma^2); inside masks and
    transforms the innermost noise decides). So the prior keeps its balance against a
    conditional 1 / b or 1 / sigma^2 larger than the no-defense one; with the no-defense
    weight (0.05) it vanished beside it. None for a conditional of another kind. Measured
    against the attack's own weight x the same factor: experiments/honest/README.md, section 6."""
    while hasattr(conditional, "inner"):
        conditional = conditional.inner
    if isinstance(conditional, Laplace):
        return L1_TV / conditional.b
    if isinstance(conditional, Gaussian):
        return L2_TV / (2 * conditional.sigma**2)
    return None


class PriorMatching(OptimizationAttack):
    """Match the update under a distance or a defense's conditional, plus an image prior.

    Args:
        optimizer: "lbfgs" (default; L-BFGS steps of up to 20 inner iterations with an
            Armijo backtracking line search, as `dlg`) or "adam" (the paper's recipe).
        iterations: optimizer steps per restart (None: 200 for L-BFGS, 1000 for Adam).
        lr: the optimizer's learning rate (None: 1 for L-BFGS, 0.1 for Adam's initial one).
        lr_end: Adam only: the learning rate at the last step as a fraction of `lr`
            (exponential decay in between; ours, the paper states only that it decays
            exponentially).
        tv: weight of the squared wrap-around total variation (mean over pixels); None:
            the attack's `default_tv`, tuned on held-out photos with no defense
            (experiments/honest/bayes_floor.py); Bayes with a known defense scales it to
            its conditional's units instead (`matched_tv`).
        range_weight: weight of the mean squared distance of pixels outside the box
            (needs `AttackerKnowledge.bounds`; ignored without them).
        skip: parameter names left out of the objective (the adaptive attack on Soteria
            drops the defended layer).
        warmup: L-BFGS steps on a smooth twin of the objective (with the same prior)
            before the attack's own, from the same random start (0: none): squared L2 for
            the baselines, the conditional with every Laplacian replaced by the Gaussian
            of the same variance for Bayes (pruning masks kept). The L1 distance and the
            Laplacian conditional have a kink at every matched entry, where L-BFGS from a
            random start stalls; started near the image they refine it.
        restarts, max_seconds, restart_mode, halving, bn, bn_source, bn_proxy, group,
            group_start: see `OptimizationAttack`.
        assumed_lr: a FedAvg delta is read as one step of this learning rate when the
            local configuration is unknown.
        label_rule: how labels are recovered when not given (`LABEL_RULES`).
        sync_every: steps between reading the losses back from the device (None: 1 on the
            CPU, 16 on a GPU; see `run_adam`).
    """

    label_mode = LabelKnowledge.INFERRED
    default_tv = 0.01

    def __init__(
        self,
        *,
        optimizer: str = "lbfgs",
        iterations: int | None = None,
        lr: float | None = None,
        lr_end: float = 0.05,
        tv: float | None = None,
        range_weight: float = 1.0,
        warmup: int = 0,
        skip: tuple[str, ...] = (),
        restarts: int = 1,
        max_seconds: float | None = None,
        assumed_lr: float = 1.0,
        label_rule: str = "auto",
        restart_mode: str = "stacked",
        halving: tuple[float, ...] | None = None,
        sync_every: int | None = None,
        bn: float = 0.0,
        bn_source: str = "client",
        bn_proxy: torch.Tensor | None = None,
        group: float = 0.0,
        group_start: float = 0.5,
    ) -> None:
        super().__init__(restarts=restarts, max_seconds=max_seconds, restart_mode=restart_mode, halving=halving,
                         bn=bn, bn_source=bn_source, bn_proxy=bn_proxy, group=group, group_start=group_start)
        self.sync_every = None if sync_every is None else check_positive_int("sync_every", sync_every)
        if optimizer not in OPTIMIZERS:
            raise GradleakError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        self.optimizer = optimizer
        self.iterations = check_positive_int(
            "iterations", DEFAULT_ITERATIONS[optimizer] if iterations is None else iterations)
        self.lr = check_positive_float("lr", DEFAULT_LR[optimizer] if lr is None else lr)
        self.lr_end = check_positive_float("lr_end", lr_end)
        if self.lr_end > 1:
            raise GradleakError(f"lr_end is a fraction of lr in (0, 1], got {lr_end!r}")
        self.tv = check_positive_float("tv", self.default_tv if tv is None else tv, allow_zero=True)
        self.tv_given = tv is not None
        self.range_weight = check_positive_float("range_weight", range_weight, allow_zero=True)
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise GradleakError(f"warmup must be an integer >= 0 (L-BFGS steps), got {warmup!r}")
        self.warmup = warmup
        self.skip = check_names("skip", skip)
        self.assumed_lr = check_positive_float("assumed_lr", assumed_lr)
        self.label_rule = LABEL_RULES.entry(label_rule).name

    def _iterations(self) -> int:
        return self.iterations

    def _assumptions(self, knowledge):
        return tuple(sorted(set(super()._assumptions(knowledge)) | {Assumption.PRIORS}))

    def _distance(self, update, knowledge):
        """A name of `STACKED_DISTANCES` or a conditional over the observed tensors."""
        raise NotImplementedError

    def _warmup_distance(self, update, knowledge):
        """The smooth objective of the warm-up: squared L2 unless a subclass knows better."""
        return "l2"

    def _tv(self, update, knowledge) -> float:
        """The TV weight of this attack on this update (a subclass may read the defense)."""
        return self.tv

    def _prior(self, layout: Layout, knowledge, tv: float):
        weight = self.range_weight
        box = None
        if knowledge.bounds is not None and weight > 0:
            low = torch.tensor(knowledge.bounds[0], dtype=torch.float32, device=layout.device)
            high = torch.tensor(knowledge.bounds[1], dtype=torch.float32, device=layout.device)
            if len(layout.input_shape) == 3 and low.numel() == layout.input_shape[0]:
                low, high = low.reshape(-1, 1, 1), high.reshape(-1, 1, 1)
            else:
                low, high = low.min(), high.max()
            box = (low, high)
        image = len(layout.input_shape) >= 2
        if (tv == 0 or not image) and box is None:
            return None

        def prior(x: torch.Tensor) -> torch.Tensor:
            total = x.new_zeros(())
            if tv > 0 and image:
                total = total + tv * squared_tv_wrap(x)
            if box is not None:
                total = total + weight * range_penalty(x, box[0].to(x.dtype), box[1].to(x.dtype))
            return total

        return prior

    def _solve(self, model, update, knowledge, generators, deadline, on_step) -> Solved:
        problem = build_problem(model, update, knowledge, assumed_lr=self.assumed_lr, skip=self.skip)
        labels = known_or_inferred_labels(problem, knowledge, self.label_rule)
        layout = Layout(knowledge.num_samples, knowledge.input_shape, device=model_device(model))
        start = torch.cat([layout.pack(dummy_data(knowledge, gen)[None]) for gen in generators])
        bn = self._bn_prior(problem, update, knowledge.input_shape)
        prior = combine_priors(self._prior(layout, knowledge, self._tv(update, knowledge)), bn)
        objective, stacked = matching_objective(problem, layout, _in_units(self._distance(update, knowledge), problem),
                                                labels, prior=prior, batched=self.restart_mode == "stacked")
        warm = None
        if self.warmup:
            warm, _ = matching_objective(problem, layout, _in_units(self._warmup_distance(update, knowledge), problem),
                                         labels, prior=prior, batched=self.restart_mode == "stacked")
            warm = normalized(warm, start)
        # normalized first: its evaluation of the start must not count as a group-consistency call
        objective = self._grouped(normalized(objective, start), layout, self.iterations)
        decay = self.lr_end ** (1 / self.iterations)

        def run(rows, step_cb):
            if warm is not None:
                rows = run_lbfgs(warm, rows, steps=self.warmup, backtrack=10, deadline=deadline).best
            if self.optimizer == "adam":
                return run_adam(objective, rows, iterations=self.iterations, lr=self.lr, signed=False, decay=decay,
                                deadline=deadline, on_step=step_cb, halving=self.halving,
                                sync_every=sync_every_for(self.sync_every, layout.device))
            return run_lbfgs(objective, rows, steps=self.iterations, lr=self.lr, backtrack=10, deadline=deadline,
                             on_step=step_cb, halving=self.halving)

        loop = run_restarts(run, start, layout, together=self.restart_mode != "sequential", on_step=on_step)
        data = layout.data(loop.best)
        return Solved(data, labels.expand(data.shape[0], -1), loop, self._mode_used(stacked))


class Bayes(PriorMatching):
    """Bayes-optimal attack: the known defense's conditional p(g | x) plus the image prior.

    Options as `PriorMatching`, and `smooth`: a Laplacian conditional's |r| becomes the
    pseudo-Huber sqrt(r^2 + d^2) - d with d = smooth * b (0: the exact L1; see
    `conditionals.Laplace`). The defense comes from `AttackerKnowledge.defense`; with
    none known the attacker assumes no defense (the L2 conditional) and says so in the log.
    """

    name = "bayes"
    default_tv = 0.05  # experiments/honest/bayes_tune.jsonl

    def __init__(self, *, smooth: float = 0.0, **options) -> None:
        super().__init__(**options)
        self.smooth = check_positive_float("smooth", smooth, allow_zero=True)

    def _distance(self, update, knowledge):
        if knowledge.defense is None:
            if update.defenses:
                log.warning("bayes: the update went through %s but the attacker does not know it; "
                            "modelling no defense", ", ".join(update.defenses))
            return Identity()
        return smoothed(self._conditional(update, knowledge), self.smooth)

    def _warmup_distance(self, update, knowledge):
        return gaussianized(self._conditional(update, knowledge))

    def _tv(self, update, knowledge) -> float:
        if self.tv_given or knowledge.defense is None:
            return self.tv
        tv = matched_tv(self._conditional(update, knowledge))
        return self.tv if tv is None else tv

    def _conditional(self, update, knowledge):
        if knowledge.defense is None:
            return Identity()
        return knowledge.defense.conditional(Identity(), seed=knowledge.defense_seed)
