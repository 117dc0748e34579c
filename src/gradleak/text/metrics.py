"""How much text leaked: reconstructions matched to originals, then token accuracy,
ROUGE-1/2/L (the `rouge-score` package, F-measure on the decoded texts) and the
exact-sequence rate.

Matching: the Hungarian assignment (scipy) of reconstructions to originals maximizing the
summed ROUGE-L F-measure (ties and missing reconstructions: an original left unmatched
scores 0 on every metric). Token accuracy of a pair: the fraction of the original's
positions holding the same token id in the reconstruction (`token_matches`), the same
position-by-position alignment the CLI and the HTML reports mark (`aligned_pairs`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from gradleak.errors import GradleakError

METRIC_NAMES = ("token_accuracy", "rouge1", "rouge2", "rougeL", "exact")


@dataclass(frozen=True)
class TextMetrics:
    """Per original (in the batch's order): each metric's value; `assignment[i]` is the
    reconstruction matched to original i (-1: none)."""

    values: Mapping[str, tuple[float, ...]]
    assignment: tuple[int, ...]

    def mean(self, name: str) -> float:
        if name not in self.values:
            raise GradleakError(f"metric must be one of {sorted(self.values)}, got {name!r}")
        v = self.values[name]
        return float(sum(v) / len(v)) if v else 0.0

    def summary(self) -> dict[str, float]:
        return {name: self.mean(name) for name in self.values}


@dataclass(frozen=True)
class AlignedPair:
    """An original and its matched reconstruction, token by token, for displays: each
    token's text, and per token whether the other sequence holds the same id at that
    position. `reconstruction` is empty when no reconstruction was matched to it."""

    original: tuple[str, ...]
    reconstruction: tuple[str, ...]
    original_hits: tuple[bool, ...]
    reconstruction_hits: tuple[bool, ...]

    def __post_init__(self) -> None:
        for name in ("original", "reconstruction", "original_hits", "reconstruction_hits"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.original) != len(self.original_hits) or len(self.reconstruction) != len(self.reconstruction_hits):
            raise GradleakError("AlignedPair needs one hit flag per token on each side")


def token_matches(sequence: Sequence[int], other: Sequence[int]) -> tuple[bool, ...]:
    """Per position of `sequence`: whether `other` holds the same token id there."""
    return tuple(i < len(other) and other[i] == t for i, t in enumerate(sequence))


def token_accuracy(original: Sequence[int], recovered: Sequence[int]) -> float:
    if not original:
        raise GradleakError("original must hold at least one token, got an empty sequence")
    return sum(token_matches(original, recovered)) / len(original)


def aligned_pairs(originals: Sequence[Sequence[int]], reconstructions: Sequence[Sequence[int]],
                  assignment: Sequence[int],
                  tokens: Callable[[Sequence[int]], Sequence[str]]) -> tuple[AlignedPair, ...]:
    """One `AlignedPair` per original, with the reconstruction `assignment` matched to it
    (-1: none); `tokens` turns ids into each token's text."""
    if len(assignment) != len(originals):
        raise GradleakError(f"assignment must hold one entry per original ({len(originals)}), got {len(assignment)}")
    out = []
    for original, j in zip(originals, assignment):
        got = list(reconstructions[j]) if j >= 0 else []
        out.append(AlignedPair(tuple(tokens(list(original))), tuple(tokens(got)), token_matches(original, got),
                               token_matches(got, original)))
    return tuple(out)


def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)


def text_metrics(originals: Sequence[Sequence[int]], reconstructions: Sequence[Sequence[int]],
                 decode: Callable[[Sequence[int]], str]) -> TextMetrics:
    """Match `reconstructions` to `originals` (token-id sequences) and score each pair;
    `decode` turns ids into the text ROUGE reads."""
    if not originals:
        raise GradleakError("originals must hold at least one sequence, got none")
    scorer = _scorer()
    orig_text = [decode(s) for s in originals]
    rec_text = [decode(s) for s in reconstructions]
    n, m = len(originals), len(reconstructions)
    scores = [[scorer.score(o, r) for r in rec_text] for o in orig_text]
    assignment = [-1] * n
    if m:
        cost = np.array([[-s["rougeL"].fmeasure for s in row] for row in scores])
        rows, cols = linear_sum_assignment(cost)
        for i, j in zip(rows, cols):
            assignment[i] = int(j)
    values: dict[str, list[float]] = {k: [] for k in METRIC_NAMES}
    for i, j in enumerate(assignment):
        if j < 0:
            for k in METRIC_NAMES:
                values[k].append(0.0)
            continue
        s = scores[i][j]
        values["token_accuracy"].append(token_accuracy(originals[i], reconstructions[j]))
        for k in ("rouge1", "rouge2", "rougeL"):
            values[k].append(float(s[k].fmeasure))
        values["exact"].append(float(tuple(originals[i]) == tuple(reconstructions[j])))
    return TextMetrics({k: tuple(v) for k, v in values.items()}, tuple(assignment))


__all__ = ["METRIC_NAMES", "AlignedPair", "TextMetrics", "aligned_pairs", "text_metrics", "token_accuracy",
           "token_matches"]
