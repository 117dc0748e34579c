"""Sweep files: a base setting and a grid, validated in full before anything runs.

```yaml
name: table1                    # the sweep's name in the store (default: the file's stem)
kind: image                     # image (default: `gradleak attack` audits) or text (text audits)
metrics: [psnr, ssim, stlpips]  # the kind's metrics per cell (image default psnr, ssim, mse; text: all five)
base:                           # any `gradleak attack` setting (AuditConfig field; text: TextAuditConfig's)
  model: convnet
  model_options: {width: 16}
  attack: ig
  attack_options: {iterations: 200}
grid:                           # the product of every axis
  epochs: [1, 2, 4]
  attack_options.tv: [0.0, 0.01]   # dotted names reach into model_options / attack_options
  seed: {range: [0, 3]}            # Python's range(start, stop[, step])
zip:                            # axes that move together, as extra product factors
  - {protocol: [fedsgd, fedavg], lr: [0.1, 0.01]}
```

Every error names its place in the file (`grid.epochs[2]`) and the allowed keys or
values. A cell's key is the SHA-256 of its canonical resolved settings: AuditConfig's
fields with the attack's and model's option defaults filled in, plus the metrics (and,
for kinds other than image, the kind). The kind is resolved once, here, to a `CellKind`
(`gradleak.sweep.cell.CELL_KINDS`), which checks settings and metrics and builds cells.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gradleak.errors import GradleakError
from gradleak.io import plain_data
from gradleak.sweep.cell import CELL_KINDS
from gradleak.sweep.kinds import CellKind
from gradleak.sweep.records import Cell

TOP_KEYS = ("name", "description", "kind", "metrics", "base", "grid", "zip")
MAX_CELLS = 20_000  # every cell is validated before any runs: a bound on that, and on a store's size


@dataclass(frozen=True)
class GridAxis:
    """One product factor: a single swept setting, or several zipped together."""

    names: tuple[str, ...]
    points: tuple[tuple[Any, ...], ...]  # per point, one value per name
    where: str  # its place in the file ("grid.epochs", "zip[0]")


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: Mapping[str, Any]  # dotted name -> value
    axes: tuple[GridAxis, ...]
    metrics: tuple[str, ...]
    source: str
    description: str = ""
    kind: str = "image"  # a CELL_KINDS name

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "kind": self.kind, "metrics": list(self.metrics),
                "base": plain_data(dict(self.base)),
                "axes": [{"names": list(a.names), "points": plain_data(a.points)} for a in self.axes]}

    def cells(self) -> list[Cell]:
        """Every cell of the grid, in file order; cells that resolve to the same settings appear once."""
        out, seen = [], set()
        kind = CELL_KINDS.get(self.kind)
        for combo in itertools.product(*(a.points for a in self.axes)):
            axes: dict[str, Any] = {}
            for axis, point in zip(self.axes, combo):
                axes.update(zip(axis.names, point))
            where = ", ".join(f"{k}={v!r}" for k, v in axes.items()) or "the base setting"
            cell = kind.make_cell({**self.base, **axes}, axes, self.metrics, f"{self.source}: cell {where}")
            if cell.key not in seen:
                seen.add(cell.key)
                out.append(cell)
        return out


def _values(value: Any, where: str) -> tuple[Any, ...]:
    if isinstance(value, Mapping):
        if set(value) != {"range"}:
            raise GradleakError(f"{where}: a mapping must be {{range: [start, stop, step]}}, got keys {sorted(value)}")
        args = value["range"]
        if not (isinstance(args, list) and 1 <= len(args) <= 3 and all(
                isinstance(a, int) and not isinstance(a, bool) for a in args)):
            raise GradleakError(f"{where}.range: expected 1 to 3 integers like Python's range, got {args!r}")
        if len(args) == 3 and args[2] == 0:
            raise GradleakError(f"{where}.range: the step must not be 0")
        if len(range(*args)) > MAX_CELLS:
            raise GradleakError(f"{where}.range: {len(range(*args)):,} values, more than the {MAX_CELLS:,} cells "
                                "one sweep may hold")
        points = tuple(range(*args))
    elif isinstance(value, list):
        points = tuple(value)
    else:
        raise GradleakError(f"{where}: expected a list of values or {{range: [...]}}, got {value!r}")
    if not points:
        raise GradleakError(f"{where}: the axis has no values")
    return points


def _read(path: Path) -> dict[str, Any]:
    from gradleak.io import read_yaml_mapping

    data = read_yaml_mapping(path, "sweep file")
    unknown = sorted(set(map(str, data)) - set(TOP_KEYS))
    if unknown:
        raise GradleakError(f"{path}: unknown top-level keys {unknown}; allowed: {', '.join(TOP_KEYS)}")
    return data


def load_sweep(path: str | Path, *, device: str | None = None) -> SweepSpec:
    """Read and validate a sweep file: every key, every axis value, then every cell.
    `device` (the CLI's --device) replaces the file's device for every cell."""
    path = Path(path)
    data = _read(path)
    if device is not None:
        base = data.get("base") or {}
        if not isinstance(base, Mapping):
            raise GradleakError(f"{path}: base must be a mapping of settings, got {base!r}")
        if "device" in (data.get("grid") or {}):
            raise GradleakError(f"{path}: the grid sweeps device; --device would override it")
        data = {**data, "base": {**base, "device": device}}
    src = str(path)
    if not data:
        raise GradleakError(f"{src}: the sweep file is empty: give it a base setting, a grid or zipped axes")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name.strip()):
        # the name becomes the default store's file name (runs/<name>.sqlite)
        raise GradleakError(f"{src}: name must be letters, digits, '.', '_' or '-' (a file name), got {name!r}")
    kind = _kind(data.get("kind", "image"), src)
    metrics = data.get("metrics", list(kind.default_metrics))
    if not (isinstance(metrics, list) and metrics and all(isinstance(m, str) for m in metrics)):
        raise GradleakError(f"{src}: metrics must be a non-empty list of metric names, got {metrics!r}")
    kind.check_metrics(tuple(metrics), f"{src}: metrics")
    base = data.get("base") or {}
    if not isinstance(base, Mapping):
        raise GradleakError(f"{src}: base must be a mapping of settings, got {base!r}")
    base = kind.flatten(base, f"{src}: base")

    axes: list[GridAxis] = []
    grid = data.get("grid") or {}
    if not isinstance(grid, Mapping):
        raise GradleakError(f"{src}: grid must be a mapping of setting -> values, got {grid!r}")
    for key, value in grid.items():
        key = str(key).replace("-", "_")
        kind.check_keys({key: None}, f"{src}: grid")
        where = f"grid.{key}"
        axes.append(GridAxis((key,), tuple((v,) for v in _values(value, f"{src}: {where}")), where))
    zipped = data.get("zip") or []
    if not isinstance(zipped, list):
        raise GradleakError(f"{src}: zip must be a list of mappings of equally long lists, got {zipped!r}")
    for i, group in enumerate(zipped):
        where = f"zip[{i}]"
        if not isinstance(group, Mapping) or not group:
            raise GradleakError(f"{src}: {where} must be a mapping of setting -> list, got {group!r}")
        names = tuple(str(k).replace("-", "_") for k in group)
        kind.check_keys(dict.fromkeys(names), f"{src}: {where}")
        columns = [_values(v, f"{src}: {where}.{k}") for k, v in zip(names, group.values())]
        if len({len(c) for c in columns}) != 1:
            lengths = {k: len(c) for k, c in zip(names, columns)}
            raise GradleakError(f"{src}: {where}: zipped axes must have equal lengths, got {lengths}")
        axes.append(GridAxis(names, tuple(zip(*columns)), where))
    count = math.prod(len(a.points) for a in axes)
    if count > MAX_CELLS:
        raise GradleakError(f"{src}: the grid has {count:,} cells, more than the {MAX_CELLS:,} one sweep may hold; "
                            "split it into several sweeps")
    all_names = [n for a in axes for n in a.names]
    repeated = sorted({n for n in all_names if all_names.count(n) > 1})
    if repeated:
        raise GradleakError(f"{src}: {repeated} swept by more than one axis")

    # each value alone on the base first, so an error points at the value, not a combination
    for axis in axes:
        for j, point in enumerate(axis.points):
            where = f"{src}: {axis.where}[{j}]" if len(axis.names) == 1 else f"{src}: {axis.where} point {j}"
            kind.make_cell({**base, **dict(zip(axis.names, point))}, {}, tuple(metrics), where)
    spec = SweepSpec(name=name.strip(), base=base, axes=tuple(axes), metrics=tuple(metrics), source=src,
                     description=str(data.get("description") or ""), kind=kind.name)
    spec.cells()  # every combination, validated before any runs
    return spec


def _kind(name: Any, src: str) -> CellKind:
    """The sweep's cell kind, resolved once for the whole file."""
    if not isinstance(name, str) or name not in CELL_KINDS:
        raise GradleakError(f"{src}: kind: unknown cell kind {name!r}; known cell kinds: {', '.join(CELL_KINDS.names())}")
    return CELL_KINDS.get(name)


def make_cell(flat: Mapping[str, Any], axes: Mapping[str, Any], metrics: tuple[str, ...], where: str,
              kind: str = "image") -> Cell:
    """Build and validate one cell of `kind` from dotted settings; errors are prefixed with `where`."""
    return CELL_KINDS.get(kind).make_cell(flat, axes, metrics, where)


__all__ = ["GridAxis", "SweepSpec", "load_sweep", "make_cell"]
