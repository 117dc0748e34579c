"""Text sweeps end to end (dager on a tiny GPT-2-like model), their report section, the
text-attack page, and the token alignment both show (`token_matches`, `aligned_pairs`)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("rouge_score")

from gradleak.cli import main
from gradleak.errors import GradleakError
from gradleak.sweep import DONE, ResultStore
from gradleak.sweep.spec import load_sweep
from gradleak.sweep.summary import summarize
from gradleak.sweep.text_html import aligned_table, marked_tokens
from gradleak.text.metrics import (
    METRIC_NAMES,
    aligned_pairs,
    text_metrics,
    token_matches,
)

HOSTILE = "<script>x</script> & a < b"  # 15 tokens of the built-in tokenizer
SENTENCES = ("A list is a sequence.", HOSTILE)
LARGE_NOISE = 1e-2  # far above the tiny model's gradient entries: dager's span test accepts noise

SWEEP = """
name: tiny_text
kind: text
base:
  model: gpt2
  model_options: {{size: tiny}}
  attack: dager
  batch_size: 2
  max_length: 16  # every sentence whole: 15 tokens and <eos>
  text: {corpus}
grid:
  noise: [0.0, {noise}]
"""


def _sweep_file(folder: Path) -> Path:
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")  # two lines, a batch of two: both are drawn
    path = folder / "sweep.yaml"
    path.write_text(SWEEP.format(corpus=corpus, noise=LARGE_NOISE))
    return path


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The tiny text sweep, run once through `gradleak sweep` (one in-process worker)."""
    folder = tmp_path_factory.mktemp("text_sweep")
    path, store = _sweep_file(folder), folder / "tiny.sqlite"
    assert main(["sweep", str(path), "--store", str(store), "--threads", "1", "-q"]) == 0
    with ResultStore(store, readonly=True) as s:
        rows = {r.axes["noise"]: r for r in s.rows()}
    return path, store, rows


def test_sweep_stores_text_metrics_exact_undefended_and_lower_under_noise(swept):
    _, store, rows = swept
    assert set(rows) == {0.0, LARGE_NOISE} and all(r.status == DONE for r in rows.values())
    clean, noisy = rows[0.0], rows[LARGE_NOISE]
    for name in METRIC_NAMES:
        assert clean.metrics[name] == 1.0, name  # dager is exact on an undefended tiny batch
        assert len(clean.per_sample[name]) == 2 and len(noisy.per_sample[name]) == 2
    assert clean.error is None and clean.artifacts["text.json"].endswith("text.json")
    assert noisy.metrics["exact"] == 0.0 and noisy.metrics["rouge1"] < 0.6
    assert noisy.metrics["token_accuracy"] < 0.5
    assert (store.parent / "tiny.sqlite.artifacts" / clean.artifacts["text.json"]).is_file()
    summary = summarize(list(rows.values()))
    assert set(METRIC_NAMES) <= set(summary.metrics)
    assert [s.metric("rouge1").cells.mean for s in summary.settings] == [1.0, noisy.metrics["rouge1"]]


def test_rerun_keeps_finished_cells(swept, capsys):
    path, store, rows = swept
    capsys.readouterr()
    assert main(["sweep", str(path), "--store", str(store), "--threads", "1", "-q"]) == 0
    assert "2 cells; 2 kept from earlier runs" in capsys.readouterr().out.replace("\n", " ")
    with ResultStore(store, readonly=True) as s:
        again = {r.axes["noise"]: r for r in s.rows()}
    assert {k: (r.attempts, r.finished) for k, r in again.items()} == {k: (1, r.finished) for k, r in rows.items()}


def test_report_shows_metrics_and_aligned_escaped_sentences(swept, tmp_path):
    _, store, rows = swept
    page, table = tmp_path / "report.html", tmp_path / "cells.csv"
    assert main(["report", str(store), "-o", str(page), "--csv", str(table)]) == 0
    header = table.read_text().splitlines()[0].split(",")
    assert set(METRIC_NAMES) <= set(header)
    text = page.read_text()
    assert "<h2>Originals and reconstructions</h2>" in text
    assert "Best and worst reconstructions" not in text  # the image section is not a text sweep's
    assert "<th>verdict</th>" not in text and "BRR/WSRR" not in text  # image verdicts read PSNR
    assert "<th>rouge1</th>" in text and "<h2>Plots</h2>" in text
    assert html.escape(HOSTILE) in text and "<script>" not in text  # the sentence, escaped, never raw
    assert html.escape(SENTENCES[0]) in text
    assert '<mark class="hit">' in text and '<span class="miss">' in text  # the clean cell, the noisy cell
    for row in rows.values():
        assert f"cell {row.key[:12]}" in text
    # the clean cell's reconstruction is every token marked
    clean = text[text.index(f"cell {rows[0.0].key[:12]}"):text.index(f"cell {rows[LARGE_NOISE].key[:12]}")]
    assert '<mark class="hit">' in clean and '<span class="miss">' not in clean


@pytest.mark.parametrize("text, expected", [
    ("kind: text\ngrid: {epochz: [1]}", ["grid.epochz: unknown setting; allowed: model, model_options, attack",
                                          "batch_size", "noise"]),
    ("kind: text\nbase: {foo: 1}", ["base.foo: unknown setting; allowed: model,", "seed"]),
    ("kind: text\nmetrics: [rouge1, psnr]", [("metrics[1]: unknown text metric 'psnr'; known text metrics: "
                                              "token_accuracy, rouge1, rouge2, rougeL, exact")]),
    ("kind: text\nbase: {attack_options: {nope: 1}}", ["does not take ['nope']"]),
    ("kind: text\ngrid: {noise: [0.0, -1.0]}", ["grid.noise[1]", "noise"]),
    ("kind: audio", ["kind: unknown cell kind 'audio'; known cell kinds: image, text"]),
])
def test_text_sweep_errors_are_one_line_and_name_the_key(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(GradleakError) as info:
        load_sweep(path)
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, message


def test_token_matches_compares_position_by_position():
    assert token_matches((1, 2, 3), (1, 9, 3, 4)) == (True, False, True)
    assert token_matches((1, 2, 3), (1,)) == (True, False, False)  # a shorter other misses its tail
    assert token_matches((), (1, 2)) == ()
    assert token_matches((2, 1), (1, 2)) == (False, False)  # same tokens, other order: no match


def _words(ids):
    return " ".join(f"w{t}" for t in ids)


def test_aligned_pairs_follow_the_hungarian_matching_whatever_the_order():
    originals = [(1, 2, 3), (4, 5, 6, 7), (8, 9)]
    found = [(8, 9), (1, 2, 3), (4, 5, 0, 7)]  # shuffled; the second original half right at position 2
    tokens = lambda ids: [f"w{t}" for t in ids]
    m = text_metrics(originals, found, _words)
    assert m.assignment == (1, 2, 0)
    pairs = aligned_pairs(originals, found, m.assignment, tokens)
    assert [p.original for p in pairs] == [tuple(tokens(o)) for o in originals]
    assert pairs[0].reconstruction == ("w1", "w2", "w3") and all(pairs[0].reconstruction_hits)
    assert pairs[1].original_hits == (True, True, False, True) == pairs[1].reconstruction_hits
    # the reconstructions in any other order: the same pairs
    for order in ([2, 0, 1], [1, 0, 2], [0, 2, 1]):
        shuffled = [found[i] for i in order]
        again = text_metrics(originals, shuffled, _words)
        assert aligned_pairs(originals, shuffled, again.assignment, tokens) == pairs
        assert again.values == m.values
    # fewer reconstructions than originals: the unmatched original pairs with nothing
    one = text_metrics(originals, [(4, 5, 6, 7)], _words)
    alone = aligned_pairs(originals, [(4, 5, 6, 7)], one.assignment, tokens)
    assert one.assignment == (-1, 0, -1) and alone[0].reconstruction == () and alone[0].original_hits == (False,) * 3
    with pytest.raises(GradleakError, match="one entry per original"):
        aligned_pairs(originals, found, (0, 1), tokens)


def test_aligned_table_marks_hits_and_escapes_every_token():
    originals = [(1, 2, 3)]
    tokens = {1: "<b>", 2: " & ", 3: "</script>"}
    pairs = aligned_pairs(originals, [(1, 9, 3)], (0,), lambda ids: [tokens.get(t, "<i>") for t in ids])
    assert marked_tokens(pairs[0].reconstruction, pairs[0].reconstruction_hits) == (
        '<mark class="hit">&lt;b&gt;</mark><span class="miss">&lt;i&gt;</span>'
        '<mark class="hit">&lt;/script&gt;</mark>')
    page = aligned_table(["<b> & </script>"], pairs, {"rouge1": (0.5,)})
    assert "&lt;b&gt; &amp; &lt;/script&gt;" in page and "<b>" not in page and "</script>" not in page
    assert "<th>rouge1</th>" in page and ">0.5<" in page
    empty = aligned_pairs(originals, [], (-1,), lambda ids: [str(t) for t in ids])
    assert "no reconstruction matched" in aligned_table(["x"], empty)


def test_cli_text_attack_writes_an_html_page(tmp_path, capsys, monkeypatch):
    import gradleak.io

    written, real = [], gradleak.io.atomic_write_text
    monkeypatch.setattr(gradleak.io, "atomic_write_text", lambda path, text: written.append(path) or real(path, text))
    out = tmp_path / "run.html"
    args = ["text-attack", "-n", "2", "--max-length", "8", "--width", "64", "--json"]
    assert main(args + ["--html", str(out)]) == 0
    run = json.loads(capsys.readouterr().out)
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and run["metrics"]["exact"] == 1.0
    for sentence in run["originals"]:
        assert html.escape(sentence) in text
    assert '<mark class="hit">' in text and '<span class="miss">' not in text  # exact: every token matched
    assert re.search(r"<th>rouge1</th>.*<td class=\"num\">1</td>", text, re.DOTALL)
    assert written == [out] and [p.name for p in tmp_path.iterdir()] == ["run.html"]  # atomically, nothing left
    missing = tmp_path / "no" / "run.html"
    assert main(["text-attack", "-n", "1", "--html", str(missing)]) == 2
    assert "--html" in capsys.readouterr().err and not missing.parent.exists()


def test_every_cell_kind_has_a_report_section():
    from gradleak.sweep.cell import CELL_KINDS

    empty = summarize([])
    for name in CELL_KINDS.names():
        assert CELL_KINDS.get(name).report_section(empty, Path("/nonexistent")) == "", name
