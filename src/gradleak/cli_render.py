"""Terminal rendering for the CLI (progress bar, tables) with rich; the library never prints."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)
out_console = Console()


@contextlib.contextmanager
def attack_progress(enabled: bool = True) -> Iterator:
    """One progress bar for the attack: the best running restart, how many still run, its loss.

    Restarts that run one after another (restart_mode "sequential") restart the bar.
    """
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("best restart {task.fields[restart]} ({task.fields[running]} running)"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    state = {"task": None, "last": 0}

    def callback(event) -> bool:
        if state["task"] is None or event.iteration < state["last"]:  # first step, or the next sequential restart
            if state["task"] is not None:
                progress.update(state["task"], total=state["last"])
            state["task"] = progress.add_task("attack", total=event.iterations, restart="-", running=0, loss="-")
        state["last"] = event.iteration
        progress.update(state["task"], completed=event.iteration, restart=f"{event.restart + 1}/{event.restarts}",
                        running=event.running, loss=f"{event.loss:.3e}")
        return False

    with progress:
        yield callback


def metrics_table(run, out: Path) -> None:
    result = run.result
    table = Table(title=f"gradleak attack: {result.settings['attack']} on {result.settings['model']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    summary = result.metrics.summary()
    rows = [("PSNR (dB, mean)", f"{summary['psnr']:.2f}"), ("PSNR (dB, max)", f"{summary['psnr_max']:.2f}"),
            ("SSIM", f"{summary['ssim']:.4f}"), ("MSE", f"{summary['mse']:.3e}")]
    if "label_accuracy" in summary:
        rows.append(("label accuracy", f"{summary['label_accuracy']:.2f}"))
    rows += [
        ("status", result.status),
        ("assumption levels", ", ".join(f"{int(a)} {a.name.lower()}" for a in result.assumptions)),
        ("labels", result.label_knowledge.value),
        ("attack time (s)", f"{result.timings['attack_s']:.1f}"),
        ("iterations", str(result.timings["attack_iterations"])),
        ("restart losses", ", ".join(f"{v:.2e}" for v in result.restart_losses)),
        ("restarts", f"{result.restart_mode}: " + ", ".join(result.restart_statuses)),
    ]
    if result.peak_memory_bytes is not None:
        rows.append(("peak memory (MiB)", f"{result.peak_memory_bytes / 2**20:.0f}"))
    for name, value in rows:
        table.add_row(name, value)
    out_console.print(table)
    out_console.print(f"wrote {out / 'reconstruction.png'} and {out / 'metrics.json'}")


def registry_tables() -> None:
    from gradleak.attacks import ATTACKS
    from gradleak.attacks.labels import LABEL_RULES
    from gradleak.data import DATASETS
    from gradleak.metrics import METRICS
    from gradleak.models import MODELS

    registries = (("attacks", ATTACKS), ("label rules (--attack-opt label_rule=NAME)", LABEL_RULES),
                  ("models", MODELS), ("datasets", DATASETS), ("metrics", METRICS))
    for title, registry in registries:
        table = Table(title=title)
        table.add_column("name")
        table.add_column("description")
        for entry in registry:
            table.add_row(entry.name, entry.summary)
        out_console.print(table)
