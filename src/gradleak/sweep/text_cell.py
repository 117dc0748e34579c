"""Text cells: one text audit (`gradleak.pipelines.text_audit.TextAuditConfig`) per cell.

A text cell's settings are `TextAuditConfig`'s fields (model, attack, batch_size,
max_length, protocol, lora_rank, defenses, noise, seed, ...); its metrics are the text
metrics (`gradleak.text.metrics.METRIC_NAMES`: token_accuracy, rouge1, rouge2, rougeL,
exact), stored as batch means with the per-sentence values; its artifact "text.json"
holds the originals and reconstructions, aligned token by token (`TextCellText`, in
`gradleak.sweep.records` so the report's text section reads it without importing the
cells), which the report shows (`gradleak.sweep.text_html`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from gradleak.errors import GradleakError
from gradleak.sweep.kinds import CellKind, device_name, plain_defaults
from gradleak.sweep.records import (
    DONE,
    TEXT_ARTIFACT,
    Cell,
    CellOutcome,
    CellRow,
    TextCellText,
)
from gradleak.text.metrics import METRIC_NAMES

if TYPE_CHECKING:
    from gradleak.sweep.summary import Summary

class TextCells(CellKind):
    name = "text"
    default_metrics = METRIC_NAMES

    def setting_names(self) -> tuple[str, ...]:
        from gradleak.pipelines.text_audit import text_config_keys

        return text_config_keys()

    def check_metrics(self, metrics: tuple[str, ...], where: str) -> None:
        for i, m in enumerate(metrics):
            if m not in METRIC_NAMES:
                raise GradleakError(f"{where}[{i}]: unknown text metric {m!r}; known text metrics: "
                                    f"{', '.join(METRIC_NAMES)}")

    def resolve(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        from gradleak.attacks.text import TEXT_ATTACKS
        from gradleak.pipelines.text_audit import TextAuditConfig
        from gradleak.text.models import TEXT_MODELS

        config = TextAuditConfig.from_settings({k: v for k, v in settings.items() if k != "metrics"})
        resolved = config.to_dict()
        fixed = ("vocab_size", "seed", "max_length", "num_classes")
        resolved["attack_options"] = {**plain_defaults(TEXT_ATTACKS.options(config.attack)),
                                      **resolved["attack_options"]}
        resolved["model_options"] = {**plain_defaults(TEXT_MODELS.options(config.model, fixed=fixed)),
                                     **resolved["model_options"]}
        return resolved

    def run(self, cell: Cell, sweep: str, started: float) -> CellOutcome:
        from gradleak.devices import resolve_device
        from gradleak.pipelines.audit import versions
        from gradleak.pipelines.text_audit import TextAuditConfig, run_text_audit

        config = TextAuditConfig.from_settings(cell.settings)
        run = run_text_audit(config)
        scores, rec = run.metrics, run.reconstruction
        text = TextCellText(
            originals=run.original_texts,
            reconstructions=tuple(run.reconstruction_texts[j] if j >= 0 else "" for j in scores.assignment),
            pairs=tuple(dataclasses.asdict(p) for p in run.pairs), status=rec.status, notes=rec.notes)
        metrics = {m: scores.mean(m) for m in cell.metrics}
        metrics["returned"] = len(rec.sequences) / len(run.originals)  # sequences returned per original
        row = CellRow(key=cell.key, sweep=sweep, settings=cell.settings, axes=cell.axes, status=DONE,
                      metrics=metrics, per_sample={m: scores.values[m] for m in cell.metrics},
                      timings=dict(run.timings), versions={**versions(), **_text_versions(),
                                                           "device": device_name(str(resolve_device(config.device)))},
                      started=started, finished=time.time(),
                      error=None if rec.status == "ok" else f"attack status: {rec.status}")
        return CellOutcome(row, {TEXT_ARTIFACT: text.to_bytes()})

    def report_section(self, summary: Summary, artifact_dir: Path) -> str:
        from gradleak.sweep.text_html import text_section

        return text_section(summary, artifact_dir)


def _text_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("transformers", "tokenizers"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


__all__ = ["TEXT_ARTIFACT", "TextCellText", "TextCells"]
