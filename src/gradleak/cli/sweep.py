"""`gradleak sweep FILE`: run a YAML grid of audits into a resumable SQLite store."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Iterator

from gradleak.errors import GradleakError


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a YAML grid of audits into a resumable SQLite store",
                       description="Run every cell of a sweep file. Kill it at any time and rerun: "
                                   "finished cells are kept and skipped.")
    p.add_argument("file", help="sweep file (YAML: name, metrics, base, grid, zip)")
    p.add_argument("--store", help="SQLite result store (default runs/<name>.sqlite)")
    p.add_argument("--executor", default="local", help="local (processes) or ray (default local)")
    p.add_argument("--workers", type=int, help="cells run at once (default 1, or one per GPU with --gpus)")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--address", help="Ray cluster address (--executor ray; default: start a local Ray)")
    p.add_argument("--device", help="device of every cell, over the file's setting (auto, cpu, cuda, cuda:N, mps)")
    p.add_argument("--gpus", type=int, nargs="+", metavar="INDEX",
                   help="--executor local: pin workers to these GPUs, one worker each unless --workers says "
                        "more (they then share); default: every visible GPU when the cells run on cuda")
    p.add_argument("--gpus-per-cell", type=float, default=0.0,
                   help="--executor ray: GPUs per cell (0.25: four cells share a GPU; default 0)")
    p.add_argument("--retry-failed", action="store_true", help="rerun cells that failed before")
    p.add_argument("--dry-run", action="store_true", help="validate and count the cells, run nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)


@contextlib.contextmanager
def _progress(enabled: bool, name: str) -> Iterator:
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from gradleak.cli.render import console

    bar = Progress(TextColumn(f"{name}: " + "{task.fields[done]} done, {task.fields[failed]} failed, "
                              "{task.fields[remaining]} remaining"),
                   BarColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
    task = None

    def update(p) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task(name, total=p.total, done=0, failed=0, remaining=p.remaining)
        bar.update(task, completed=p.done + p.failed, done=p.done, failed=p.failed, remaining=p.remaining)

    with bar:
        yield update


def _cells_use_cuda(spec) -> bool:
    from gradleak.devices import resolve_device

    devices = {c.settings["device"] for c in spec.cells()}
    return any(d.startswith("cuda") or (d == "auto" and resolve_device("auto").type == "cuda") for d in devices)


def cmd_sweep(args: argparse.Namespace) -> int:
    import torch

    from gradleak.cli.render import out_console
    from gradleak.sweep.executors import make_executor
    from gradleak.sweep.run import plan, run_sweep
    from gradleak.sweep.spec import load_sweep
    from gradleak.sweep.store import ResultStore

    spec = load_sweep(args.file, device=args.device)
    gpus = args.gpus
    if gpus is None and args.executor == "local" and _cells_use_cuda(spec) and torch.cuda.device_count() > 1:
        gpus = list(range(torch.cuda.device_count()))
    executor = make_executor(args.executor, workers=args.workers, threads=args.threads, address=args.address,
                             gpus=gpus, gpus_per_cell=args.gpus_per_cell)
    store_path = Path(args.store) if args.store else Path("runs") / f"{spec.name}.sqlite"
    if args.dry_run:
        cells = spec.cells()
        if store_path.is_file():
            with ResultStore(store_path, readonly=True) as store:
                work = plan(spec, store, retry_failed=args.retry_failed)
            out_console.print(f"{spec.name}: {len(cells)} cells, {work.done} done, {work.failed} failed, "
                              f"{len(work.pending)} to run (store {store_path})")
        else:
            out_console.print(f"{spec.name}: {len(cells)} cells, all to run (store {store_path} not created yet)")
        return 0
    with ResultStore(store_path) as store, _progress(not args.quiet, spec.name) as progress:
        summary = run_sweep(spec, store, executor, retry_failed=args.retry_failed, progress=progress)
    elsewhere = f", {summary.elsewhere} run by another driver" if summary.elsewhere else ""
    out_console.print(f"{spec.name}: {summary.total} cells; {summary.skipped} kept from earlier runs{elsewhere}, "
                      f"{summary.done} done and {summary.failed} failed in {summary.seconds:.1f} s "
                      f"({args.executor}, {executor.workers} worker(s) x {executor.threads} thread(s)); "
                      f"store {store_path}")
    if summary.failed:
        raise GradleakError(f"{summary.failed} cell(s) failed; see `gradleak report {store_path}` and rerun "
                            f"with --retry-failed")
    return 0
