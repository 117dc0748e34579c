"""The leak verdict: did a reconstruction recover the client's sample, from stated thresholds.

An attack that ends normally has not thereby leaked anything: a reconstruction at 8 dB
is noise. Per sample, with PSNR in dB, the best PSNR a flat image of the sample's mean
colour reaches (`baseline`: what knowing only the average colour gives) and, where one
was computed, a perceptual distance (LPIPS or its shift-tolerant twin):

- leaked: PSNR >= 18 dB, perceptual distance <= 0.1 (the SoK's BRR thresholds, Du et
  al.), and at least 3 dB above the flat baseline (on a low-contrast image the flat
  colour alone can pass 18 dB);
- partly: not leaked, but at least 3 dB above the flat baseline (layout, colour regions);
- not leaked: less than 3 dB above the flat baseline.

The batch's verdict is its worst case: leaked if any sample leaked, as the SoK's WSRR
counts the most vulnerable sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping, Sequence

PSNR_THRESHOLD_DB = 18.0
PERCEPTUAL_THRESHOLD = 0.1
GAIN_THRESHOLD_DB = 3.0
# perceptual metrics the verdict reads, preferred first (the SoK's thresholds are LPIPS values)
PERCEPTUAL_METRICS = ("lpips", "stlpips", "lpips-vgg", "stlpips-vgg")


class Verdict(str, Enum):
    LEAKED = "leaked"
    PARTLY = "partly leaked"
    NOT_LEAKED = "not leaked"


def judge(psnr: float, baseline: float, perceptual: float | None = None, *,
          psnr_threshold: float = PSNR_THRESHOLD_DB, perceptual_threshold: float = PERCEPTUAL_THRESHOLD,
          gain_threshold: float = GAIN_THRESHOLD_DB) -> Verdict:
    """The verdict on one sample (NaN values never leak)."""
    gain = psnr - baseline
    if not gain >= gain_threshold:
        return Verdict.NOT_LEAKED
    if psnr >= psnr_threshold and (perceptual is None or perceptual <= perceptual_threshold):
        return Verdict.LEAKED
    return Verdict.PARTLY


def worst(verdicts: Sequence[Verdict]) -> Verdict:
    """The batch's verdict: its most leaked sample's."""
    for v in (Verdict.LEAKED, Verdict.PARTLY):
        if v in verdicts:
            return v
    return Verdict.NOT_LEAKED


@dataclass(frozen=True)
class LeakVerdict:
    """Per-sample and overall verdicts with the numbers behind them."""

    per_sample: tuple[Verdict, ...]
    psnr: tuple[float, ...]
    baseline_psnr: tuple[float, ...]  # a flat image of each original's mean colour
    perceptual_metric: str | None  # the perceptual metric used, None when none was computed
    perceptual: tuple[float, ...] = ()
    psnr_threshold: float = PSNR_THRESHOLD_DB
    perceptual_threshold: float = PERCEPTUAL_THRESHOLD
    gain_threshold: float = GAIN_THRESHOLD_DB

    @classmethod
    def of(cls, values: Mapping[str, Sequence[float]], baseline_psnr: Sequence[float], **thresholds: float
           ) -> "LeakVerdict":
        """The verdicts of per-sample metric `values` (psnr needed) against their baselines."""
        psnr = tuple(values["psnr"])
        perceptual_metric = next((m for m in PERCEPTUAL_METRICS if m in values), None)
        perceptual = tuple(values[perceptual_metric]) if perceptual_metric else ()
        verdicts = tuple(judge(p, b, perceptual[i] if perceptual else None, **thresholds)
                         for i, (p, b) in enumerate(zip(psnr, baseline_psnr)))
        return cls(verdicts, psnr, tuple(baseline_psnr), perceptual_metric, perceptual, **thresholds)

    @property
    def overall(self) -> Verdict:
        return worst(self.per_sample)

    @property
    def gain_db(self) -> tuple[float, ...]:
        return tuple(p - b for p, b in zip(self.psnr, self.baseline_psnr))

    @property
    def leaked(self) -> int:
        return sum(v is Verdict.LEAKED for v in self.per_sample)

    @property
    def partly(self) -> int:
        return sum(v is Verdict.PARTLY for v in self.per_sample)

    def summary_line(self) -> str:
        """'leaked: 3 of 4 samples (PSNR 31.2 dB, 17.4 dB above the flat-colour baseline)'."""
        n = len(self.per_sample)
        count = {Verdict.LEAKED: self.leaked, Verdict.PARTLY: self.partly + self.leaked,
                 Verdict.NOT_LEAKED: n}[self.overall]
        psnr = sum(self.psnr) / n
        gain = sum(self.gain_db) / n
        return (f"{self.overall.value}: {count} of {n} sample{'s' if n != 1 else ''} (mean PSNR {psnr:.1f} dB, "
                f"{gain:+.1f} dB over the flat-colour baseline)")

    def to_json(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {"overall": self.overall.value, "per_sample": [v.value for v in self.per_sample],
                "leaked": self.leaked, "partly": self.partly, "samples": len(self.per_sample),
                "baseline_psnr": [num(v) for v in self.baseline_psnr], "gain_db": [num(v) for v in self.gain_db],
                "perceptual_metric": self.perceptual_metric,
                "thresholds": {"psnr_db": self.psnr_threshold, "perceptual": self.perceptual_threshold,
                               "gain_db": self.gain_threshold}}


__all__ = ["GAIN_THRESHOLD_DB", "LeakVerdict", "PERCEPTUAL_METRICS", "PERCEPTUAL_THRESHOLD", "PSNR_THRESHOLD_DB",
           "Verdict", "judge", "worst"]
