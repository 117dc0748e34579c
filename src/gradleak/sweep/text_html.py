"""Text on a report page: originals and their matched reconstructions, token by token.

Each original sits beside the reconstruction the Hungarian matching gave it
(`gradleak.text.metrics.aligned_pairs`); in the reconstruction, a token equal to the
original's token at the same position is `<mark class="hit">`, any other is
`<span class="miss">`, the same alignment `gradleak text-attack` prints with [brackets].
Sentences come from users' files and from attacks that may emit any token, so every one
is HTML-escaped. `text_section` is the text cells' section of a sweep report (one block
per stored cell, from its "text.json" artifact); `text_run_page` is the standalone page
of one `gradleak text-attack` run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from gradleak.errors import GradleakError
from gradleak.sweep.axes import format_value
from gradleak.sweep.html_parts import KEY_CHARS, e, num, page, setting_label, table
from gradleak.sweep.records import TEXT_ARTIFACT, CellRow, TextCellText
from gradleak.sweep.summary import METRIC_ORDER, Summary
from gradleak.text.metrics import AlignedPair

MAX_SENTENCES = 64  # per cell: a batch of hundreds would bury the page; the rest are counted, not shown
PER_SENTENCE = ("token_accuracy", "rouge1", "exact")  # the per-sentence columns beside each pair

NOTE = ("<p class='note'>Each original beside the reconstruction matched to it (Hungarian matching on ROUGE-L). "
        "In the reconstruction, <mark class='hit'>marked</mark> tokens equal the original's token at the same "
        "position; <span class='miss'>underlined</span> ones do not. Special tokens are shown by name.</p>")


def marked_tokens(tokens: Sequence[str], hits: Sequence[bool]) -> str:
    """`tokens` as HTML: each escaped, hits in `<mark class="hit">`, the rest in `<span class="miss">`."""
    return "".join(f'<mark class="hit">{e(t)}</mark>' if hit else f'<span class="miss">{e(t)}</span>'
                   for t, hit in zip(tokens, hits))


def aligned_table(originals: Sequence[str], pairs: Sequence[AlignedPair],
                  per_sentence: Mapping[str, Sequence[float]] = {}) -> str:
    """One row per original: its text, its matched reconstruction marked token by token,
    and the per-sentence values of `PER_SENTENCE` found in `per_sentence`."""
    if len(pairs) != len(originals):
        raise GradleakError(f"pairs must hold one entry per original ({len(originals)}), got {len(pairs)}")
    columns = [m for m in PER_SENTENCE if len(per_sentence.get(m, ())) == len(originals)]
    rows = []
    for i, (text, pair) in enumerate(zip(originals[:MAX_SENTENCES], pairs)):
        got = (marked_tokens(pair.reconstruction, pair.reconstruction_hits) if pair.reconstruction
               else "<em>(no reconstruction matched)</em>")
        rows.append([str(i), e(text), got] + [num(per_sentence[m][i], 3) for m in columns])
    header = ["#", "original", "reconstruction (matched tokens marked)"] + [e(m) for m in columns]
    out = table(header, rows, [True, False, False] + [True] * len(columns))
    out = out.replace("<td>", '<td class="seq">')  # sentence cells: monospace, spaces kept
    if len(originals) > MAX_SENTENCES:
        out += f"<p class='note'>{len(originals) - MAX_SENTENCES} more sentences of this batch not shown.</p>"
    return out


def _metrics_table(metrics: Mapping[str, float]) -> str:
    names = [m for m in METRIC_ORDER if m in metrics] + sorted(set(metrics) - set(METRIC_ORDER))
    return table([e(m) for m in names], [[num(metrics[m]) for m in names]], [True] * len(names))


def _status(status: str, notes: Sequence[str]) -> str:
    cls = "note" if status == "ok" else "warn"
    return f"<p class='{cls}'>attack status: {e(status)}" + "".join(f"<br>note: {e(n)}" for n in notes) + "</p>"


def _load(row: CellRow, artifact_dir: Path) -> tuple[TextCellText | None, str]:
    """The row's sentences, or None and why they cannot be shown."""
    rel = row.artifacts.get(TEXT_ARTIFACT)
    if rel is None:
        return None, f"no {TEXT_ARTIFACT} stored for this cell"
    path = (artifact_dir / rel).resolve()
    if not path.is_relative_to(artifact_dir.resolve()):  # a store names files inside its artifact folder only
        return None, f"{TEXT_ARTIFACT} path {rel!r} points outside the artifact folder"
    try:
        return TextCellText.from_bytes(path.read_bytes()), ""
    except OSError as exc:
        return None, f"{str(artifact_dir / rel)!r} is missing ({exc.strerror or exc})"
    except GradleakError as exc:
        return None, str(exc)


def _cell_block(row: CellRow, summary: Summary, artifact_dir: Path) -> str:
    names = [a.name for a in summary.axes if a.swept and a.name in row.axes]
    axes = ", ".join(f"{k}={format_value(row.axes[k])}" for k in names)
    head = f"<h4>cell {e(row.key[:KEY_CHARS])}" + (f" ({e(axes)})" if axes else "") + "</h4>"
    text, problem = _load(row, artifact_dir)
    if text is None:
        return head + _metrics_table(row.metrics) + f"<p class='warn'>{e(problem)}</p>"
    pairs = tuple(AlignedPair(**p) for p in text.pairs)
    return (head + _metrics_table(row.metrics) + _status(text.status, text.notes)
            + aligned_table(text.originals, pairs, row.per_sample))


def text_section(summary: Summary, artifact_dir: Path) -> str:
    """Per setting, every done cell with its sentences ("" when no cell stored any)."""
    parts = []
    for s in summary.settings:
        blocks = [_cell_block(row, summary, artifact_dir) for row in s.done if TEXT_ARTIFACT in row.artifacts]
        if blocks:
            parts.append(f"<h3>{e(setting_label(s))}</h3>" + "".join(blocks))
    if not parts:
        return ""
    return "<h2>Originals and reconstructions</h2>" + NOTE + "".join(parts)


def text_run_page(title: str, facts: Sequence[tuple[str, str]], metrics: Mapping[str, float],
                  originals: Sequence[str], pairs: Sequence[AlignedPair],
                  per_sentence: Mapping[str, Sequence[float]], status: str, notes: Sequence[str] = ()) -> str:
    """A standalone page of one text attack: `facts` (name, value) pairs, the batch-mean
    `metrics`, the status and the aligned sentences."""
    parts = [f"<h1>{e(title)}</h1>", table(["", ""], [(e(k), e(v)) for k, v in facts]),
             "<h2>Metrics</h2><p class='note'>Batch means over the originals (an unmatched original scores 0).</p>"
             + _metrics_table(metrics), _status(status, notes),
             "<h2>Originals and reconstructions</h2>" + NOTE + aligned_table(originals, pairs, per_sentence)]
    return page(title, parts)


__all__ = ["MAX_SENTENCES", "aligned_table", "marked_tokens", "text_run_page", "text_section"]
