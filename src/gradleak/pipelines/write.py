"""Write an audit's report: metrics.json, config.yaml and the reconstruction grid (and, for an
attack run with a generator checkpoint, latent_evidence.json and nearest_training.png).

One writer for every face: `gradleak attack` writes a folder with it, a sweep cell stores
its grid, and the Flower audit renders its grids the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from gradleak.errors import GradleakError
from gradleak.io import plain_data, write_folder
from gradleak.pipelines.audit import AuditRun
from gradleak.pipelines.figures import grid_png, save_image
from gradleak.pipelines.generator import latent_report


def audit_title(run: AuditRun) -> str:
    """The figure's title, the verdict first: 'LEAKED (4 of 4) - idlg on lenet, fedsgd: PSNR 44.0 dB'."""
    result = run.result
    s = result.settings
    verdict = result.verdict
    count = {"leaked": verdict.leaked, "partly leaked": verdict.leaked + verdict.partly}.get(
        verdict.overall.value, len(verdict.per_sample))
    ssim = f", SSIM {result.metrics.ssim_mean:.3f}" if "ssim" in result.metrics.values else ""
    return (f"{verdict.overall.value.upper()} ({count} of {len(verdict.per_sample)}) - {s['attack']} on "
            f"{s['model']}, {s['protocol']}: PSNR {result.metrics.psnr_mean:.1f} dB{ssim}")


def unit_labels(run: AuditRun) -> list[str] | None:
    """Per original, the bin or units its matched reconstruction was read from, when a
    malicious server's read-out says ("bin 57", "unit 3,40", "-": none); else None."""
    result = run.result
    if result.server is None or not result.units:
        return None
    kind = "bin" if result.server.spec.startswith("imprint") else "unit"
    out = []
    for j in result.metrics.assignment:
        units = result.units[j] if j < len(result.units) else ()
        out.append(f"{kind} {','.join(map(str, units[:2]))}{'..' if len(units) > 2 else ''}" if units else "-")
    return out


def audit_grid_png(run: AuditRun, *, title: str | None = None) -> bytes:
    """The reconstruction grid of an audit (originals, reconstructions, rescaled) as PNG
    bytes; a malicious server's read-out labels each column with its bin or units."""
    return grid_png(run.original, run.reconstruction, psnr=list(run.result.metrics.psnr), title=title,
                    labels=unit_labels(run))


def write_audit(out: str | Path, run: AuditRun, *, overwrite: bool = False) -> Path:
    """Write the audit's report folder atomically: a failure leaves `out` as it was."""
    import yaml

    out = Path(out)

    def fill(tmp: Path) -> None:
        result = run.result
        (tmp / "metrics.json").write_text(json.dumps(result.to_json(), indent=2, default=str))
        (tmp / "config.yaml").write_text(yaml.safe_dump(plain_data(dict(result.settings)), sort_keys=True))
        (tmp / "reconstruction.png").write_bytes(audit_grid_png(run, title=audit_title(run)))
        latent = latent_report(run)  # attacks with a generator checkpoint: its nearest training images
        if latent is not None:
            (tmp / "latent_evidence.json").write_text(json.dumps(latent[0], indent=2))
            save_image(tmp / "nearest_training.png", latent[1])

    if out.exists() and not overwrite:
        raise GradleakError(f"output folder {str(out)!r} exists; pass --overwrite to replace it")
    return write_folder(out, fill)


__all__ = ["audit_grid_png", "audit_title", "unit_labels", "write_audit"]
