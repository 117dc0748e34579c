"""Where cells run: local processes or a Ray cluster, behind one small interface.

An executor takes the pending cells and yields each `CellOutcome` as it finishes, in
any order; the driver is the single writer of the store. At most `2 * workers` cells
are in flight, so an interrupted sweep loses at most that many cells' work.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from typing import Iterable, Iterator, Sequence

from gradleak.checks import check_number
from gradleak.errors import GradleakError
from gradleak.registry import Registry
from gradleak.sweep.cell import CellOutcome, init_worker, run_cell
from gradleak.sweep.records import Cell

log = logging.getLogger(__name__)


def fair_threads(workers: int, cores: int | None = None) -> int:
    """Torch threads per worker: an equal share of the cores, at least one."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers)


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GradleakError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class Executor(ABC):
    """Runs cells and yields their outcomes as they finish."""

    name: str = ""

    def __init__(self, workers: int = 1, threads: int | None = None) -> None:
        self.workers = _check_count("workers", workers)
        self.threads = fair_threads(self.workers) if threads is None else _check_count("threads", threads)

    @abstractmethod
    def run(self, cells: Iterable[Cell], sweep: str) -> Iterator[CellOutcome]: ...


EXECUTORS: Registry[type[Executor]] = Registry("executor")


@EXECUTORS.register("local", "processes on this machine, each pinned to a fair share of the cores or to a GPU")
class LocalExecutor(Executor):
    """`workers` spawned processes; with one worker, cells run in this process (no start-up cost).

    With `gpus` (the indices of the GPUs to use), worker i sees only GPU gpus[i % len(gpus)]
    (CUDA_VISIBLE_DEVICES), so a cell's "cuda" or "auto" device is its worker's GPU; by
    default one worker per GPU, and `workers` larger than that lets several share a GPU.
    """

    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None,
                 gpus: Sequence[int] | None = None) -> None:
        self.gpus = tuple(gpus) if gpus is not None else None
        if self.gpus is not None and (not self.gpus or not all(isinstance(g, int) and g >= 0 for g in self.gpus)):
            raise GradleakError(f"gpus must be a non-empty list of GPU indices, got {gpus!r}")
        super().__init__(workers if workers is not None else len(self.gpus or ()) or 1, threads)

    def run(self, cells: Iterable[Cell], sweep: str) -> Iterator[CellOutcome]:
        # cells are drawn one at a time: a driver claims each only when it is about to run
        if self.workers == 1 and self.gpus is None:
            init_worker(self.threads)
            for cell in cells:
                yield run_cell(cell, sweep)
            return
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        # spawn, not fork: forking a process that already runs torch's thread pools can hang
        context = multiprocessing.get_context("spawn")
        slots = None
        if self.gpus is not None:
            slots = context.Queue()  # each worker takes the next GPU as it starts
            for i in range(self.workers):
                slots.put(self.gpus[i % len(self.gpus)])
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=init_worker,
                                   initargs=(self.threads, os.getpid(), slots))
        try:
            queue = iter(cells)
            running = set()
            while True:
                while len(running) < 2 * self.workers:
                    cell = next(queue, None)
                    if cell is None:
                        break
                    running.add(pool.submit(run_cell, cell, sweep))
                if not running:
                    return
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


@EXECUTORS.register("ray", "a Ray cluster (--address) or a local Ray started for the sweep")
class RayExecutor(Executor):
    """Cells as Ray tasks of `threads` CPUs and `gpus_per_cell` GPUs each (0.25: four cells share
    a GPU; Ray pins each task to its GPU), so a cluster with GPUs spreads a sweep over all of
    them; every node needs gradleak installed."""

    name = "ray"

    def __init__(self, workers: int = 1, threads: int | None = None, address: str | None = None,
                 gpus_per_cell: float = 0.0) -> None:
        super().__init__(workers, threads)
        self.gpus_per_cell = check_number("gpus_per_cell", gpus_per_cell, low=0)
        from importlib.util import find_spec

        # checked here, before the driver creates a store for a sweep that cannot run
        if find_spec("ray") is None:
            raise GradleakError("--executor ray needs Ray: pip install 'ray[default]' (or the project's [ray] extra)")
        self.address = address

    def run(self, cells: Iterable[Cell], sweep: str) -> Iterator[CellOutcome]:
        import ray
        started_here = not ray.is_initialized()
        if started_here:
            options = {"address": self.address} if self.address else {"num_cpus": self.workers * self.threads}
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **options)
        task = ray.remote(num_cpus=self.threads, num_gpus=self.gpus_per_cell)(_ray_cell)
        try:
            queue = iter(cells)
            running: list = []
            while True:
                while len(running) < 2 * self.workers:
                    cell = next(queue, None)
                    if cell is None:
                        break
                    running.append(task.remote(cell, sweep, self.threads))
                if not running:
                    return
                finished, running = ray.wait(running, num_returns=1)
                for ref in finished:
                    yield ray.get(ref)
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()


def _ray_cell(cell: Cell, sweep: str, threads: int) -> CellOutcome:
    init_worker(threads)
    return run_cell(cell, sweep)


def make_executor(name: str, *, workers: int | None = None, threads: int | None = None,
                  address: str | None = None, gpus: Sequence[int] | None = None,
                  gpus_per_cell: float = 0.0) -> Executor:
    """The executor `name`. Local: `gpus` pins workers to GPUs. Ray: `gpus_per_cell`."""
    cls = EXECUTORS.get(name)
    if cls is RayExecutor:
        if gpus is not None:
            raise GradleakError("--gpus is for --executor local; Ray places cells on GPUs with --gpus-per-cell")
        return cls(workers or 1, threads, address, gpus_per_cell)
    if address is not None:
        raise GradleakError(f"--address is for --executor ray, got executor {name!r}")
    if gpus_per_cell:
        raise GradleakError(f"--gpus-per-cell is for --executor ray, got executor {name!r}")
    return cls(workers, threads, gpus)


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "fair_threads", "make_executor"]
