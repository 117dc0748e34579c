"""Gradient-matching baselines of the Bayes paper (Balunovic et al., ICLR 2022).

Each keeps the Bayes attack's recipe (`PriorMatching`: Adam with exponential decay,
squared wrap-around TV and range prior, restarts) and replaces the defense's
conditional by a fixed distance, whatever the defense: `l2` (the Gaussian conditional,
as DLG), `l1` (the Laplacian conditional) and `cosine` (as inverting gradients).
Threat model: the server knows the model and sees the defended update, not the defense.
"""

from __future__ import annotations

from gradleak.attacks.bayes import PriorMatching


class L2Matching(PriorMatching):
    """Squared L2 distance of the updates plus the image prior."""

    name = "l2"

    def _distance(self, update, knowledge):
        return "l2"


class L1Matching(PriorMatching):
    """L1 distance of the updates plus the image prior."""

    name = "l1"

    def _distance(self, update, knowledge):
        return "l1"


class CosineMatching(PriorMatching):
    """1 - cosine similarity of the updates plus the image prior."""

    name = "cosine"

    def _distance(self, update, knowledge):
        return "cosine"
