"""The sweep driver: plan the pending cells, claim each before it runs, store each outcome.

A driver commits every finished cell at once, so `gradleak sweep` can be killed at any
moment and rerun: done cells are skipped, failed ones too unless `retry_failed`. Several
drivers started on one store split its cells: each claims a cell in the store just
before handing it to its executor and skips cells another live driver holds or has run
since it planned.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from gradleak.sweep.executors import Executor
from gradleak.sweep.records import DONE, FAILED, Cell, CellRow
from gradleak.sweep.spec import SweepSpec
from gradleak.sweep.store import LEASE_SECONDS, ResultStore

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
    elsewhere: int = 0  # pending cells another driver claimed


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
    seen = store.attempts()
    done = failed = taken = 0
    total = len(work.pending)

    def claimed() -> Iterator[Cell]:
        nonlocal taken
        for cell in work.pending:
            if store.claim(cell.key, seen.get(cell.key, 0)):
                yield cell
            else:  # another driver holds it or has run it
                taken += 1
                if progress:
                    progress(SweepProgress(done, failed, total - done - failed - taken, total, None))

    if progress:
        progress(SweepProgress(0, 0, total, total, None))
    with _Heartbeat(store):
        for outcome in executor.run(claimed(), spec.name):
            row = store.write(outcome.row, outcome.artifacts)
            store.release(row.key)
            done += row.status == DONE
            failed += row.status == FAILED
            if progress:
                progress(SweepProgress(done, failed, total - done - failed - taken, total, row))
    log.info("sweep %s: %d done, %d failed, %d skipped, %d left to other drivers", spec.name, done, failed,
             work.done, taken)
    return SweepSummary(total=len(work.cells), skipped=work.done + work.failed, ran=done + failed, done=done,
                        failed=failed, seconds=time.perf_counter() - t0, elsewhere=taken)


class _Heartbeat:
    """Renews the driver's claims from a thread of its own (a cell can run for hours)."""

    def __init__(self, store: ResultStore) -> None:
        self.path, self.owner = store.path, store.owner
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with ResultStore(self.path, create=False) as own:  # sqlite connections stay in their thread
            while not self.stop.wait(LEASE_SECONDS / 4):
                own.beat(self.owner)

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


__all__ = ["SweepPlan", "SweepProgress", "SweepSummary", "plan", "run_sweep"]
