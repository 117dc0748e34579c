"""One self-contained HTML page about a result store: tables, plots, and each cell kind's
own section (image cells: best and worst grids; text cells: sentences aligned).

Every image is embedded as a base64 data URI and the CSS is inline, so the page is a
single file that opens anywhere (mail it, archive it) and needs no JavaScript. Every
string from the store (axis values, defense specs, errors, sentences) is HTML-escaped.
The kinds of the sweeps shown (their stored spec's "kind", "image" for specs from before
kinds) choose the sections: `CellKind.report_section`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gradleak.errors import GradleakError
from gradleak.io import atomic_write_text
from gradleak.metrics.leak import PERCEPTUAL_THRESHOLD, PSNR_THRESHOLD_DB
from gradleak.sweep.axes import format_value
from gradleak.sweep.cell import CELL_KINDS
from gradleak.sweep.export import csv_text
from gradleak.sweep.html_parts import (
    KEY_CHARS,
    data_uri,
    e,
    num,
    page,
    setting_label,
    table,
)
from gradleak.sweep.store import ResultStore
from gradleak.sweep.summary import MetricStat, Summary, summarize


@dataclass(frozen=True)
class ReportFiles:
    """What `render_report` wrote."""

    page: Path
    csv: Path | None
    summary: Summary


def _overview(summary: Summary, store: Path, sweep: str | None) -> str:
    rows = [("store", f"<code>{e(store)}</code>"),
            ("sweep", e(sweep) if sweep else e(", ".join(summary.sweeps) or "(none)") + " (all in the store)"),
            ("cells", f"{summary.cells} stored: {summary.done} done, {summary.failed} failed"),
            ("settings", f"{len(summary.settings)} (combinations of "
                         f"{e(', '.join(a.name for a in summary.setting_axes) or 'no swept setting axis')})")]
    replicates = [a for a in summary.swept_axes if a.replicate]
    if replicates:
        rows.append(("replicates per setting", e(", ".join(f"{a.name} ({len(a.values)} values)"
                                                             for a in replicates))))
    if summary.perceptual:
        rows.append(("leak rates", f"BRR/WSRR: a sample leaks when PSNR ≥ {summary.psnr_threshold:g} dB and "
                                   f"{e(summary.perceptual)} ≤ {summary.perceptual_threshold:g} (SoK, Du et al., "
                                   f"App. C.ii)"))
    elif "psnr" in summary.metrics:  # image rows only: text cells have no leak rate
        rows.append(("leak rates", "BRR/WSRR not computed: no perceptual metric (lpips or stlpips) stored per "
                                   "image"))
    for package, versions in summary.versions:
        mixed = ' <span class="warn">(mixed versions)</span>' if len(versions) > 1 else ""
        rows.append((f"version of {e(package)}", e(", ".join(versions)) + mixed))
    return "<h2>Overview</h2>" + table(["", ""], rows)


def _fixed(summary: Summary) -> str:
    if not summary.fixed:
        return ""
    rows = [(e(k), f"<code>{e(format_value(v))}</code>") for k, v in summary.fixed]
    return ("<h2>Fixed settings</h2><p class='note'>Axes with one value and settings shared by every cell.</p>"
            + table(["setting", "value"], rows))


def _mean_std(m: MetricStat | None) -> str:
    if m is None or m.cells.n == 0:
        return "–"
    return f"{num(m.cells.mean)} ± {num(m.cells.std)}"


def _summary_table(summary: Summary) -> str:
    axes = [a.name for a in summary.setting_axes]
    leak = summary.perceptual is not None
    verdicts = "psnr" in summary.metrics  # image cells only: a verdict reads PSNR, text cells have none
    header = [e(a) for a in axes] + (["verdict"] if verdicts else []) + ["n done", "n failed"]
    header += [e(m) for m in summary.metrics] + (["BRR", "WSRR"] if leak else [])
    rows = []
    for s in summary.settings:
        cells = [e(format_value(v)) for _, v in s.values] + ([e(s.verdict or "–")] if verdicts else [])
        cells += [str(len(s.done)), str(len(s.failed))]
        cells += [_mean_std(s.metric(m)) for m in summary.metrics]
        if leak:
            cells += [num(s.leak.brr), num(s.leak.wsrr)] if s.leak else ["–", "–"]
        rows.append(cells)
    numeric = [False] * (len(axes) + verdicts) + [True] * (len(header) - len(axes) - verdicts)
    verdict = ("Verdict: the worst over the setting's cells of leaked (PSNR ≥ 18 dB, perceptual distance ≤ 0.1 "
               "where computed, and 3 dB above a flat image of the mean colour), partly leaked (3 dB above it) or "
               "not leaked. ")
    note = ("<p class='note'>" + (verdict if verdicts else "") + "Mean ± sample standard deviation over the "
            "setting's cells (each cell's value is its batch mean); n counts cells.")
    if leak:
        note += (f" BRR: mean fraction of a batch's images that leak; WSRR: fraction of cells in which at least "
                 f"one image leaks (PSNR ≥ {summary.psnr_threshold:g} dB and {e(summary.perceptual)} ≤ "
                 f"{summary.perceptual_threshold:g}).")
    note += "</p>"
    return "<h2>Summary per setting</h2>" + note + table(header, rows, numeric) + _details(summary)


def _details(summary: Summary) -> str:
    rows = []
    for s in summary.settings:
        for m in s.metrics:
            c, i = m.cells, m.images
            rows.append([e(setting_label(s)), e(m.metric), num(c.mean), num(c.std), str(c.n), num(c.min),
                         num(c.max)] + ([num(i.mean), num(i.std), str(i.n), num(i.min), num(i.max)]
                                         if i else ["–"] * 5))
    if not rows:
        return ""
    header = ["setting", "metric", "cells mean", "std", "n", "min", "max", "images mean", "std", "n", "min", "max"]
    return ("<details><summary>All statistics (over cells and over images)</summary>"
            + table(header, rows, [False, False] + [True] * 10) + "</details>")


def _plots(summary: Summary) -> str:
    from gradleak.sweep.plots import metric_plots

    if not summary.setting_axes:
        return "<h2>Plots</h2><p class='note'>No swept setting axis (other than seed/indices): nothing to plot.</p>"
    plots = metric_plots(summary)
    if not plots:
        return "<h2>Plots</h2><p class='note'>No finite metric value to plot.</p>"
    figures = "".join(f"<figure><img src=\"{data_uri(p.png)}\" alt=\"{e(p.metric)} vs {e(p.axis)}\">"
                      f"<figcaption>{e(p.caption)}</figcaption></figure>" for p in plots)
    return "<h2>Plots</h2>" + figures


def _failures(summary: Summary) -> str:
    if not summary.failures:
        return ""
    rows = [[f"<code>{e(f.key[:KEY_CHARS])}</code>", e(f.sweep),
             e(", ".join(f"{k}={format_value(v)}" for k, v in f.axes)), str(f.attempts), f"<pre>{e(f.error)}</pre>"]
            for f in summary.failures]
    return (f"<h2>Failed cells ({len(summary.failures)})</h2>"
            + table(["cell", "sweep", "axes", "attempts", "error"], rows, [False, False, False, True, False]))


def render_html(summary: Summary, *, store: Path, artifact_dir: Path, sweep: str | None = None,
                kinds: Sequence[str] = ("image",)) -> str:
    """The page's HTML text for `summary`; `kinds` (CELL_KINDS names) add their sections,
    which read the cells' artifacts from `artifact_dir`."""
    from gradleak.io import package_version

    title = f"gradleak sweep report: {sweep or store.name}"
    parts = [f"<h1>{e(title)}</h1>",
             f"<p class='note'>Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by gradleak {e(package_version())}.</p>"]
    if summary.cells == 0:
        parts.append("<p class='warn'>The store holds no cells" + (" for this sweep" if sweep else "") + ".</p>")
    elif summary.done == 0:
        parts.append(f"<p class='warn'>No cell finished: all {summary.failed} stored cells failed.</p>")
    parts.append(_overview(summary, store, sweep))
    parts.append(_fixed(summary))
    if summary.done:
        parts += [_summary_table(summary), _plots(summary)]
        parts += [CELL_KINDS.get(kind).report_section(summary, artifact_dir) for kind in dict.fromkeys(kinds)]
    parts.append(_failures(summary))
    return page(title, parts)


def _check_output(path: str | os.PathLike[str], name: str) -> Path:
    out = Path(path)
    if out.is_dir():
        raise GradleakError(f"{name} must be a file path, got the folder {str(out)!r}")
    if not out.parent.is_dir():
        raise GradleakError(f"{name} {str(out)!r}: folder {str(out.parent)!r} does not exist")
    return out


def render_report(store_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *,
                  sweep: str | None = None, csv_path: str | os.PathLike[str] | None = None,
                  psnr_threshold: float = PSNR_THRESHOLD_DB,
                  perceptual_threshold: float = PERCEPTUAL_THRESHOLD) -> ReportFiles:
    """Write the report page of a store (one sweep or all), and optionally its CSV.

    Every check runs and both files are built in memory before either is written, so
    bad input leaves no file behind; each file is then written atomically.
    """
    store_file = Path(store_path)
    out = _check_output(out_path, "out_path")
    csv_out = None if csv_path is None else _check_output(csv_path, "csv_path")
    targets = [out.resolve()] + ([csv_out.resolve()] if csv_out else [])
    if not store_file.is_file():
        raise GradleakError(f"store {str(store_file)!r} does not exist")
    if store_file.resolve() in targets:
        raise GradleakError(f"the report and CSV must not overwrite the store {str(store_file)!r}")
    if csv_out is not None and csv_out.resolve() == out.resolve():
        raise GradleakError(f"csv_path and out_path must differ, both are {str(out)!r}")
    with ResultStore(store_file, readonly=True) as store:
        specs = store.sweeps()
        rows = store.rows(sweep=sweep)
        known = sorted(set(specs) | {r.sweep for r in store.rows()}) if sweep is not None else []
        if sweep is not None and sweep not in known:
            raise GradleakError(f"sweep {sweep!r} is not in store {str(store_file)!r}; known sweeps: "
                                f"{', '.join(map(repr, known)) or 'none'}")
        artifact_dir = store.artifact_dir
    chosen = [spec for name, spec in specs.items() if sweep is None or name == sweep]
    summary = summarize(rows, specs=chosen, psnr_threshold=psnr_threshold, perceptual_threshold=perceptual_threshold)
    kinds = [str(spec.get("kind", "image")) for spec in chosen] or ["image"]  # specs before kinds: image
    text = render_html(summary, store=store_file, artifact_dir=artifact_dir, sweep=sweep, kinds=kinds)
    csv_body = None if csv_out is None else csv_text(rows)
    if csv_out is not None and csv_body is not None:
        atomic_write_text(csv_out, csv_body)
    atomic_write_text(out, text)
    return ReportFiles(out, csv_out, summary)


__all__ = ["ReportFiles", "render_html", "render_report"]
