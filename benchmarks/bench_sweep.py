"""Sweep executors on this machine: one local worker vs two, local processes vs a local Ray.

The same 12-cell sweep (ig on a width-16 ConvNet, one built-in photo per cell, 150
iterations: about 5-7 s per cell on one thread) runs into a fresh store per executor.
Every executor gets one torch thread per worker, so the speed-up measures parallel cells,
not intra-op threads; the floor is the plain loop `for cell: run_cell(cell)` in this
process. Rows must be identical across executors with the same threads.

    python benchmarks/bench_sweep.py   # about 4 minutes; appends to benchmarks/results_sweep.jsonl
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from gradleak.sweep import ResultStore
from gradleak.sweep.cell import run_cell
from gradleak.sweep.executors import make_executor
from gradleak.sweep.run import run_sweep
from gradleak.sweep.spec import load_sweep

SPEC = """
name: bench
metrics: [psnr, ssim]
base:
  dataset: photos
  model: convnet
  model_options: {width: 16}
  attack: ig
  attack_options: {iterations: 150}
  labels: given
grid:
  indices: {range: [0, 12]}
"""


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    (tmp / "bench.yaml").write_text(SPEC)
    spec = load_sweep(tmp / "bench.yaml")
    cells = spec.cells()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    floor = {c.key: run_cell(c, spec.name).row.metrics for c in cells}
    timings = {"floor_loop_1_thread": time.perf_counter() - t0}
    rows = {}
    for name, workers in (("local", 1), ("local", 2), ("ray", 2)):
        with ResultStore(tmp / f"{name}{workers}.sqlite") as store:
            summary = run_sweep(spec, store, make_executor(name, workers=workers, threads=1))
            timings[f"{name}_{workers}_workers"] = summary.seconds
            rows[f"{name}{workers}"] = {r.key: r.metrics for r in store.rows()}
    same = all(r == floor for r in rows.values())
    record = {"date": time.strftime("%Y-%m-%d"), "cells": len(cells), "machine": platform.processor() or "cpu",
              "torch": torch.__version__, "seconds": timings, "rows_identical": same,
              "speedup_local_2_over_1": timings["local_1_workers"] / timings["local_2_workers"],
              "speedup_ray_2_over_local_1": timings["local_1_workers"] / timings["ray_2_workers"]}
    with open(Path(__file__).with_name("results_sweep.jsonl"), "a") as fh:
        fh.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
