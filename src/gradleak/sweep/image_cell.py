"""Image cells: one `gradleak attack` audit (an `AuditConfig`) per cell, scored by the
registered image metrics, with the originals-over-reconstructions grid as its artifact."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from gradleak.errors import GradleakError
from gradleak.sweep.kinds import CellKind, device_name, plain_defaults
from gradleak.sweep.records import DONE, Cell, CellOutcome, CellRow

if TYPE_CHECKING:
    from gradleak.sweep.summary import Summary


class ImageCells(CellKind):
    name = "image"
    default_metrics = ("psnr", "ssim", "mse")
    key_tag = False  # keys of stores written before cell kinds existed stay valid

    def setting_names(self) -> tuple[str, ...]:
        from gradleak.pipelines.config import config_keys

        return config_keys()

    def accepted_names(self) -> tuple[str, ...]:
        from gradleak.pipelines.config import accepted_keys

        return accepted_keys()

    def check_metrics(self, metrics: tuple[str, ...], where: str) -> None:
        from gradleak.metrics import METRICS, check_metric

        for i, m in enumerate(metrics):
            if m not in METRICS:
                raise GradleakError(f"{where}[{i}]: unknown metric {m!r}; known metrics: {', '.join(METRICS.names())}")
            try:
                check_metric(m)
            except GradleakError as exc:
                raise GradleakError(f"{where}[{i}]: metric {m!r} cannot run here: {exc}") from None

    def resolve(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        from gradleak.attacks import ATTACKS
        from gradleak.models.build import check_model_options, model_options
        from gradleak.pipelines.config import AuditConfig

        config = AuditConfig.from_settings(settings)
        check_model_options(config.model, config.model_options)
        resolved = config.to_dict()
        resolved["attack_options"] = {**plain_defaults(ATTACKS.options(config.attack)), **resolved["attack_options"]}
        resolved["model_options"] = {**plain_defaults(model_options(config.model)), **resolved["model_options"]}
        return resolved

    def run(self, cell: Cell, sweep: str, started: float) -> CellOutcome:
        from gradleak.pipelines.audit import AuditConfig, run_audit
        from gradleak.pipelines.write import audit_grid_png

        run = run_audit(AuditConfig.from_settings(cell.settings))
        result = run.result
        per_sample = {**result.metrics.values, "baseline_psnr": result.metrics.baseline_psnr}
        timings = dict(result.timings)
        if result.peak_memory_bytes is not None:
            timings["peak_memory_mib"] = result.peak_memory_bytes / 2**20
        row = CellRow(key=cell.key, sweep=sweep, settings=cell.settings, axes=cell.axes, status=DONE,
                      metrics=result.metrics.means(), per_sample=per_sample, timings=timings,
                      versions={**result.versions, "device": device_name(result.settings["device_used"])},
                      started=started, finished=time.time(),
                      error=None if result.status == "ok" else f"attack status: {result.status}")
        return CellOutcome(row, {"grid": audit_grid_png(run)})

    def report_section(self, summary: Summary, artifact_dir: Path) -> str:
        from gradleak.sweep.image_html import image_section

        return image_section(summary, artifact_dir)


__all__ = ["ImageCells"]
