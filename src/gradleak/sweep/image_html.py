"""The image cells' section of a sweep report: per setting, its best and worst cell's
originals-over-reconstructions grid (the cell's "grid" artifact), embedded as a PNG."""

from __future__ import annotations

from pathlib import Path

from gradleak.sweep.axes import format_value
from gradleak.sweep.html_parts import KEY_CHARS, data_uri, e, num, setting_label
from gradleak.sweep.records import CellRow
from gradleak.sweep.summary import Summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DISPLAY_WIDTH = 360  # grids narrower than this are shown enlarged


def _artifact(row: CellRow, artifact_dir: Path) -> tuple[bytes | None, str]:
    """The row's grid PNG, or None and why it cannot be shown."""
    rel = row.artifacts.get("grid")
    if rel is None:
        return None, "no grid image stored for this cell"
    path = (artifact_dir / rel).resolve()
    # a store names files inside its artifact folder; anything else is not embedded
    if not path.is_relative_to(artifact_dir.resolve()):
        return None, f"grid path {rel!r} points outside the artifact folder"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"grid image {str(artifact_dir / rel)!r} is missing ({exc.strerror or exc})"
    if not data.startswith(PNG_MAGIC):
        return None, f"grid image {str(artifact_dir / rel)!r} is not a PNG file"
    return data, ""


def _size(png: bytes) -> str:
    """Width/height attributes that enlarge small grids by a whole factor (crisp pixels)."""
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the IHDR chunk
    if not (width and height):
        return ""
    factor = max(1, min(4, DISPLAY_WIDTH // max(width, 1)))
    return f' width="{width * factor}" height="{height * factor}"' if factor > 1 else ""


def _cell_caption(kind: str, row: CellRow, summary: Summary) -> str:
    names = [a.name for a in summary.axes if a.name in row.axes]
    axes = ", ".join(f"{k}={format_value(row.axes[k])}" for k in names)
    caption = f"{kind}: PSNR {num(row.metrics.get('psnr', float('nan')))} dB"
    if summary.perceptual:
        caption += f", {summary.perceptual} {num(row.metrics.get(summary.perceptual, float('nan')))}"
    return f"{caption} — {axes} (cell {row.key[:KEY_CHARS]})"


def image_section(summary: Summary, artifact_dir: Path) -> str:
    """Per setting, the best and worst cell by batch-mean PSNR ("" when no cell has one)."""
    parts = []
    for s in summary.settings:
        if s.best is None or s.worst is None:
            continue
        shown = [("best", s.best)] + ([("worst", s.worst)] if s.worst.key != s.best.key else [])
        figures = []
        for kind, row in shown:
            caption = e(_cell_caption(kind if len(shown) > 1 else "only cell", row, summary))
            data, problem = _artifact(row, artifact_dir)
            if data is None:
                figures.append(f"<figure><p class='warn'>{e(problem)}</p><figcaption>{caption}</figcaption>"
                               f"</figure>")
            else:
                figures.append(f"<figure><img src=\"{data_uri(data)}\"{_size(data)} "
                               f"alt=\"{e(kind)} reconstruction\"><figcaption>{caption}</figcaption></figure>")
        parts.append(f"<h3>{e(setting_label(s))}</h3><div class='strip'>{''.join(figures)}</div>")
    if not parts:
        return ""
    return ("<h2>Best and worst reconstructions</h2><p class='note'>Per setting, the cells with the highest and "
            "lowest batch-mean PSNR: originals over reconstructions.</p>" + "".join(parts))


__all__ = ["image_section"]
