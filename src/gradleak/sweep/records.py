"""Typed records of a sweep: one `Cell` to run, one `CellRow` stored per cell.

A cell is one fully resolved audit setting; its `key` is the SHA-256 of the canonical
JSON of those settings, so the same setting written two ways (a default spelled out or
left implicit) is one cell, and a rerun of the sweep finds it already done.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from gradleak.errors import GradleakError

# Axes whose values are replicates of one setting (an image, a seed or an attack's random
# start), not settings of their own: reports average over them, BRR/WSRR count over them.
REPLICATE_AXES = ("seed", "attack_seed", "indices")

DONE = "done"
FAILED = "failed"


@dataclass(frozen=True)
class Cell:
    """One cell of a sweep: the resolved settings, the swept axes' values and its key."""

    key: str
    settings: Mapping[str, Any]  # AuditConfig.to_dict() of the resolved setting
    axes: Mapping[str, Any]  # dotted axis name -> this cell's value ("attack_options.iterations": 200)
    metrics: tuple[str, ...] = ("psnr", "ssim", "mse")  # the metrics to compute per sample (its kind's names)
    kind: str = "image"  # the cell kind (`gradleak.sweep.cell.CELL_KINDS`) that validates and runs it


@dataclass(frozen=True)
class CellRow:
    """One stored cell: its outcome (done or failed with the error), numbers and artifacts.

    `metrics` holds batch means (psnr, ssim, mse, any perceptual metric, label_accuracy
    when labels were recovered; for text cells token_accuracy, rouge1/2/L, exact);
    `per_sample` the per-image (per-sentence) values in the original batch's order.
    `artifacts` maps an artifact name ("grid": the image grid PNG; "text.json": a text
    cell's sentences) to a file path relative to the store's artifact folder
    (`ResultStore.artifact_dir`).
    """

    key: str
    sweep: str
    settings: Mapping[str, Any]
    axes: Mapping[str, Any]
    status: str  # DONE or FAILED
    metrics: Mapping[str, float] = field(default_factory=dict)
    per_sample: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None  # a failed cell's error (traceback for bugs); on a done cell, a non-ok attack status
    versions: Mapping[str, str] = field(default_factory=dict)
    artifacts: Mapping[str, str] = field(default_factory=dict)
    started: float = 0.0  # unix time the cell started and finished (worker clock)
    finished: float = 0.0
    attempts: int = 1  # how many times the cell has run (failures retried count too)

    @property
    def done(self) -> bool:
        return self.status == DONE


@dataclass(frozen=True)
class CellOutcome:
    """What a worker sends back to the driver: the row and its artifacts' bytes."""

    row: CellRow
    artifacts: Mapping[str, bytes] = field(default_factory=dict)  # name -> file bytes (see `CellRow.artifacts`)


TEXT_ARTIFACT = "text.json"


@dataclass(frozen=True)
class TextCellText:
    """A text cell's sentences: per original its text, its matched reconstruction's text
    and both token by token with their hit flags (`AlignedPair` fields, plain data)."""

    originals: tuple[str, ...]
    reconstructions: tuple[str, ...]  # the matched reconstruction's text per original ("" for none)
    pairs: tuple[Mapping[str, tuple], ...]  # per original: AlignedPair's fields
    status: str
    notes: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "TextCellText":
        try:
            raw = json.loads(data)
            return cls(originals=tuple(raw["originals"]), reconstructions=tuple(raw["reconstructions"]),
                       pairs=tuple({k: tuple(v) for k, v in p.items()} for p in raw["pairs"]),
                       status=str(raw["status"]), notes=tuple(raw.get("notes", ())))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise GradleakError(f"a text cell's {TEXT_ARTIFACT} is damaged: {exc}") from None
