"""A sweep's axes, read back from its stored rows: which settings vary, in the sweep's order.

Rows of one store may come from several sweeps with different axes; a row that lacks an
axis holds `UNSET` there. Values are compared by a canonical JSON form, so lists and
mappings are axis values too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from gradleak.sweep.records import REPLICATE_AXES, CellRow


class _Unset:
    """The value of an axis a row does not have (rows of sweeps with other axes)."""

    def __repr__(self) -> str:
        return "(not swept)"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class SweptAxis:
    """A swept axis: its distinct values in sweep order."""

    name: str
    values: tuple[Any, ...]
    numeric: bool  # every value an int or float (not bool): plotted on a number line
    replicate: bool  # a replicate axis (seed, indices), averaged over rather than compared

    @property
    def swept(self) -> bool:
        return len(self.values) > 1


def canonical(value: Any) -> str:
    """A hashable, order-stable identity of an axis value (lists and mappings included)."""
    if value is UNSET:
        return "\0unset"
    return json.dumps(value, sort_keys=True, default=str)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_value(value: Any) -> str:
    """A short human form of an axis or setting value."""
    if value is UNSET:
        return "(not swept)"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _spec_orders(specs: Iterable[Mapping[str, Any]]) -> tuple[list[str], dict[str, list[str]]]:
    """Axis names and each axis's canonical values in file order, from stored sweep specs.

    Specs are read leniently (`{"axes": [{"names": [...], "points": [[...], ...]}]}`, as
    `SweepSpec.to_json` writes): anything else is ignored and first-seen order used.
    """
    names: list[str] = []
    orders: dict[str, list[str]] = {}
    for spec in specs:
        axes = spec.get("axes") if isinstance(spec, Mapping) else None
        for axis in axes if isinstance(axes, list) else []:
            if not isinstance(axis, Mapping):
                continue
            axis_names, points = axis.get("names"), axis.get("points")
            if not (isinstance(axis_names, list) and isinstance(points, list)):
                continue
            for i, name in enumerate(axis_names):
                if not isinstance(name, str):
                    continue
                if name not in names:
                    names.append(name)
                order = orders.setdefault(name, [])
                for point in points:
                    if isinstance(point, list) and i < len(point) and canonical(point[i]) not in order:
                        order.append(canonical(point[i]))
    return names, orders


def swept_axes(rows: Sequence[CellRow], specs: Iterable[Mapping[str, Any]]) -> tuple[SweptAxis, ...]:
    spec_names, spec_orders = _spec_orders(specs)
    seen: list[str] = []
    for row in rows:
        seen += [name for name in row.axes if name not in seen]
    names = [n for n in spec_names if n in seen] + sorted(n for n in seen if n not in spec_names)
    # rows come back in finish order; start order is closer to the grid's order
    by_start = sorted(rows, key=lambda r: (r.started, r.key))
    axes = []
    for name in names:
        distinct: dict[str, Any] = {}
        for row in by_start:
            value = row.axes.get(name, UNSET)
            distinct.setdefault(canonical(value), value)
        numeric = all(is_number(v) for v in distinct.values())
        if numeric:
            ordered = sorted(distinct.values())
        else:
            rank = {c: i for i, c in enumerate(spec_orders.get(name, []))}
            keys = sorted(distinct, key=lambda c: (rank.get(c, len(rank)), list(distinct).index(c)))
            ordered = [distinct[c] for c in keys]
        axes.append(SweptAxis(name, tuple(ordered), numeric, name in REPLICATE_AXES))
    return tuple(axes)


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def fixed_settings(rows: Sequence[CellRow], axes: Sequence[SweptAxis]) -> tuple[tuple[str, Any], ...]:
    fixed = {a.name: a.values[0] for a in axes if not a.swept}
    flats = [_flat(r.settings) for r in rows]
    if flats:
        for key in sorted(flats[0]):
            first = canonical(flats[0][key])
            if key not in fixed and all(key in f and canonical(f[key]) == first for f in flats[1:]):
                fixed[key] = flats[0][key]
    return tuple(fixed.items())



__all__ = ["UNSET", "SweptAxis", "canonical", "fixed_settings", "format_value", "is_number", "swept_axes"]
