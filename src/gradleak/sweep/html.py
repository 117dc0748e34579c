"""One self-contained HTML page about a result store: tables, plots, best and worst images.

Every image is embedded as a base64 data URI and the CSS is inline, so the page is a
single file that opens anywhere (mail it, archive it) and needs no JavaScript. Every
string from the store (axis values, defense specs, errors) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from gradleak.errors import GradleakError
from gradleak.io import atomic_write_text
from gradleak.metrics.leak import PERCEPTUAL_THRESHOLD, PSNR_THRESHOLD_DB
from gradleak.sweep.axes import format_value
from gradleak.sweep.export import csv_text
from gradleak.sweep.records import CellRow
from gradleak.sweep.store import ResultStore
from gradleak.sweep.summary import MetricStat, Setting, Summary, summarize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KEY_CHARS = 12  # cell keys are SHA-256 hex; a prefix identifies them in tables
DISPLAY_WIDTH = 360  # grids narrower than this are shown enlarged

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.note{color:#555;font-size:.9em}.warn{color:#a00}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figcaption{font-size:.85em;color:#444;max-width:520px}
.strip{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start;margin-bottom:1em}
.strip figure img{max-width:100%;image-rendering:pixelated}
pre{white-space:pre-wrap;margin:0;font-size:.85em;max-height:12em;overflow:auto}
code{font-size:.9em}
"""


@dataclass(frozen=True)
class ReportFiles:
    """What `render_report` wrote."""

    page: Path
    csv: Path | None
    summary: Summary


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] = ()) -> str:
    """A table of already-escaped cells."""
    head = "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>" if any(header) else ""
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i < len(numeric) and numeric[i]
                                    else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _setting_label(setting: Setting) -> str:
    return ", ".join(f"{name}={format_value(v)}" for name, v in setting.values) or "all cells"


def _overview(summary: Summary, store: Path, sweep: str | None) -> str:
    rows = [("store", f"<code>{_e(store)}</code>"),
            ("sweep", _e(sweep) if sweep else _e(", ".join(summary.sweeps) or "(none)") + " (all in the store)"),
            ("cells", f"{summary.cells} stored: {summary.done} done, {summary.failed} failed"),
            ("settings", f"{len(summary.settings)} (combinations of "
                         f"{_e(', '.join(a.name for a in summary.setting_axes) or 'no swept setting axis')})")]
    replicates = [a for a in summary.swept_axes if a.replicate]
    if replicates:
        rows.append(("replicates per setting", _e(", ".join(f"{a.name} ({len(a.values)} values)"
                                                             for a in replicates))))
    if summary.perceptual:
        rows.append(("leak rates", f"BRR/WSRR: a sample leaks when PSNR ≥ {summary.psnr_threshold:g} dB and "
                                   f"{_e(summary.perceptual)} ≤ {summary.perceptual_threshold:g} (SoK, Du et al., "
                                   f"App. C.ii)"))
    else:
        rows.append(("leak rates", "BRR/WSRR not computed: no perceptual metric (lpips or stlpips) stored per "
                                   "image"))
    for package, versions in summary.versions:
        mixed = ' <span class="warn">(mixed versions)</span>' if len(versions) > 1 else ""
        rows.append((f"version of {_e(package)}", _e(", ".join(versions)) + mixed))
    return "<h2>Overview</h2>" + _table(["", ""], rows)


def _fixed(summary: Summary) -> str:
    if not summary.fixed:
        return ""
    rows = [(_e(k), f"<code>{_e(format_value(v))}</code>") for k, v in summary.fixed]
    return ("<h2>Fixed settings</h2><p class='note'>Axes with one value and settings shared by every cell.</p>"
            + _table(["setting", "value"], rows))


def _mean_std(m: MetricStat | None) -> str:
    if m is None or m.cells.n == 0:
        return "–"
    return f"{_num(m.cells.mean)} ± {_num(m.cells.std)}"


def _summary_table(summary: Summary) -> str:
    axes = [a.name for a in summary.setting_axes]
    leak = summary.perceptual is not None
    header = [_e(a) for a in axes] + ["verdict", "n done", "n failed"] + [_e(m) for m in summary.metrics]
    header += ["BRR", "WSRR"] if leak else []
    rows = []
    for s in summary.settings:
        cells = [_e(format_value(v)) for _, v in s.values] + [_e(s.verdict or "–"), str(len(s.done)),
                                                               str(len(s.failed))]
        cells += [_mean_std(s.metric(m)) for m in summary.metrics]
        if leak:
            cells += [_num(s.leak.brr), _num(s.leak.wsrr)] if s.leak else ["–", "–"]
        rows.append(cells)
    numeric = [False] * (len(axes) + 1) + [True] * (len(header) - len(axes) - 1)
    note = ("<p class='note'>Verdict: the worst over the setting's cells of leaked (PSNR ≥ 18 dB, perceptual "
            "distance ≤ 0.1 where computed, and 3 dB above a flat image of the mean colour), partly leaked (3 dB "
            "above it) or not leaked. Mean ± sample standard deviation over the setting's cells (each cell's value "
            "is its batch mean); n counts cells.")
    if leak:
        note += (f" BRR: mean fraction of a batch's images that leak; WSRR: fraction of cells in which at least "
                 f"one image leaks (PSNR ≥ {summary.psnr_threshold:g} dB and {_e(summary.perceptual)} ≤ "
                 f"{summary.perceptual_threshold:g}).")
    note += "</p>"
    return "<h2>Summary per setting</h2>" + note + _table(header, rows, numeric) + _details(summary)


def _details(summary: Summary) -> str:
    rows = []
    for s in summary.settings:
        for m in s.metrics:
            c, i = m.cells, m.images
            rows.append([_e(_setting_label(s)), _e(m.metric), _num(c.mean), _num(c.std), str(c.n), _num(c.min),
                         _num(c.max)] + ([_num(i.mean), _num(i.std), str(i.n), _num(i.min), _num(i.max)]
                                         if i else ["–"] * 5))
    if not rows:
        return ""
    header = ["setting", "metric", "cells mean", "std", "n", "min", "max", "images mean", "std", "n", "min", "max"]
    return ("<details><summary>All statistics (over cells and over images)</summary>"
            + _table(header, rows, [False, False] + [True] * 10) + "</details>")


def _plots(summary: Summary) -> str:
    from gradleak.sweep.plots import metric_plots

    if not summary.setting_axes:
        return "<h2>Plots</h2><p class='note'>No swept setting axis (other than seed/indices): nothing to plot.</p>"
    plots = metric_plots(summary)
    if not plots:
        return "<h2>Plots</h2><p class='note'>No finite metric value to plot.</p>"
    figures = "".join(f"<figure><img src=\"{_data_uri(p.png)}\" alt=\"{_e(p.metric)} vs {_e(p.axis)}\">"
                      f"<figcaption>{_e(p.caption)}</figcaption></figure>" for p in plots)
    return "<h2>Plots</h2>" + figures


def _artifact(row: CellRow, artifact_dir: Path) -> tuple[bytes | None, str]:
    """The row's grid PNG, or None and why it cannot be shown."""
    rel = row.artifacts.get("grid")
    if rel is None:
        return None, "no grid image stored for this cell"
    path = (artifact_dir / rel).resolve()
    # a store names files inside its artifact folder; anything else is not embedded
    if not path.is_relative_to(artifact_dir.resolve()):
        return None, f"grid path {rel!r} points outside the artifact folder"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"grid image {str(artifact_dir / rel)!r} is missing ({exc.strerror or exc})"
    if not data.startswith(PNG_MAGIC):
        return None, f"grid image {str(artifact_dir / rel)!r} is not a PNG file"
    return data, ""


def _size(png: bytes) -> str:
    """Width/height attributes that enlarge small grids by a whole factor (crisp pixels)."""
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the IHDR chunk
    if not (width and height):
        return ""
    factor = max(1, min(4, DISPLAY_WIDTH // max(width, 1)))
    return f' width="{width * factor}" height="{height * factor}"' if factor > 1 else ""


def _cell_caption(kind: str, row: CellRow, summary: Summary) -> str:
    names = [a.name for a in summary.axes if a.name in row.axes]
    axes = ", ".join(f"{k}={format_value(row.axes[k])}" for k in names)
    caption = f"{kind}: PSNR {_num(row.metrics.get('psnr', float('nan')))} dB"
    if summary.perceptual:
        caption += f", {summary.perceptual} {_num(row.metrics.get(summary.perceptual, float('nan')))}"
    return f"{caption} — {axes} (cell {row.key[:KEY_CHARS]})"


def _strips(summary: Summary, artifact_dir: Path) -> str:
    parts = []
    for s in summary.settings:
        if s.best is None or s.worst is None:
            continue
        shown = [("best", s.best)] + ([("worst", s.worst)] if s.worst.key != s.best.key else [])
        figures = []
        for kind, row in shown:
            caption = _e(_cell_caption(kind if len(shown) > 1 else "only cell", row, summary))
            data, problem = _artifact(row, artifact_dir)
            if data is None:
                figures.append(f"<figure><p class='warn'>{_e(problem)}</p><figcaption>{caption}</figcaption>"
                               f"</figure>")
            else:
                figures.append(f"<figure><img src=\"{_data_uri(data)}\"{_size(data)} "
                               f"alt=\"{_e(kind)} reconstruction\"><figcaption>{caption}</figcaption></figure>")
        parts.append(f"<h3>{_e(_setting_label(s))}</h3><div class='strip'>{''.join(figures)}</div>")
    if not parts:
        return ""
    return ("<h2>Best and worst reconstructions</h2><p class='note'>Per setting, the cells with the highest and "
            "lowest batch-mean PSNR: originals over reconstructions.</p>" + "".join(parts))


def _failures(summary: Summary) -> str:
    if not summary.failures:
        return ""
    rows = [[f"<code>{_e(f.key[:KEY_CHARS])}</code>", _e(f.sweep),
             _e(", ".join(f"{k}={format_value(v)}" for k, v in f.axes)), str(f.attempts), f"<pre>{_e(f.error)}</pre>"]
            for f in summary.failures]
    return (f"<h2>Failed cells ({len(summary.failures)})</h2>"
            + _table(["cell", "sweep", "axes", "attempts", "error"], rows, [False, False, False, True, False]))


def render_html(summary: Summary, *, store: Path, artifact_dir: Path, sweep: str | None = None) -> str:
    """The page's HTML text for `summary` (images read from `artifact_dir`)."""
    from gradleak.io import package_version

    title = f"gradleak sweep report: {sweep or store.name}"
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p class='note'>Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by gradleak {_e(package_version())}.</p>"]
    if summary.cells == 0:
        parts.append("<p class='warn'>The store holds no cells" + (" for this sweep" if sweep else "") + ".</p>")
    elif summary.done == 0:
        parts.append(f"<p class='warn'>No cell finished: all {summary.failed} stored cells failed.</p>")
    parts.append(_overview(summary, store, sweep))
    parts.append(_fixed(summary))
    if summary.done:
        parts += [_summary_table(summary), _plots(summary), _strips(summary, artifact_dir)]
    parts.append(_failures(summary))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(p for p in parts if p) + "\n</body></html>\n")


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
    page = render_html(summary, store=store_file, artifact_dir=artifact_dir, sweep=sweep)
    table = None if csv_out is None else csv_text(rows)
    if csv_out is not None and table is not None:
        atomic_write_text(csv_out, table)
    atomic_write_text(out, page)
    return ReportFiles(out, csv_out, summary)


__all__ = ["ReportFiles", "render_html", "render_report"]
