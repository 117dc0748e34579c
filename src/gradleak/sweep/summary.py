"""Aggregates of a sweep's stored rows: statistics per setting, leak rates, failures, CSV.

A *setting* is one combination of the swept axes other than the replicate axes
(`REPLICATE_AXES`: seed, indices); its cells differ only by image or random start, so
statistics and the SoK's BRR/WSRR are taken over them. Standard deviations are sample
standard deviations (ddof=1; 0 for a single value); NaN values are left out of every
statistic, and `n` counts the values used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from gradleak.checks import check_number
from gradleak.metrics.leak import (
    PERCEPTUAL_THRESHOLD,
    PSNR_THRESHOLD_DB,
    LeakRates,
    leak_rates,
)
from gradleak.records.verdict import LeakVerdict, worst
from gradleak.sweep.axes import (
    UNSET,
    SweptAxis,
    canonical,
    fixed_settings,
    swept_axes,
)
from gradleak.sweep.records import DONE, FAILED, CellRow

PERCEPTUAL_METRICS = ("lpips", "stlpips")  # preferred first: the SoK's thresholds are LPIPS values
METRIC_ORDER = ("psnr", "ssim", "mse", "lpips", "stlpips", "label_accuracy", "token_accuracy", "rouge1", "rouge2", "rougeL",
                "exact", "returned")


@dataclass(frozen=True)
class Stat:
    """Mean, sample std, count, min and max of the finite values given (NaN when none)."""

    mean: float
    std: float
    n: int
    min: float
    max: float


@dataclass(frozen=True)
class MetricStat:
    """One metric over one setting: over its cells' batch means, and over its images."""

    metric: str
    cells: Stat
    images: Stat | None  # None when no cell stored per-image values


@dataclass(frozen=True)
class Setting:
    """One setting's cells and their aggregates."""

    values: tuple[tuple[str, Any], ...]  # (axis, value) per setting axis, in axis order
    done: tuple[CellRow, ...]
    failed: tuple[CellRow, ...]
    metrics: tuple[MetricStat, ...]
    leak: LeakRates | None  # None without per-image PSNR and perceptual values
    best: CellRow | None  # highest batch-mean PSNR
    worst: CellRow | None  # lowest
    verdict: str | None = None  # the worst verdict over its cells (None for cells stored without a baseline)

    def metric(self, name: str) -> MetricStat | None:
        return next((m for m in self.metrics if m.metric == name), None)


@dataclass(frozen=True)
class FailedCell:
    key: str
    sweep: str
    axes: tuple[tuple[str, Any], ...]
    error: str
    attempts: int


@dataclass(frozen=True)
class Summary:
    """Everything a report shows about a set of rows."""

    sweeps: tuple[str, ...]
    cells: int
    done: int
    failed: int
    axes: tuple[SweptAxis, ...]  # every axis of the rows, in sweep order
    fixed: tuple[tuple[str, Any], ...]  # axes with one value and settings shared by every row
    metrics: tuple[str, ...]  # metrics of the done rows
    settings: tuple[Setting, ...]
    failures: tuple[FailedCell, ...]
    perceptual: str | None  # the perceptual metric BRR/WSRR used, None when none was stored
    psnr_threshold: float
    perceptual_threshold: float
    versions: tuple[tuple[str, tuple[str, ...]], ...]  # package -> the distinct versions seen

    @property
    def swept_axes(self) -> tuple[SweptAxis, ...]:
        return tuple(a for a in self.axes if a.swept)

    @property
    def setting_axes(self) -> tuple[SweptAxis, ...]:
        """Swept axes that are settings (not replicates): the ones compared and plotted."""
        return tuple(a for a in self.axes if a.swept and not a.replicate)


def stat(values: Iterable[float]) -> Stat:
    """Statistics of the finite values (NaN and inf left out)."""
    arr = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        nan = float("nan")
        return Stat(nan, nan, 0, nan, nan)
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else 0.0
    return Stat(float(arr.mean()), std, int(arr.size), float(arr.min()), float(arr.max()))


def metric_names(rows: Sequence[CellRow]) -> tuple[str, ...]:
    names = {m for r in rows for m in r.metrics}
    return tuple([m for m in METRIC_ORDER if m in names] + sorted(names - set(METRIC_ORDER)))


def _metric_stat(rows: Sequence[CellRow], metric: str) -> MetricStat:
    cells = stat(r.metrics.get(metric, float("nan")) for r in rows)
    per_image = [v for r in rows for v in r.per_sample.get(metric, ())]
    has_images = any(metric in r.per_sample for r in rows)
    return MetricStat(metric, cells, stat(per_image) if has_images else None)


def _leak(rows: Sequence[CellRow], perceptual: str | None, psnr_threshold: float,
          perceptual_threshold: float) -> LeakRates | None:
    if perceptual is None:
        return None
    cells = [(r.per_sample["psnr"], r.per_sample[perceptual]) for r in rows
             if len(r.per_sample.get("psnr", ())) and len(r.per_sample.get("psnr", ())) ==
             len(r.per_sample.get(perceptual, ()))]
    if not cells:
        return None
    return leak_rates(cells, psnr_threshold=psnr_threshold, perceptual_threshold=perceptual_threshold)


def _extremes(rows: Sequence[CellRow]) -> tuple[CellRow | None, CellRow | None]:
    scored = [r for r in rows if math.isfinite(r.metrics.get("psnr", float("nan")))]
    if not scored:
        return None, None
    return max(scored, key=lambda r: r.metrics["psnr"]), min(scored, key=lambda r: r.metrics["psnr"])




def _verdict(rows: Sequence[CellRow]) -> str | None:
    """The worst of the cells' verdicts (`gradleak.records.verdict`), from their per-image values."""
    verdicts = [LeakVerdict.of(r.per_sample, r.per_sample["baseline_psnr"]).overall for r in rows
                if "psnr" in r.per_sample and "baseline_psnr" in r.per_sample]
    return worst(verdicts).value if verdicts else None


def summarize(rows: Sequence[CellRow], *, specs: Iterable[Mapping[str, Any]] = (),
              psnr_threshold: float = PSNR_THRESHOLD_DB,
              perceptual_threshold: float = PERCEPTUAL_THRESHOLD) -> Summary:
    """Group `rows` by setting and aggregate them.

    `specs` are the stored sweep specifications (`ResultStore.sweeps()` values); they
    only give the axes' order. BRR/WSRR use per-image PSNR and the first perceptual
    metric of `PERCEPTUAL_METRICS` stored per image.
    """
    psnr_threshold = check_number("psnr_threshold", psnr_threshold)
    perceptual_threshold = check_number("perceptual_threshold", perceptual_threshold, low=0)
    rows = list(rows)
    done = [r for r in rows if r.status == DONE]
    failed = [r for r in rows if r.status == FAILED]
    axes = swept_axes(rows, specs)
    setting_axes = [a for a in axes if a.swept and not a.replicate]
    metrics = metric_names(done)
    perceptual = next((m for m in PERCEPTUAL_METRICS if any(m in r.per_sample for r in done)), None)

    groups: dict[tuple[str, ...], list[CellRow]] = {}
    for row in rows:
        groups.setdefault(tuple(canonical(row.axes.get(a.name, UNSET)) for a in setting_axes), []).append(row)
    rank = [{canonical(v): i for i, v in enumerate(a.values)} for a in setting_axes]
    settings = []
    for key in sorted(groups, key=lambda k: [r[c] for r, c in zip(rank, k)]):
        members = groups[key]
        ok = tuple(r for r in members if r.status == DONE)
        best, worst = _extremes(ok)
        first = members[0].axes
        settings.append(Setting(
            values=tuple((a.name, first.get(a.name, UNSET)) for a in setting_axes), done=ok,
            failed=tuple(r for r in members if r.status == FAILED),
            metrics=tuple(_metric_stat(ok, m) for m in metrics),
            leak=_leak(ok, perceptual, psnr_threshold, perceptual_threshold), best=best, worst=worst,
            verdict=_verdict(ok)))

    versions: dict[str, list[str]] = {}
    for row in rows:
        for package, version in row.versions.items():
            if str(version) not in versions.setdefault(package, []):
                versions[package].append(str(version))
    failures = tuple(FailedCell(r.key, r.sweep, tuple((a.name, r.axes[a.name]) for a in axes if a.name in r.axes),
                                r.error or "(no error text stored)", r.attempts) for r in failed)
    return Summary(
        sweeps=tuple(dict.fromkeys(r.sweep for r in rows)), cells=len(rows), done=len(done), failed=len(failed),
        axes=axes, fixed=fixed_settings(rows, axes), metrics=metrics, settings=tuple(settings), failures=failures,
        perceptual=perceptual, psnr_threshold=psnr_threshold, perceptual_threshold=perceptual_threshold,
        versions=tuple((k, tuple(v)) for k, v in sorted(versions.items())))


__all__ = ["PERCEPTUAL_METRICS", "FailedCell", "MetricStat", "Setting", "Stat", "Summary", "metric_names", "stat",
           "summarize"]
