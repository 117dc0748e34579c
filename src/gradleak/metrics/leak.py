"""Sample-level leak indicators of the SoK (Du et al., Appendix C.ii): BRR and WSRR.

A reconstructed sample leaks when PSNR >= `psnr_threshold` (18 dB) and its perceptual
distance <= `perceptual_threshold` (LPIPS 0.1). Over cells that differ only by image
(batch) or restart seed:

- BRR, the batch reconstruction rate: the fraction of a batch's samples that leak,
  averaged over the cells;
- WSRR, the worst-sample reconstruction rate: the fraction of cells (attack
  initializations of a batch) in which the batch's most vulnerable sample leaks, i.e.
  at least one sample leaks.

The SoK averages WSRR over 10 initializations per batch and both over 10 seeds; here the
caller passes every such cell and both rates are plain means over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from gradleak.checks import check_number
from gradleak.errors import GradleakError
from gradleak.records.verdict import PERCEPTUAL_THRESHOLD, PSNR_THRESHOLD_DB


@dataclass(frozen=True)
class LeakRates:
    """BRR and WSRR over `cells` cells holding `samples` samples in all."""

    brr: float
    wsrr: float
    cells: int
    samples: int
    psnr_threshold: float
    perceptual_threshold: float


def leaks(psnr: Sequence[float], perceptual: Sequence[float], *, psnr_threshold: float = PSNR_THRESHOLD_DB,
          perceptual_threshold: float = PERCEPTUAL_THRESHOLD) -> list[bool]:
    """The leak indicator per sample: PSNR >= threshold and perceptual distance <= threshold."""
    if len(psnr) != len(perceptual):
        raise GradleakError(f"psnr and perceptual must hold one value per sample, got {len(psnr)} and "
                            f"{len(perceptual)}")
    check_number("psnr_threshold", psnr_threshold)
    check_number("perceptual_threshold", perceptual_threshold, low=0)
    # NaN compares False: an unscored sample never counts as a leak
    return [bool(p >= psnr_threshold and q <= perceptual_threshold) for p, q in zip(psnr, perceptual)]


def leak_rates(cells: Sequence[tuple[Sequence[float], Sequence[float]]], *,
               psnr_threshold: float = PSNR_THRESHOLD_DB,
               perceptual_threshold: float = PERCEPTUAL_THRESHOLD) -> LeakRates:
    """BRR and WSRR over cells given as (per-sample PSNR, per-sample perceptual distance)."""
    if not cells:
        raise GradleakError("leak_rates needs at least one cell, got none")
    fractions, worst, samples = [], [], 0
    for i, (psnr, perceptual) in enumerate(cells):
        if not len(psnr):
            raise GradleakError(f"cell {i} holds no samples")
        flags = leaks(psnr, perceptual, psnr_threshold=psnr_threshold, perceptual_threshold=perceptual_threshold)
        fractions.append(sum(flags) / len(flags))
        worst.append(float(any(flags)))
        samples += len(flags)
    return LeakRates(brr=sum(fractions) / len(fractions), wsrr=sum(worst) / len(worst), cells=len(cells),
                     samples=samples, psnr_threshold=float(psnr_threshold),
                     perceptual_threshold=float(perceptual_threshold))


__all__ = ["LeakRates", "PERCEPTUAL_THRESHOLD", "PSNR_THRESHOLD_DB", "leak_rates", "leaks"]
