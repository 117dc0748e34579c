"""A sweep's stored rows as CSV: one line per cell, settings, metrics and per-image values."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from gradleak.io import atomic_write_text
from gradleak.sweep.axes import UNSET
from gradleak.sweep.records import CellRow
from gradleak.sweep.summary import metric_names


def _csv_value(value: Any, none: str = "") -> str:
    if value is UNSET:
        return ""
    if value is None:
        return none
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def csv_text(rows: Sequence[CellRow]) -> str:
    """The CSV `write_csv` writes."""
    axes = sorted({a for r in rows for a in r.axes})
    metrics = list(metric_names(rows))
    timings = sorted({t for r in rows for t in r.timings})
    groups = (("axis", axes), ("metric", metrics), ("time", timings))
    fixed = ["key", "sweep", "status", "attempts"]
    taken = list(fixed)
    header = list(fixed)
    for kind, names in groups:
        for name in names:
            # plain names read best; a name used twice gets its kind as a prefix
            column = name if name not in taken and sum(name in n for _, n in groups) == 1 else f"{kind}.{name}"
            taken.append(column)
            header.append(column)
    header.append("error")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        writer.writerow([r.key, r.sweep, r.status, r.attempts]
                        + [_csv_value(r.axes.get(a, UNSET), none="null") for a in axes]  # None is a value
                        + [_csv_value(r.metrics.get(m)) for m in metrics]
                        + [_csv_value(r.timings.get(t)) for t in timings]
                        + [r.error or ""])
    return buffer.getvalue()


def write_csv(rows: Sequence[CellRow], path: str | os.PathLike[str]) -> Path:
    """One line per row (key, sweep, status, attempts, axes, metric means, timings, error), atomically."""
    return atomic_write_text(path, csv_text(rows))


__all__ = ["csv_text", "write_csv"]
