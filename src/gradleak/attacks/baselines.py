"""Gradient-matching baselines of the Bayes paper (Balunovic et al., ICLR 2022).

Each keeps the Bayes attack's recipe (`PriorMatching`: L-BFGS or Adam, squared
wrap-around TV and range prior, restarts) and replaces the defense's
conditional by a fixed distance, whatever the defense: `l2` (the Gaussian conditional,
as DLG), `l1` (the Laplacian conditional) and `cosine` (as inverting gradients).
Each has its own default prior weight (`default_tv`), tuned by one procedure for all four
(experiments/honest/bayes_floor.py). Threat model: the server knows the model and sees the
defended update, not the defense.
"""

from __future__ import annotations

from gradleak.attacks.bayes import L1_TV, L2_TV, PriorMatching


class L2Matching(PriorMatching):
    """Squared L2 distance of the updates plus the image prior."""

    name = "l2"
    default_tv = L2_TV

    def _distance(self, update, knowledge):
        return "l2"


class L1Matching(PriorMatching):
    """L1 distance of the updates plus the image prior."""

    name = "l1"
    default_tv = L1_TV  # the tuning grid's end after two extensions

    def _distance(self, update, knowledge):
        return "l1"


class CosineMatching(PriorMatching):
    """1 - cosine similarity of the updates plus the image prior."""

    name = "cosine"
    default_tv = 1e-3  # experiments/honest/bayes_tune.jsonl

    def _distance(self, update, knowledge):
        return "cosine"
