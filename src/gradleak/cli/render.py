"""Terminal rendering for the CLI (progress bar, tables) with rich; the library never prints."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True)
out_console = Console()


ETA_AFTER_STEPS = 5  # steps timed before the estimate is printed
ETA_WORTH_SAYING_S = 30.0


def eta_notice(console_: Console = console) -> Callable[[Any], bool]:
    """A callback that, once the first steps are timed, says how long the attack will take
    when that is long (quiet runs too): an honest estimate up front, and how to cap it."""
    state: dict[str, Any] = {"start": None, "said": False}

    def callback(event) -> bool:
        now = time.perf_counter()
        if state["start"] is None:
            state["start"] = (now, event.iteration)
            return False
        t0, it0 = state["start"]
        steps = event.iteration - it0
        if not state["said"] and steps >= ETA_AFTER_STEPS:
            state["said"] = True
            per_step = (now - t0) / steps
            rounds = event.restarts if event.iterations and event.running == 1 and event.restarts > 1 else 1
            remaining = per_step * (event.iterations - event.iteration) * rounds
            if remaining > ETA_WORTH_SAYING_S:
                console_.print(f"this attack will take about {remaining:.0f} s more ({per_step * 1000:.0f} ms per "
                               f"step, {event.iterations} steps); --max-seconds caps it", highlight=False)
        return False

    return callback


@contextlib.contextmanager
def attack_progress(enabled: bool = True) -> Iterator:
    """One progress bar for the attack: the best running restart, how many still run, its loss.

    Restarts that run one after another (restart_mode "sequential") restart the bar. The
    expected time is said up front when it is long, also when the bar is off.
    """
    eta = eta_notice()
    if not enabled:
        yield eta
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
        eta(event)
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
    summary = result.metrics.means()
    verdict = result.verdict
    colour = {"leaked": "red", "partly leaked": "yellow"}.get(verdict.overall.value, "green")
    rows = [("verdict", f"[bold {colour}]{verdict.overall.value}[/]: {verdict.leaked} leaked, {verdict.partly} partly "
                        f"of {len(verdict.per_sample)}"),
            ("PSNR (dB, mean)", f"{summary['psnr']:.2f}"), ("PSNR (dB, max)", f"{summary['psnr_max']:.2f}"),
            ("flat-colour baseline (dB)", f"{summary['baseline_psnr']:.2f} (gain {summary['psnr'] - summary['baseline_psnr']:+.2f})")]
    for name in result.metrics.values:
        if name != "psnr":
            rows.append((name.upper() if name in ("ssim", "mse") else name,
                         f"{summary[name]:.3e}" if name == "mse" else f"{summary[name]:.4f}"))
    if "label_accuracy" in summary:
        rows.append(("label accuracy", f"{summary['label_accuracy']:.2f}"))
    rows += [
        ("gradient mismatch", "-" if result.gradient_mismatch is None else f"{result.gradient_mismatch:.3g}"),
        ("attack status", result.status),
        ("assumption levels", ", ".join(f"{int(a)} {a.name.lower()}" for a in result.assumptions)),
        ("labels", result.label_knowledge.value),
        ("defenses", " then ".join(result.defenses) or "none"),
        ("attack time (s)", f"{result.timings['attack_s']:.1f}"),
        ("iterations", str(result.timings["attack_iterations"])),
        ("restart losses", ", ".join(f"{v:.2e}" for v in result.restart_losses)),
        ("restarts", f"{result.restart_mode}: " + ", ".join(result.restart_statuses)),
    ]
    if result.server is not None:
        s = result.server
        rows += [("server", f"{s.spec} (level {int(s.assumption)})"),
                 ("recovered >= 40 dB / >= 18 dB", f"{s.recovered_40:.1%} / {s.recovered_18:.1%}"),
                 ("expected before the attack", "-" if s.expected_fraction is None else
                  f"{s.expected_fraction:.1%} (all: {s.p_all:.2g})")]
    if result.privacy is not None:
        rows.append(("DP-SGD (epsilon, delta)", f"({result.privacy.epsilon:.3g}, {result.privacy.delta:g})"))
    if result.peak_memory_bytes is not None:
        rows.append(("peak memory (MiB)", f"{result.peak_memory_bytes / 2**20:.0f}"))
    rows += [("note", note) for note in result.notes]
    for name, value in rows:
        table.add_row(name, value)
    out_console.print(table)
    out_console.print(f"wrote {out / 'reconstruction.png'} and {out / 'metrics.json'}")


def registry_tables() -> None:
    from gradleak.attacks import ATTACKS
    from gradleak.attacks.engine.labels import LABEL_RULES
    from gradleak.data import DATASETS
    from gradleak.defenses import DEFENSES
    from gradleak.metrics import METRICS
    from gradleak.models import MODELS
    from gradleak.server import SERVERS

    registries = (("attacks", ATTACKS), ("label rules (--attack-opt label_rule=NAME)", LABEL_RULES),
                  ("defenses (--defense NAME:KEY=VALUE,...)", DEFENSES), ("models", MODELS), ("datasets", DATASETS),
                  ("metrics", METRICS), ("servers (--server NAME:KEY=VALUE,...)", SERVERS))
    for title, registry in registries:
        table = Table(title=title)
        table.add_column("name")
        table.add_column("description")
        for entry in registry:
            table.add_row(entry.name, entry.summary)
        out_console.print(table)


def rank_table(report, model: str) -> None:
    """R-GAP's rank analysis, one row per weight layer from the input up."""
    table = Table(title=f"gradleak rank: {model} at input {'x'.join(map(str, report.input_shape))}",
                  caption="n unknowns (padded: with zero padding), G gradient, F forward, P padding, "
                          "V virtual constraints; rank of [G; F] rows and of G alone")
    for name in ("layer", "input", "n", "padded", "G", "F", "P", "V", "rank", "rank G", "deficit"):
        table.add_column(name, justify="left" if name in ("layer", "input") else "right", no_wrap=True)
    for layer in report.layers:
        deficit = "-" if layer.deficit is None else str(layer.deficit)
        table.add_row(f"{layer.name} {layer.kind}", "x".join(map(str, layer.input_shape)), str(layer.unknowns),
                      str(layer.padded_unknowns), str(layer.gradient), str(layer.forward), str(layer.padding),
                      str(layer.virtual), "-" if layer.rank is None else str(layer.rank),
                      "-" if layer.gradient_rank is None else str(layer.gradient_rank),
                      f"[red]{deficit}[/red]" if layer.deficit else deficit)
    out_console.print(table)
    if report.risk_index is None:
        out_console.print("risk index: not computed (counts only)")
    else:
        verdict = ("every layer is determined: R-GAP recovers the input exactly" if report.recoverable
                   else "rank deficient: part of the input is not determined by the gradient")
        partial = "" if report.complete else " (over the layers whose rank was affordable)"
        out_console.print(f"risk index {report.risk_index:.4f}{partial}: {verdict}")


def rgap_table(demo, model: str, out: Path) -> None:
    if demo.fallback:
        out_console.print(f"[yellow]{demo.fallback}[/yellow]")
    table = Table(title=f"gradleak rgap: {model}, {len(demo.indices)} image(s) from {demo.dataset_source}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    summary = demo.metrics.means()
    record = demo.record
    verdict = demo.metrics.verdict
    rows = [("verdict", verdict.summary_line()),
            ("PSNR (dB, mean)", f"{summary['psnr']:.2f}"), ("SSIM", f"{summary['ssim']:.4f}"),
            ("MSE", f"{summary['mse']:.3e}"), ("flat-colour baseline (dB)", f"{summary['baseline_psnr']:.2f}"),
            ("attack status", record.status),
            ("labels (y = 2 label - 1)", ", ".join(f"{2 * y - 1:+d}" for y in demo.labels)),
            ("recovered labels", ", ".join(f"{2 * int(y) - 1:+d}" for y in record.labels)),
            ("gradient mismatch", "-" if record.gradient_mismatch is None else f"{record.gradient_mismatch:.2e}"),
            ("time (s)", f"{record.seconds:.2f}")]
    if record.peak_memory_bytes is not None:
        rows.append(("peak memory (MiB)", f"{record.peak_memory_bytes / 2**20:.0f}"))
    for name, value in rows:
        table.add_row(name, value)
    out_console.print(table)
    out_console.print(f"wrote {out / 'rgap.png'}, origin.png, reconstructed.png, rescale_reconstructed.png "
                      f"and metrics.json in {out}")


def utility_table(result, config) -> None:
    """Test accuracy with and without the defense, and the drop."""
    table = Table(title=f"gradleak utility: {config.model} on {config.dataset}, {config.federated.clients} clients, "
                        f"{config.federated.rounds} rounds")
    for column in ("run", "test accuracy", "accuracy by round", "seconds"):
        table.add_column(column, justify="left" if column == "run" else "right")

    def row(name, run):
        curve = " ".join(f"{a:.2f}" for a in run.history[:: max(1, len(run.history) // 5)])
        table.add_row(name, f"{run.accuracy:.3f}", curve, f"{run.seconds:.1f}")

    row("no defense", result.baseline)
    if result.defended is not None:
        name = " then ".join(result.defended.defenses) or "none"
        if result.defended.epsilon_per_round is not None:
            name += f" (epsilon {result.defended.epsilon_per_round:.3g} per round)"
        row(name, result.defended)
    out_console.print(table)
    if result.accuracy_drop is not None:
        out_console.print(f"accuracy drop: {100 * result.accuracy_drop:.1f} points")


def flower_table(result, summary, out: Path) -> None:
    """One row per audited round: accuracy, leakage, identification, IGSA; then the correlations."""
    c = result.config
    table = Table(title=f"gradleak flower: {c.model} on {c.dataset}, {c.clients} clients, {c.rounds} rounds, "
                        f"attack {c.attack}")
    for column in ("round", "verdict", "accuracy", "PSNR", "SSIM", "identified", "IGSA", "audits"):
        table.add_column(column, justify="right")

    def fmt(v, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for r in summary.rows:
        table.add_row(str(r.server_round), r.verdict or "-", f"{r.accuracy:.3f}", fmt(r.psnr, ".1f"), fmt(r.ssim, ".3f"),
                      fmt(r.identified, ".0%"), fmt(r.igsa, ".3f"), str(r.audits))
    out_console.print(table)
    out_console.print(f"final accuracy {result.accuracy[-1]:.3f}; Spearman IGSA vs PSNR "
                      f"{fmt(summary.spearman_igsa_psnr, '+.2f')}, round vs PSNR {fmt(summary.spearman_round_psnr, '+.2f')}; "
                      f"first-round identification {fmt(summary.first_round_identified, '.0%')}")
    out_console.print(f"{result.seconds:.0f} s in all, {summary.audit_seconds:.0f} s auditing; results in {out}/ "
                      f"(leakage.png, audits.jsonl, federation.json)")
