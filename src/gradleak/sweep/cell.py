"""Run one sweep cell: the audit, the extra metrics, the image grid; never raise for a bad cell.

This is what executors ship to workers. The result travels back to the single writer
as a `CellOutcome` (the row plus its artifact bytes), so workers never touch the store.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Mapping

import torch

from gradleak.errors import GradleakError
from gradleak.sweep.records import DONE, FAILED, Cell, CellRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellOutcome:
    row: CellRow
    artifacts: Mapping[str, bytes] = field(default_factory=dict)  # name -> PNG bytes


def run_cell(cell: Cell, sweep: str) -> CellOutcome:
    """Audit one cell. A user error or a crash inside the attack becomes a failed row."""
    from gradleak.pipelines.audit import AuditConfig, run_audit, versions
    from gradleak.pipelines.write import audit_grid_png

    started = time.time()
    try:
        run = run_audit(AuditConfig.from_settings(cell.settings))
        result = run.result
        per_sample = {**result.metrics.values, "baseline_psnr": result.metrics.baseline_psnr}
        timings = dict(result.timings)
        if result.peak_memory_bytes is not None:
            timings["peak_memory_mib"] = result.peak_memory_bytes / 2**20
        metrics = result.metrics.means()
        png = audit_grid_png(run)
        row = CellRow(key=cell.key, sweep=sweep, settings=cell.settings, axes=cell.axes, status=DONE,
                      metrics=metrics, per_sample=per_sample, timings=timings,
                      versions={**result.versions, "device": _device_name(result.settings["device_used"])},
                      started=started, finished=time.time(),
                      error=None if result.status == "ok" else f"attack status: {result.status}")
        return CellOutcome(row, {"grid": png})
    except (KeyboardInterrupt, SystemExit):
        raise
    except GradleakError as exc:
        error = str(exc)
    except Exception:  # a crash in one cell must not stop the sweep; the traceback is kept in the store
        error = traceback.format_exc(limit=20)
    log.warning("cell %s failed: %s", cell.key, error.strip().splitlines()[-1])
    return CellOutcome(CellRow(key=cell.key, sweep=sweep, settings=cell.settings, axes=cell.axes, status=FAILED,
                               error=error, versions=versions(), started=started, finished=time.time()))


def init_worker(threads: int, parent: int | None = None, gpus=None) -> None:
    """Pin a worker process to its share of the cores (one thread: steadier timings), to the
    next GPU of `gpus` (a queue of GPU indices: CUDA_VISIBLE_DEVICES, set before CUDA starts)
    and, when `parent` (the driver's pid) is given, end the worker when the driver is gone:
    a driver killed outright (SIGKILL, the OOM killer) cannot stop its workers itself."""
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    torch.set_num_threads(max(1, int(threads)))
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int, every: float = 1.0) -> None:
    while True:
        time.sleep(every)
        if os.getppid() != parent:  # re-parented: the driver died
            os._exit(1)


def _device_name(device: str) -> str:
    """'cuda:0 (NVIDIA H200)': where a cell ran, for its row."""
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        return f"{device} ({torch.cuda.get_device_name(index)}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'all')})"
    return device
