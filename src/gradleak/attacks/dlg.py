"""DLG: Deep Leakage from Gradients (Zhu et al., NeurIPS 2019).

Threat model: honest-but-curious server with the model and the shared update
(assumption level 0). Dummy data x' ~ N(0, 1) and dummy label logits y' ~ N(0, 1)
are optimized jointly with L-BFGS so that the gradient of the cross-entropy with the
soft target softmax(y') matches the shared gradient in squared L2 distance. When the
labels are given, only the data is optimized.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gradleak.attacks.base import Attack, RestartResult, check_positive_float, check_positive_int, dummy_data
from gradleak.attacks.objectives import l2_distance
from gradleak.attacks.optimize import Plateau, run_lbfgs
from gradleak.attacks.problem import build_problem
from gradleak.errors import GradleakError
from gradleak.records import LabelKnowledge


class DLG(Attack):
    """Joint data + soft-label reconstruction with L-BFGS and squared gradient distance.

    Args:
        iterations: L-BFGS outer steps per restart (paper: 300).
        lr: L-BFGS learning rate (paper: 1).
        restarts: independent random starts; the lowest final loss wins (paper: 1; DLG
            fails on about a third of random starts, and failed L-BFGS runs stall
            early, so extra restarts are cheap).
        tol: a restart whose gradient distance falls to `tol` times the squared norm of
            the target has converged and ends the attack (paper: none).
        patience: abandon a restart whose best loss fell by less than 1% in this many
            steps (a stalled start); 0 disables (paper: none).
        max_seconds: wall-clock budget for the whole attack (None: unlimited).
        assumed_lr: for a FedAvg delta when the local configuration is unknown, the
            learning rate assumed to turn it into one gradient step.
    """

    name = "dlg"
    label_mode = LabelKnowledge.UNKNOWN

    def __init__(
        self,
        *,
        iterations: int = 300,
        lr: float = 1.0,
        restarts: int = 4,
        tol: float = 1e-8,
        patience: int = 30,
        max_seconds: float | None = None,
        assumed_lr: float = 1.0,
    ) -> None:
        super().__init__(restarts=restarts, max_seconds=max_seconds)
        self.iterations = check_positive_int("iterations", iterations)
        self.lr = check_positive_float("lr", lr)
        self.tol = check_positive_float("tol", tol, allow_zero=True)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise GradleakError(f"patience must be an integer >= 0, got {patience!r}")
        self.patience = patience
        self.assumed_lr = check_positive_float("assumed_lr", assumed_lr)

    def _iterations(self) -> int:
        return self.iterations

    def _labels(self, problem, knowledge):
        """(fixed hard labels or None, learnable soft-label logits or None)."""
        if knowledge.label_knowledge is LabelKnowledge.GIVEN:
            return knowledge.labels.detach().long().reshape(-1), None
        return None, True

    def _restart(self, model, update, knowledge, generator, deadline, on_step) -> RestartResult:
        problem = build_problem(model, update, knowledge, assumed_lr=self.assumed_lr)
        x = dummy_data(knowledge, generator)
        hard, learn = self._labels(problem, knowledge)
        variables = [x]
        if learn:
            y = torch.randn(knowledge.num_samples, knowledge.num_classes, generator=generator).requires_grad_(True)
            variables.append(y)

            def objective() -> torch.Tensor:
                return l2_distance(problem.predict(x, F.softmax(y, dim=-1)), problem.target)

        else:

            def objective() -> torch.Tensor:
                return l2_distance(problem.predict(x, hard), problem.target)

        scale = float(sum((t.double() ** 2).sum() for t in problem.target))
        result = run_lbfgs(objective, variables, steps=self.iterations, lr=self.lr, deadline=deadline,
                           on_step=on_step, tol=self.tol * scale,
                           plateau=Plateau(self.patience) if self.patience else None)
        labels = variables[1].detach().argmax(dim=-1) if learn else hard
        return RestartResult(x.detach(), labels, result.best_loss, result.iterations, result.status, result.history)
