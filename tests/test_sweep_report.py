"""Sweep summaries, CSV export and the self-contained HTML report, on a synthetic store."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.errors import GradleakError
from gradleak.pipelines.figures import render_grid
from gradleak.sweep import CellRow, ResultStore
from gradleak.sweep.export import csv_text, write_csv
from gradleak.sweep.html import render_report
from gradleak.sweep.summary import stat, summarize

HOSTILE = "noise:scale=0.1<script>alert('x')</script>"
EPOCHS = (1, 2, 4)
DEFENSES = ([], [HOSTILE])
SEEDS = (0, 1, 2)
BATCHES = ([0, 1], [2, 3])  # the indices axis: two batches of two images
METRICS = ("psnr", "ssim", "mse", "stlpips")
N_DONE = len(EPOCHS) * len(DEFENSES) * len(SEEDS) * len(BATCHES)  # 36
N_FAILED = 3


def _key(axes: dict) -> str:
    return hashlib.sha256(json.dumps(axes, sort_keys=True).encode()).hexdigest()


def _psnr(e: int, d: int, seed: int, b: int, j: int) -> float:
    # epochs raise PSNR by 2 dB a step, the defense lowers it by 6 dB; see the BRR/WSRR test
    return 14.0 + 2 * EPOCHS.index(e) + seed + 2 * j + 0.5 * b - 6 * d


def _stlpips(seed: int, j: int) -> float:
    return 0.05 if (seed + j) % 2 == 0 else 0.2


def _grid_png(seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    image = render_grid(torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g), scale=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _row(axes: dict, status: str, t: float, sweep: str = "grid1", **kw) -> CellRow:
    settings = {"model": "lenet", "attack": "ig", "attack_options": {"iterations": 50}, **axes}
    return CellRow(key=_key({"sweep": sweep, **axes}), sweep=sweep, settings=settings, axes=axes, status=status,
                   versions={"gradleak": "0.1.0", "torch": "2.13.0"}, started=t, finished=t + 1, **kw)


def build_store(path: Path) -> dict:
    """The synthetic store; returns the per-setting numbers the tests compare with."""
    store = ResultStore(path)
    # the spec lists the hostile defense first: the report must keep that order
    store.register_sweep("grid1", {"name": "grid1", "axes": [
        {"names": ["epochs"], "points": [[e] for e in EPOCHS]},
        {"names": ["defenses"], "points": [[d] for d in reversed(DEFENSES)]},
        {"names": ["seed"], "points": [[s] for s in SEEDS]},
        {"names": ["indices"], "points": [[b] for b in BATCHES]}]})
    store.register_sweep("other", {"name": "other"})
    expected: dict = {}
    t = 0.0
    for e in EPOCHS:
        for d, defenses in enumerate(DEFENSES):
            for seed in SEEDS:
                for b, indices in enumerate(BATCHES):
                    t += 10
                    psnr = [_psnr(e, d, seed, b, j) for j in range(2)]
                    per_sample = {"psnr": psnr, "stlpips": [_stlpips(seed, j) for j in range(2)],
                                  "ssim": [p / 40 for p in psnr], "mse": [10 ** (-p / 10) for p in psnr]}
                    metrics = {m: float(np.mean(v)) for m, v in per_sample.items()}
                    axes = {"epochs": e, "defenses": defenses, "seed": seed, "indices": indices}
                    store.write(_row(axes, "done", t, metrics=metrics, per_sample=per_sample,
                                     timings={"attack_s": 1.5, "total_s": 2.0}), {"grid": _grid_png(int(t))})
                    expected.setdefault((e, d), []).append(per_sample)
    failed = [({"epochs": 1, "defenses": [], "seed": 3, "indices": [0, 1]}, "RuntimeError: diverged"),
              ({"epochs": 2, "defenses": [HOSTILE], "seed": 3, "indices": [0, 1]}, "<b>boom</b> & co"),
              ({"epochs": 8, "defenses": [], "seed": 0, "indices": [0, 1]}, "MemoryError")]
    for axes, error in failed:
        t += 10
        store.write(_row(axes, "failed", t, error=error))
    store.write(_row({"lr": 0.1}, "done", t + 10, sweep="other", metrics={"psnr": 30.0},
                     per_sample={"psnr": [30.0]}))
    store.close()
    return expected


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "results.sqlite"
    expected = build_store(path)
    return path, expected


@pytest.fixture(scope="module")
def grid_rows(synthetic):
    with ResultStore(synthetic[0], create=False) as store:
        return store.rows(sweep="grid1")


@pytest.fixture(scope="module")
def page(synthetic, tmp_path_factory):
    """The report of sweep grid1 with one best-cell grid image deleted (in a copy of the store)."""
    folder = tmp_path_factory.mktemp("report")
    store = folder / "results.sqlite"
    shutil.copy(synthetic[0], store)
    shutil.copytree(synthetic[0].with_name("results.sqlite.artifacts"), folder / "results.sqlite.artifacts")
    with ResultStore(store, create=False) as s:
        rows = s.rows(sweep="grid1")
    summary = summarize(rows)
    best = next(x.best for x in summary.settings if dict(x.values) == {"epochs": 4, "defenses": []})
    (folder / "results.sqlite.artifacts" / best.artifacts["grid"]).unlink()
    out = folder / "out"
    out.mkdir()
    files = render_report(store, out / "report.html", sweep="grid1", csv_path=out / "cells.csv")
    return files, best


# ---------------------------------------------------------------- summary


def test_summary_means_and_stds_equal_numpys(grid_rows, synthetic):
    expected = synthetic[1]
    summary = summarize(grid_rows)
    assert (summary.cells, summary.done, summary.failed) == (N_DONE + N_FAILED, N_DONE, N_FAILED)
    assert summary.metrics == METRICS
    done = [s for s in summary.settings if s.done]
    assert len(done) == len(EPOCHS) * len(DEFENSES)
    for s in done:
        values = dict(s.values)
        samples = expected[(values["epochs"], DEFENSES.index(values["defenses"]))]
        assert len(s.done) == len(SEEDS) * len(BATCHES)
        for metric in METRICS:
            cells = [np.mean(p[metric]) for p in samples]
            images = [v for p in samples for v in p[metric]]
            m = s.metric(metric)
            assert m.cells.mean == pytest.approx(np.mean(cells), rel=1e-12)
            assert m.cells.std == pytest.approx(np.std(cells, ddof=1), rel=1e-12)
            assert (m.cells.n, m.cells.min, m.cells.max) == (6, pytest.approx(min(cells)), pytest.approx(max(cells)))
            assert m.images.mean == pytest.approx(np.mean(images), rel=1e-12)
            assert m.images.std == pytest.approx(np.std(images, ddof=1), rel=1e-12)
            assert m.images.n == 12
        assert s.best.metrics["psnr"] == max(r.metrics["psnr"] for r in s.done)
        assert s.worst.metrics["psnr"] == min(r.metrics["psnr"] for r in s.done)


def test_stat_skips_nan_and_handles_single_and_empty():
    assert stat([1.0, float("nan"), 3.0]).n == 2
    assert stat([2.0]).std == 0.0
    empty = stat([])
    assert empty.n == 0 and np.isnan(empty.mean)


def test_brr_and_wsrr_per_setting_equal_hand_counts(grid_rows):
    # epochs 1: PSNR 14..18.5 with the leaking stlpips only on images below 18 dB -> nothing leaks.
    # epochs 2: seed 0 none; seed 1 image 1 (19 dB) leaks; seed 2 image 0 (18 dB) leaks -> BRR 2/6 * 1/2 * 2
    # epochs 4: every cell has exactly one image with stlpips 0.05, all >= 18 dB -> BRR 1/2, WSRR 1.
    # the defense lowers PSNR by 6 dB: nothing leaks.
    hand = {(1, 0): (0.0, 0.0), (2, 0): (1 / 3, 2 / 3), (4, 0): (0.5, 1.0),
            (1, 1): (0.0, 0.0), (2, 1): (0.0, 0.0), (4, 1): (0.0, 0.0)}
    summary = summarize(grid_rows)
    assert summary.perceptual == "stlpips"
    assert (summary.psnr_threshold, summary.perceptual_threshold) == (18.0, 0.1)
    for s in summary.settings:
        if not s.done:
            assert s.leak is None
            continue
        v = dict(s.values)
        brr, wsrr = hand[(v["epochs"], DEFENSES.index(v["defenses"]))]
        assert (s.leak.brr, s.leak.wsrr) == (pytest.approx(brr), pytest.approx(wsrr))
        assert (s.leak.cells, s.leak.samples) == (6, 12)
    # at 16 dB, epochs 1 without defense: seed 1 image 1 (17 dB) and seed 2 image 0 (16 dB) leak
    low = summarize(grid_rows, psnr_threshold=16)
    s = next(x for x in low.settings if dict(x.values) == {"epochs": 1, "defenses": []})
    assert (s.leak.brr, s.leak.wsrr) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    with pytest.raises(GradleakError, match="perceptual_threshold"):
        summarize(grid_rows, perceptual_threshold=float("nan"))


def test_axes_constants_and_failures(grid_rows):
    summary = summarize(grid_rows, specs=[{"axes": [{"names": ["defenses"], "points": [[[HOSTILE]], [[]]]}]}])
    axes = {a.name: a for a in summary.axes}
    assert [a.name for a in summary.setting_axes] == ["defenses", "epochs"]
    assert {a.name for a in summary.swept_axes} == {"epochs", "defenses", "seed", "indices"}
    assert axes["epochs"].values == (1, 2, 4, 8) and axes["epochs"].numeric
    assert axes["defenses"].values == ([HOSTILE], []) and not axes["defenses"].numeric  # the spec's order
    assert axes["seed"].replicate and axes["indices"].replicate
    fixed = dict(summary.fixed)
    assert fixed["model"] == "lenet" and fixed["attack_options.iterations"] == 50 and "epochs" not in fixed
    assert [f.error for f in summary.failures] == ["RuntimeError: diverged", "<b>boom</b> & co", "MemoryError"]
    only_failed = [s for s in summary.settings if not s.done]
    assert [dict(s.values) for s in only_failed] == [{"epochs": 8, "defenses": []}]
    assert only_failed[0].best is None and len(only_failed[0].failed) == 1
    assert summary.versions == (("gradleak", ("0.1.0",)), ("torch", ("2.13.0",)))


# ---------------------------------------------------------------- CSV


def test_csv_has_one_line_per_row_with_every_column(grid_rows, tmp_path):
    path = write_csv(grid_rows, tmp_path / "cells.csv")
    lines = list(csv.DictReader(path.open(newline="")))
    assert len(lines) == len(grid_rows) == N_DONE + N_FAILED
    assert list(lines[0]) == ["key", "sweep", "status", "attempts", "defenses", "epochs", "indices", "seed",
                              *METRICS, "attack_s", "total_s", "error"]
    by_key = {line["key"]: line for line in lines}
    for row in grid_rows:
        line = by_key[row.key]
        assert (line["sweep"], line["status"], int(line["epochs"])) == ("grid1", row.status, row.axes["epochs"])
        assert json.loads(line["defenses"]) == row.axes["defenses"]
        if row.done:
            assert float(line["psnr"]) == row.metrics["psnr"] and float(line["attack_s"]) == 1.5
            assert line["error"] == ""
        else:
            assert line["psnr"] == "" and line["error"] == row.error
    assert csv_text([]) == "key,sweep,status,attempts,error\n"


# ---------------------------------------------------------------- HTML


def test_page_is_self_contained_and_escaped(page):
    files, best = page
    assert sorted(p.name for p in files.page.parent.iterdir()) == ["cells.csv", "report.html"]
    text = files.page.read_text()
    # no resource outside the page: every src/href is a data: URI
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", text, flags=re.I)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert "<link" not in text.lower() and "url(" not in text.lower()
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "&lt;b&gt;boom&lt;/b&gt; &amp; co" in text and "<b>boom" not in text
    summary = files.summary
    plots = len(summary.metrics) * len(summary.setting_axes)
    assert plots == 8
    strips = sum(2 for s in summary.settings if s.done) - 1  # one grid image deleted
    assert text.count("<img ") == plots + strips
    assert f"grid image {str(files.page.parent.parent / 'results.sqlite.artifacts' / best.artifacts['grid'])!r}" \
           f" is missing" in text.replace("&#x27;", "'")
    assert "BRR" in text and "stlpips ≤ 0.1" in text and "18 dB" in text
    assert "Failed cells (3)" in text
    assert len(list(csv.reader(files.csv.open()))) == N_DONE + N_FAILED + 1
    for png in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text):
        import base64

        Image.open(io.BytesIO(base64.b64decode(png))).verify()


def test_all_sweeps_and_empty_and_failed_only_stores(synthetic, tmp_path):
    files = render_report(synthetic[0], tmp_path / "all.html")
    assert files.summary.cells == N_DONE + N_FAILED + 1 and files.csv is None
    empty = tmp_path / "empty.sqlite"
    ResultStore(empty).close()
    text = render_report(empty, tmp_path / "empty.html").page.read_text()
    assert "holds no cells" in text and text.rstrip().endswith("</html>")
    failed = tmp_path / "failed.sqlite"
    with ResultStore(failed) as store:
        store.write(_row({"epochs": 1}, "failed", 1.0, error="Traceback <x>"))
        store.write(_row({"epochs": 2}, "failed", 2.0, error="again"))
    text = render_report(failed, tmp_path / "failed.html", csv_path=tmp_path / "failed.csv").page.read_text()
    assert "all 2 stored cells failed" in text and "Traceback &lt;x&gt;" in text and "<img" not in text
    assert len((tmp_path / "failed.csv").read_text().splitlines()) == 3


def test_bad_input_raises_before_writing(synthetic, tmp_path):
    out, table = tmp_path / "r.html", tmp_path / "r.csv"
    with pytest.raises(GradleakError, match="does not exist"):
        render_report(tmp_path / "missing.sqlite", out, csv_path=table)
    with pytest.raises(GradleakError, match=r"sweep 'nope' is not in store .*known sweeps: 'grid1', 'other'"):
        render_report(synthetic[0], out, sweep="nope", csv_path=table)
    with pytest.raises(GradleakError, match="folder"):
        render_report(synthetic[0], tmp_path / "no" / "r.html")
    with pytest.raises(GradleakError, match="psnr_threshold"):
        render_report(synthetic[0], out, psnr_threshold=float("inf"))
    with pytest.raises(GradleakError, match="must differ"):
        render_report(synthetic[0], out, csv_path=out)
    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_text("hello " * 100)
    with pytest.raises(GradleakError, match="not a gradleak result store"):
        render_report(not_a_store, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_cli_report_subcommand(synthetic, tmp_path, capsys):
    from gradleak.cli.report import add_parser

    parser = argparse.ArgumentParser(prog="gradleak")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(synthetic[0]), "--out", str(tmp_path / "r.html"), "--csv",
                              str(tmp_path / "r.csv"), "--sweep", "grid1", "--psnr-threshold", "16"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "r.html") in printed and str(tmp_path / "r.csv") in printed
    assert "≥ 16 dB" in (tmp_path / "r.html").read_text()


# ---------------------------------------------------------------- real browser


COUNTER = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var p = document.createElement('p');
  p.id = 'img-count';
  p.textContent = 'loaded=' + ok + ' total=' + imgs.length;
  document.body.appendChild(p);
});
</script>"""


@pytest.mark.slow
def test_page_renders_in_headless_chromium(page, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium binary is not installed (apt-get install chromium)")
    files, _ = page
    text = files.page.read_text()
    expected = text.count("<img ")
    assert expected > 0
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", COUNTER + "</body>"))
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run(base + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    match = re.search(r"loaded=(\d+) total=(\d+)", dom.stdout)
    assert match, dom.stdout[-2000:]
    assert (int(match[1]), int(match[2])) == (expected, expected)
    shot = tmp_path / "page.png"
    run = subprocess.run(base + [f"--screenshot={shot}", "--window-size=1280,2400", files.page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2400, 1280)
    assert pixels.std() > 5 and (pixels < 128).mean() > 0.005  # text and figures, not a blank page
