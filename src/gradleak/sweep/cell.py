"""Run one sweep cell through its kind (`CELL_KINDS`); never raise for a bad cell.

This is what executors ship to workers. The result travels back to the single writer
as a `CellOutcome` (the row plus its artifact bytes), so workers never touch the store.
Cell kinds: "image" (`gradleak attack` audits) and "text" (text audits).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback

import torch

from gradleak.errors import GradleakError
from gradleak.registry import Registry
from gradleak.sweep.image_cell import ImageCells
from gradleak.sweep.kinds import CellKind
from gradleak.sweep.records import FAILED, Cell, CellOutcome, CellRow
from gradleak.sweep.text_cell import TextCells

log = logging.getLogger(__name__)


CELL_KINDS: Registry[CellKind] = Registry("cell kind")
CELL_KINDS.add("image", ImageCells(), "a `gradleak attack` audit on images, scored by the image metrics")
CELL_KINDS.add("text", TextCells(), "a text audit (`gradleak text-attack`), scored by the text metrics")


def run_cell(cell: Cell, sweep: str) -> CellOutcome:
    """Run one cell by its kind. A user error or a crash inside the attack becomes a failed row."""
    from gradleak.pipelines.audit import versions

    started = time.time()
    try:
        return CELL_KINDS.get(cell.kind).run(cell, sweep, started)
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


__all__ = ["CELL_KINDS", "CellOutcome", "init_worker", "run_cell"]
