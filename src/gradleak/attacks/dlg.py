"""DLG: Deep Leakage from Gradients (Zhu et al., NeurIPS 2019).

Threat model: honest-but-curious server with the model and the shared update
(assumption level 0). Dummy data x' ~ N(0, 1) and dummy label logits y' ~ N(0, 1)
are optimized jointly with L-BFGS so that the gradient of the cross-entropy with the
soft target softmax(y') matches the shared gradient in squared L2 distance. When the
labels are given, only the data is optimized.
"""

from __future__ import annotations

import torch

from gradleak.attacks.base import OptimizationAttack, Solved
from gradleak.attacks.engine.lbfgs import run_lbfgs
from gradleak.attacks.engine.problem import Layout, build_problem, matching_objective
from gradleak.attacks.engine.restarts import dummy_data, run_restarts
from gradleak.attacks.engine.stopping import Plateau
from gradleak.checks import check_positive_float, check_positive_int
from gradleak.devices import model_device
from gradleak.errors import GradleakError
from gradleak.records import LabelKnowledge

DEFAULT_HALVING = (0.01, 0.03)


class DLG(OptimizationAttack):
    """Joint data + soft-label reconstruction with L-BFGS and squared gradient distance.

    Args:
        iterations: L-BFGS outer steps per restart (paper: 300). Ours allows 1,000 because
            halving leaves one restart after 3% of them: the whole attack spends about as
            many restart-steps as 1.2 of the paper's restarts, and slow starts still finish.
        lr: L-BFGS learning rate (paper: 1).
        restarts: independent random starts, optimized as one batch; the lowest final
            loss wins (paper: 1). With successive halving (default: keep the better half
            after 1% and 3% of the steps) only the most promising one runs to the end.
        tol: a restart whose gradient distance falls to `tol` times the squared norm of
            the target has converged and ends the attack (paper: none).
        patience: abandon a restart whose best loss fell by less than 1% in this many
            steps (a stalled start); 0 disables (paper: none).
        max_seconds: wall-clock budget for the whole attack (None: unlimited).
        assumed_lr: for a FedAvg delta when the local configuration is unknown, the
            learning rate assumed to turn it into one gradient step.
        backtracking: Armijo backtracking (up to 10 halvings) on each L-BFGS move
            (paper: none, torch's default). Without it a step into saturated sigmoids
            can freeze a restart for good, the usual way DLG fails.
        restart_mode, halving: see `Attack` (paper: sequential, none).
    """

    name = "dlg"
    label_mode = LabelKnowledge.UNKNOWN

    def __init__(
        self,
        *,
        iterations: int = 1000,
        lr: float = 1.0,
        restarts: int = 4,
        tol: float = 1e-8,
        patience: int = 30,
        max_seconds: float | None = None,
        assumed_lr: float = 1.0,
        backtracking: bool = True,
        restart_mode: str = "stacked",
        halving: tuple[float, ...] | None = DEFAULT_HALVING,
    ) -> None:
        if restart_mode == "sequential" and halving == DEFAULT_HALVING:
            halving = None  # the default only applies where restarts run together
        super().__init__(restarts=restarts, max_seconds=max_seconds, restart_mode=restart_mode,
                         halving=halving)
        self.iterations = check_positive_int("iterations", iterations)
        self.lr = check_positive_float("lr", lr)
        self.tol = check_positive_float("tol", tol, allow_zero=True)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise GradleakError(f"patience must be an integer >= 0, got {patience!r}")
        self.patience = patience
        self.assumed_lr = check_positive_float("assumed_lr", assumed_lr)
        self.backtracking = bool(backtracking)

    def _iterations(self) -> int:
        return self.iterations

    def _fixed_labels(self, problem, knowledge) -> torch.Tensor | None:
        """Hard labels to use, or None to optimize soft labels jointly (DLG)."""
        if knowledge.label_knowledge is LabelKnowledge.GIVEN:
            return knowledge.labels.detach().long().reshape(-1)
        return None

    def _solve(self, model, update, knowledge, generators, deadline, on_step) -> Solved:
        problem = build_problem(model, update, knowledge, assumed_lr=self.assumed_lr)
        hard = self._fixed_labels(problem, knowledge)
        given = hard is not None
        layout = Layout(knowledge.num_samples, knowledge.input_shape, None if given else knowledge.num_classes,
                        device=model_device(model))
        starts = []
        for gen in generators:  # data first, then label logits, from each restart's own generator
            x = dummy_data(knowledge, gen)[None]
            y = None if given else torch.randn(1, knowledge.num_samples, knowledge.num_classes, generator=gen,
                                               device=gen.device)
            starts.append(layout.pack(x, y))
        objective, stacked = matching_objective(problem, layout, "l2", hard, batched=self.restart_mode == "stacked")
        scale = float(sum((t.double() ** 2).sum() for t in problem.target))

        def run(rows, step_cb):
            return run_lbfgs(objective, rows, steps=self.iterations, lr=self.lr, deadline=deadline, on_step=step_cb,
                             tol=self.tol * scale, plateau=Plateau(self.patience) if self.patience else None,
                             halving=self.halving, backtrack=10 if self.backtracking else 0)

        loop = run_restarts(run, torch.cat(starts), layout, together=self.restart_mode != "sequential",
                            on_step=on_step)
        data = layout.data(loop.best)
        labels = hard.expand(data.shape[0], -1) if given else layout.label_logits(loop.best).argmax(-1)
        return Solved(data, labels, loop, self._mode_used(stacked))
