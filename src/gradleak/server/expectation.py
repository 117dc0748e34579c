"""How many samples a binning read-out recovers, before any attack (Fowl et al., ICLR 2022).

A sample is recovered when it falls alone in its bin. With `n` samples drawn
independently and bin probabilities p_1..p_k, sample b is alone in bin i with probability
p_i (1 - p_i)^(n-1), so the expected count is n * sum_i p_i (1 - p_i)^(n-1) (n (1 - 1/k)^(n-1)
for k equally likely bins), and all n are recovered when they fall in distinct bins:
n! e_n(p), e_n the elementary symmetric polynomial (prod_{j<n} (1 - j/k) for equal bins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from gradleak.checks import check_positive_int
from gradleak.errors import GradleakError


@dataclass(frozen=True)
class Expectation:
    """The expected recovery of one batch: count, fraction of the batch, P(all recovered)."""

    num_samples: int
    bins: int
    expected: float
    p_all: float

    @property
    def fraction(self) -> float:
        return self.expected / self.num_samples


def expected_recovery(num_samples: int, bins: int | None = None, *,
                      probabilities: Sequence[float] | None = None) -> Expectation:
    """The expectation for `num_samples` samples in `bins` equally likely bins, or in bins of
    the given `probabilities` (their sum may be below 1: mass that reaches no bin is lost)."""
    n = check_positive_int("num_samples", num_samples)
    if (bins is None) == (probabilities is None):
        raise GradleakError("give either bins (equally likely bins) or probabilities, not both or neither")
    if probabilities is None:
        k = check_positive_int("bins", bins)
        p = [1.0 / k] * k
    else:
        p = [float(v) for v in probabilities]
        if not p or any(not 0.0 <= v <= 1.0 for v in p) or sum(p) > 1.0 + 1e-6:
            raise GradleakError(f"probabilities must be values in [0, 1] summing to at most 1, got {len(p)} "
                                f"values summing to {sum(p) if p else 0.0}")
    expected = n * sum(v * (1.0 - v) ** (n - 1) for v in p)
    # f[j] = j! e_j(p), updated one bin at a time; every f[j] stays in [0, 1]
    f = [1.0] + [0.0] * n
    for v in p:
        for j in range(n, 0, -1):
            f[j] += j * v * f[j - 1]
    return Expectation(num_samples=n, bins=len(p), expected=expected, p_all=min(1.0, f[n]))


__all__ = ["Expectation", "expected_recovery"]
