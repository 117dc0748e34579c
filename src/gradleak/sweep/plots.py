"""Metric-versus-axis plots of a sweep summary, as PNG bytes.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through
pyplot, so the caller's (or another thread's) pyplot state and backend stay untouched.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Sequence

from gradleak.sweep.axes import SweptAxis, canonical, format_value
from gradleak.sweep.summary import Setting, Stat, Summary, stat

MAX_LINES = 6  # more combinations of the other axes than this are averaged into one line
LABEL_CHARS = 32


@dataclass(frozen=True)
class Plot:
    """One figure: `metric` against `axis`."""

    metric: str
    axis: str
    png: bytes
    caption: str


def _text(value: str, limit: int = LABEL_CHARS) -> str:
    # "$" would start mathtext, and a malformed expression fails at draw time
    value = value if len(value) <= limit else value[: limit - 1] + "…"
    return value.replace("$", r"\$")


def _values(settings: Sequence[Setting], metric: str) -> list[float]:
    """Per-image values where stored (spread over seeds and images), else cell means."""
    out: list[float] = []
    for setting in settings:
        for row in setting.done:
            if metric in row.per_sample:
                out += row.per_sample[metric]
            elif metric in row.metrics:
                out.append(row.metrics[metric])
    return out


def _series(summary: Summary, metric: str, axis: SweptAxis) -> tuple[list[tuple[str, list[Stat]]], str]:
    """(label, one Stat per axis value) per line, and how the other axes were treated."""
    others = [a for a in summary.setting_axes if a.name != axis.name]
    index = {a.name: i for i, a in enumerate(summary.setting_axes)}

    def other_key(s: Setting) -> tuple[str, ...]:
        return tuple(canonical(s.values[index[a.name]][1]) for a in others)

    combos: dict[tuple[str, ...], Setting] = {}
    for s in summary.settings:
        combos.setdefault(other_key(s), s)
    if others and len(combos) <= MAX_LINES:
        lines = [(", ".join(f"{a.name}={format_value(s.values[index[a.name]][1])}" for a in others),
                  [t for t in summary.settings if other_key(t) == k]) for k, s in combos.items()]
        how = f"one line per combination of {', '.join(a.name for a in others)}"
    else:
        lines = [("", list(summary.settings))]
        how = (f"averaged over {', '.join(a.name for a in others)} ({len(combos)} combinations, more than "
               f"{MAX_LINES} lines)") if others else ""
    series = []
    for label, members in lines:
        by_value = [[s for s in members if canonical(s.values[index[axis.name]][1]) == canonical(v)]
                    for v in axis.values]
        series.append((label, [stat(_values(group, metric)) for group in by_value]))
    return series, how


def metric_plot(summary: Summary, metric: str, axis: SweptAxis, *, dpi: int = 80) -> Plot:
    """`metric` against `axis`: mean and a band (numeric axis) or bars (categories) of +-1 std."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series, how = _series(summary, metric, axis)
    fig = Figure(figsize=(6.4, 3.8), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    positive = axis.numeric and all(v > 0 for v in axis.values)
    log = positive and max(axis.values) / min(axis.values) >= 100
    # a line without any finished cell (its settings all failed) would only clutter the legend
    series = [(label, stats) for label, stats in series if any(s.n for s in stats)]
    for i, (label, stats) in enumerate(series):
        means = [s.mean for s in stats]
        stds = [s.std for s in stats]
        if axis.numeric:
            xs: list[Any] = list(axis.values)
            (line,) = ax.plot(xs, means, "o-", label=_text(label) or None)
            ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            color=line.get_color(), alpha=0.2, linewidth=0)
        else:
            # side by side within a category, so the error bars do not overlap
            shift = (i - (len(series) - 1) / 2) * min(0.15, 0.6 / len(series))
            xs = [j + shift for j in range(len(axis.values))]
            ax.errorbar(xs, means, yerr=stds, fmt="o", capsize=3, label=_text(label) or None)
    if axis.numeric:
        if log:
            ax.set_xscale("log")
        ax.set_xticks(list(axis.values), [_text(format_value(v), 12) for v in axis.values])
    else:
        ticks = [_text(format_value(v), 24) for v in axis.values]
        ax.set_xticks(range(len(ticks)), ticks, rotation=20 if sum(map(len, ticks)) > 40 else 0,
                      ha="right" if sum(map(len, ticks)) > 40 else "center")
        ax.set_xlim(-0.5, len(ticks) - 0.5)
    ax.set_xlabel(_text(axis.name + (" (log scale)" if log else ""), 60))
    ax.set_ylabel(_text(metric))
    ax.set_title(_text(f"{metric} vs {axis.name}", 60))
    ax.grid(True, alpha=0.3)
    if any(label for label, _ in series):
        ax.legend(fontsize=7, loc="best")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    counts = [s.n for _, stats in series for s in stats if s.n]
    empty = [format_value(v) for j, v in enumerate(axis.values) if not any(stats[j].n for _, stats in series)]
    spread = "band" if axis.numeric else "error bars"
    caption = f"{metric} vs {axis.name}: mean, {spread} ±1 std over seeds and images"
    if counts:
        caption += f" ({min(counts)}–{max(counts)} values per point)" if min(counts) != max(counts) \
            else f" ({counts[0]} values per point)"
    caption += f"; {how}" if how else ""
    caption += f"; no finished cell at {axis.name} = {', '.join(empty)}" if empty else ""
    return Plot(metric, axis.name, buffer.getvalue(), caption)


def metric_plots(summary: Summary, *, dpi: int = 80) -> list[Plot]:
    """One plot per metric with a finite value and per swept setting axis (not seed or indices)."""
    plots = []
    for metric in summary.metrics:
        if not any(math.isfinite(v) for v in _values(summary.settings, metric)):
            continue
        for axis in summary.setting_axes:
            plots.append(metric_plot(summary, metric, axis, dpi=dpi))
    return plots


__all__ = ["MAX_LINES", "Plot", "metric_plot", "metric_plots"]
