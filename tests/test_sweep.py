"""Sweeps: YAML validation, cell keys, the SQLite store, resuming, and surviving SIGKILL."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from gradleak.cli import main
from gradleak.errors import GradleakError
from gradleak.sweep import DONE, FAILED, CellRow, ResultStore
from gradleak.sweep.executors import LocalExecutor, fair_threads, make_executor
from gradleak.sweep.run import plan, run_sweep
from gradleak.sweep.spec import load_sweep

TINY_BASE = """
base:
  dataset: digits
  image_size: 8
  model: mlp
  model_options: {hidden: [16]}
  attack: dlg
  attack_options: {iterations: 4}
"""

TINY_24 = "name: tiny\n" + TINY_BASE + """
grid:
  lr: [0.1, 0.2]
  indices: {range: [0, 3]}
  seed: [0, 1]
zip:
  - {protocol: [fedsgd, fedavg], epochs: [1, 2]}
"""


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_product_zip_and_range(tmp_path):
    spec = load_sweep(write(tmp_path, TINY_24))
    cells = spec.cells()
    assert len(cells) == 2 * 3 * 2 * 2
    assert len({c.key for c in cells}) == 24
    first = cells[0]
    assert first.axes == {"lr": 0.1, "indices": 0, "seed": 0, "protocol": "fedsgd", "epochs": 1}
    assert first.settings["indices"] == [0] or tuple(first.settings["indices"]) == (0,)
    assert first.settings["attack_options"]["iterations"] == 4
    # zipped axes move together
    assert {(c.axes["protocol"], c.axes["epochs"]) for c in cells} == {("fedsgd", 1), ("fedavg", 2)}


def test_key_is_the_resolved_setting(tmp_path):
    """A default spelled out, a nested vs dotted option, and key order do not change the cell."""
    from gradleak.attacks.dlg import DLG

    default_iters = DLG().iterations
    a = load_sweep(write(tmp_path, "base: {attack: dlg, seed: 3}\n", "a.yaml")).cells()
    b = load_sweep(write(tmp_path, f"base: {{seed: 3, attack: dlg, attack_options.iterations: {default_iters}}}\n",
                         "b.yaml")).cells()
    c = load_sweep(write(tmp_path, f"grid: {{attack_options.iterations: [{default_iters}, {default_iters + 1}]}}\n"
                         "base: {attack: dlg, seed: 3}\n", "c.yaml")).cells()
    assert len(a) == len(b) == 1 and a[0].key == b[0].key
    assert c[0].key == a[0].key and c[1].key != a[0].key
    # the metrics computed are part of the cell
    d = load_sweep(write(tmp_path, "metrics: [psnr]\nbase: {attack: dlg, seed: 3}\n", "d.yaml")).cells()
    assert d[0].key != a[0].key


def test_duplicate_cells_run_once(tmp_path):
    spec = load_sweep(write(tmp_path, "base: {attack: dlg}\ngrid: {seed: [0, 0, 1]}\n"))
    assert len(spec.cells()) == 2


@pytest.mark.parametrize("text, where", [
    ("grid: {epochz: [1]}", "grid.epochz: unknown setting; allowed: dataset"),
    ("grid: {attack: [dlg, foo]}", "grid.attack[1]: unknown attack 'foo'; known attacks:"),
    ("base: {attack: dlg}\ngrid: {attack_options.iterations: [1, -3]}", "grid.attack_options.iterations[1]"),
    ("base: {attack: dlg}\ngrid: {attack_options.iterationz: [1]}", "does not take ['iterationz']; it takes:"),
    ("grid: {model_options.widthz: [3]}", "grid.model_options.widthz[0]: model 'lenet' does not take"),
    ("zip: [{lr: [0.1], epochs: [1, 2]}]", "zip[0]: zipped axes must have equal lengths"),
    ("metrics: [psnr, lpipz]", "metrics[1]: unknown metric 'lpipz'; known metrics:"),
    ("grid: {seed: {range: [0]}}", "grid.seed: the axis has no values"),
    ("grid: {seed: 3}", "grid.seed: expected a list of values"),
    ("grid: {seed: {range: [0, 4, 0]}}", "the step must not be 0"),
    ("grid: {seed: [1]}\nzip: [{seed: [2]}]", "['seed'] swept by more than one axis"),
    ("grid: {labels: [auto, maybe]}", "grid.labels[1]: labels must be one of 'auto', 'given'"),
    ("grid: {defenses: [[gaussian:sigma=0.1], [gausian]]}", "grid.defenses[1]: unknown defense"),
    ("foo: 1", "unknown top-level keys ['foo']"),
    ("[1, 2]", "must hold a mapping"),
    ("grid: {lr: [0.1, }", "is not valid YAML"),
])
def test_errors_name_their_place(tmp_path, text, where):
    path = write(tmp_path, text)
    with pytest.raises(GradleakError) as info:
        load_sweep(path)
    assert where in str(info.value), str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(GradleakError, match="does not exist"):
        load_sweep(tmp_path / "nope.yaml")


def row(key: str, status: str = DONE, **kw) -> CellRow:
    return CellRow(key=key, sweep="s", settings={"seed": 0}, axes={"seed": 0}, status=status, **kw)


def test_store_round_trip(tmp_path):
    with ResultStore(tmp_path / "s.sqlite") as store:
        written = store.write(row("a", metrics={"psnr": 20.0, "lpips": float("nan")},
                                  per_sample={"psnr": (19.0, 21.0)}, timings={"attack_s": 1.5}),
                              {"grid": b"png-bytes"})
        assert written.artifacts == {"grid": "a-grid.png"}
        assert (store.artifact_dir / "a-grid.png").read_bytes() == b"png-bytes"
        store.write(row("b", FAILED, error="boom"))
        rows = {r.key: r for r in store.rows()}
        assert rows["a"].per_sample["psnr"] == (19.0, 21.0) and rows["a"].timings == {"attack_s": 1.5}
        assert rows["a"].metrics["psnr"] == 20.0 and rows["a"].metrics["lpips"] != rows["a"].metrics["lpips"]
        assert rows["b"].error == "boom" and not rows["b"].done
        store.write(row("b", DONE))  # a retry replaces the row and counts the attempt
        assert store.statuses() == {"a": DONE, "b": DONE}
        assert [r.attempts for r in store.rows() if r.key == "b"] == [2]
        assert store.integrity() == "ok"
        with pytest.raises(GradleakError, match="row status must be"):
            store.write(row("c", "running"))


def test_store_rejects_other_files(tmp_path):
    bad = tmp_path / "not.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GradleakError, match="is not a gradleak result store"):
        ResultStore(bad)
    with pytest.raises(GradleakError, match="does not exist"):
        ResultStore(tmp_path / "missing.sqlite", create=False)
    with pytest.raises(GradleakError, match="must be a file path"):
        ResultStore(tmp_path)


def test_resume_skips_done_and_retries_failed(tmp_path):
    text = "name: r\n" + TINY_BASE + "grid:\n  indices: [0, 1, 5000]\n"
    spec = load_sweep(write(tmp_path, text))
    with ResultStore(tmp_path / "r.sqlite") as store:
        first = run_sweep(spec, store, LocalExecutor(1, 1))
        assert (first.done, first.failed) == (2, 1)
        failed = store.rows(status=FAILED)[0]
        assert "5000" in failed.error and failed.axes == {"indices": 5000}
        again = run_sweep(spec, store, LocalExecutor(1, 1))
        assert (again.ran, again.skipped) == (0, 3)
        retried = run_sweep(spec, store, LocalExecutor(1, 1), retry_failed=True)
        assert (retried.ran, retried.failed) == (1, 1)
        assert {r.key: r.attempts for r in store.rows()}[failed.key] == 2
        done = store.rows(status=DONE)
        assert all(r.metrics["psnr"] > 0 and len(r.per_sample["psnr"]) == 1 for r in done)
        for r in done:
            png = Image.open(io.BytesIO((store.artifact_dir / r.artifacts["grid"]).read_bytes()))
            assert png.size[0] > 8 and png.size[1] > 8


def test_workers_give_the_same_rows(tmp_path):
    """Two spawned workers store the same numbers as one in-process worker (same threads)."""
    text = "name: w\n" + TINY_BASE + "grid:\n  indices: [0, 1, 2, 3]\n"
    spec = load_sweep(write(tmp_path, text))
    results = []
    for workers in (1, 2):
        with ResultStore(tmp_path / f"w{workers}.sqlite") as store:
            run_sweep(spec, store, LocalExecutor(workers, threads=1))
            results.append({r.key: (r.metrics, r.per_sample) for r in store.rows()})
    assert results[0] == results[1] and len(results[0]) == 4


def test_executor_arguments():
    assert fair_threads(2, cores=2) == 1 and fair_threads(3, cores=2) == 1 and fair_threads(1, cores=8) == 8
    with pytest.raises(GradleakError, match="workers must be an integer >= 1, got 0"):
        make_executor("local", workers=0)
    with pytest.raises(GradleakError, match="unknown executor 'dask'; known executors: local, ray"):
        make_executor("dask")
    with pytest.raises(GradleakError, match="--address is for --executor ray"):
        make_executor("local", address="ray://x:10001")


def _count_done(path: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM cells WHERE status = 'done'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_sigkill_midway_then_resume(tmp_path):
    """Acceptance: 24 cells, SIGKILL mid-run, rerun: every cell exactly once, none redone, no corruption."""
    sweep = write(tmp_path, TINY_24)
    store_path = tmp_path / "kill.sqlite"
    cmd = [sys.executable, "-m", "gradleak.cli", "sweep", str(sweep), "--store", str(store_path), "--workers", "2",
           "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    try:
        while _count_done(store_path) < 6:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the sweep did not get going"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-write or not
        proc.wait()
    before = _count_done(store_path)
    assert 6 <= before < 24, before

    assert main(["sweep", str(sweep), "--store", str(store_path), "-q"]) == 0
    with ResultStore(store_path, create=False) as store:
        assert store.integrity() == "ok"
        rows = store.rows()
        keys = [r.key for r in rows]
        assert len(keys) == 24 and set(keys) == {c.key for c in load_sweep(sweep).cells()}
        assert all(r.status == DONE and r.attempts == 1 for r in rows)  # none lost, none redone
        for r in rows:
            json.dumps(r.metrics)
            assert (store.artifact_dir / r.artifacts["grid"]).is_file()
        assert len(plan(load_sweep(sweep), store).pending) == 0


def test_cli_sweep_dry_run_and_failure_exit(tmp_path, capsys):
    sweep = write(tmp_path, "name: c\n" + TINY_BASE + "grid:\n  indices: [0, 9999]\n")
    store = tmp_path / "c.sqlite"
    assert main(["sweep", str(sweep), "--store", str(store), "--dry-run"]) == 0
    assert "2 cells, all to run" in capsys.readouterr().out and not store.exists()
    assert main(["sweep", str(sweep), "--store", str(store), "-q"]) == 2
    assert "1 cell(s) failed" in capsys.readouterr().err
    assert main(["sweep", str(sweep), "--store", str(store), "--dry-run"]) == 0
    assert "1 done, 1 failed, 0 to run" in capsys.readouterr().out


@pytest.mark.slow
def test_ray_gives_the_same_rows_as_local(tmp_path):
    """Acceptance: the same sweep through a local Ray and through local processes stores the same rows."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray[default]')")
    spec = load_sweep(write(tmp_path, TINY_24))
    results = []
    for name in ("local", "ray"):
        with ResultStore(tmp_path / f"{name}.sqlite") as store:
            summary = run_sweep(spec, store, make_executor(name, workers=2, threads=1))
            assert summary.done == 24
            results.append({r.key: (r.axes, r.metrics, r.per_sample) for r in store.rows()})
    assert results[0] == results[1]


def test_opening_a_foreign_sqlite_file_leaves_it_alone(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(GradleakError, match="is not a gradleak result store"):
        ResultStore(path, create=False)
    assert path.read_bytes() == before


def test_metric_without_weights_fails_before_any_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with pytest.raises(GradleakError, match=r"metrics\[1\]: metric 'lpips' cannot run here: .*alexnet-owt-7be5be79"):
        load_sweep(write(tmp_path, "metrics: [psnr, lpips]\nbase: {attack: dlg}\n"))


def test_bad_names_and_counts(tmp_path):
    with pytest.raises(GradleakError, match=r"name must be letters, digits.*got '../x'"):
        load_sweep(write(tmp_path, "name: ../x\nbase: {attack: dlg}\n"))
    with pytest.raises(GradleakError, match="threads must be an integer >= 1, got 0"):
        make_executor("local", workers=2, threads=0)
    with pytest.raises(GradleakError, match="is a folder, not a YAML file"):
        load_sweep(tmp_path)


def test_two_drivers_on_one_store_split_its_cells(tmp_path):
    """Concurrent drivers claim cells in the store: every cell runs once, and both drivers work."""
    sweep = write(tmp_path, TINY_24)
    store_path = tmp_path / "shared.sqlite"
    cmd = [sys.executable, "-m", "gradleak.cli", "sweep", str(sweep), "--store", str(store_path)]
    procs = [subprocess.Popen([*cmd, "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    with ResultStore(store_path, create=False) as store:
        rows = store.rows()
        assert len(rows) == 24 and len({r.key for r in rows}) == 24
        assert sum(r.attempts for r in rows) == 24  # nothing computed twice
    ran = [int(re.search(r"(\d+) done and", out).group(1)) for out, _ in outputs]
    assert sum(ran) == 24 and min(ran) > 0, outputs


def test_workers_end_when_their_driver_is_killed(tmp_path):
    """SIGKILL of the driver alone (the OOM killer's way) leaves no worker behind."""
    sweep = write(tmp_path, TINY_24)
    store_path = tmp_path / "orphans.sqlite"
    cmd = [sys.executable, "-m", "gradleak.cli", "sweep", str(sweep), "--store", str(store_path), "--workers", "2",
           "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    try:
        while _count_done(store_path) < 1:
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only
        proc.wait()
        gone = time.time() + 15
        while time.time() < gone:
            try:
                os.killpg(proc.pid, 0)  # any process of the sweep's session left?
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the workers outlived their driver")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
