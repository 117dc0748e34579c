"""The sweep driver: plan the pending cells, hand them to an executor, store each outcome.

The driver is the store's only writer and commits every finished cell at once, so
`gradleak sweep` can be killed at any moment and rerun: done cells are skipped, failed
ones too unless `retry_failed`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from gradleak.sweep.executors import Executor
from gradleak.sweep.records import DONE, FAILED, Cell, CellRow
from gradleak.sweep.spec import SweepSpec
from gradleak.sweep.store import ResultStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPlan:
    cells: tuple[Cell, ...]  # every cell of the grid
    pending: tuple[Cell, ...]  # those that will run
    done: int  # already done in the store
    failed: int  # failed earlier and not retried


@dataclass(frozen=True)
class SweepProgress:
    done: int
    failed: int
    remaining: int
    total: int
    last: CellRow | None


@dataclass(frozen=True)
class SweepSummary:
    total: int
    skipped: int  # done before this run
    ran: int
    done: int  # done in this run
    failed: int  # failed in this run
    seconds: float


def plan(spec: SweepSpec, store: ResultStore, *, retry_failed: bool = False) -> SweepPlan:
    cells = spec.cells()
    status = store.statuses()
    pending = [c for c in cells if status.get(c.key) != DONE and (retry_failed or status.get(c.key) != FAILED)]
    done = sum(status.get(c.key) == DONE for c in cells)
    failed = sum(status.get(c.key) == FAILED for c in cells) if not retry_failed else 0
    return SweepPlan(tuple(cells), tuple(pending), done, failed)


def run_sweep(spec: SweepSpec, store: ResultStore, executor: Executor, *, retry_failed: bool = False,
              progress: Callable[[SweepProgress], None] | None = None) -> SweepSummary:
    """Run every pending cell of `spec` on `executor`, writing each outcome to `store`."""
    t0 = time.perf_counter()
    work = plan(spec, store, retry_failed=retry_failed)
    store.register_sweep(spec.name, spec.to_json())
    done = failed = 0
    total = len(work.pending)
    if progress:
        progress(SweepProgress(0, 0, total, total, None))
    for outcome in executor.run(work.pending, spec.name):
        row = store.write(outcome.row, outcome.artifacts)
        done += row.status == DONE
        failed += row.status == FAILED
        if progress:
            progress(SweepProgress(done, failed, total - done - failed, total, row))
    log.info("sweep %s: %d done, %d failed, %d skipped", spec.name, done, failed, work.done)
    return SweepSummary(total=len(work.cells), skipped=work.done + work.failed, ran=total, done=done,
                        failed=failed, seconds=time.perf_counter() - t0)


__all__ = ["SweepPlan", "SweepProgress", "SweepSummary", "plan", "run_sweep"]
