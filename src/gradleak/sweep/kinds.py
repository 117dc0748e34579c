"""What a sweep's cells are: a `CellKind` validates a cell's settings and runs it.

A sweep file names its kind once (`kind: image`, the default, or `kind: text`); the spec
resolves it to one `CellKind` in `gradleak.sweep.cell.CELL_KINDS`, and every cell carries
its kind's name, so the worker that runs it asks the same registry. What is common (the
dotted option names, the cell's key) lives here; each kind supplies its settings, its
metrics, how it resolves defaults, how it runs and its section of the report page.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from gradleak.errors import GradleakError
from gradleak.io import plain_data
from gradleak.sweep.records import Cell, CellOutcome

if TYPE_CHECKING:
    from gradleak.sweep.summary import Summary


class CellKind(ABC):
    """One kind of sweep cell: its settings, its metrics, and how to run one."""

    name: ClassVar[str]
    default_metrics: ClassVar[tuple[str, ...]]
    nested: ClassVar[tuple[str, ...]] = ("attack_options", "model_options")  # reached by dotted names
    key_tag: ClassVar[bool] = True  # the kind's name enters the cell key (image keys predate kinds: False)

    @abstractmethod
    def setting_names(self) -> tuple[str, ...]:
        """The settings a cell of this kind takes, in the order error messages list them."""

    def accepted_names(self) -> tuple[str, ...]:
        """`setting_names` and any still read under an old name."""
        return self.setting_names()

    @abstractmethod
    def check_metrics(self, metrics: tuple[str, ...], where: str) -> None:
        """Raise, naming `where[i]` and the known metrics, for a metric this kind cannot compute."""

    @abstractmethod
    def resolve(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The checked settings (plain data) with every default filled in: what keys a cell."""

    @abstractmethod
    def run(self, cell: Cell, sweep: str, started: float) -> CellOutcome:
        """Run one cell (a GradleakError or a crash is turned into a failed row by the caller)."""

    @abstractmethod
    def report_section(self, summary: Summary, artifact_dir: Path) -> str:
        """This kind's part of the sweep report page (HTML, every stored string escaped):
        what its cells' artifacts under `artifact_dir` show; "" for nothing."""

    def check_keys(self, settings: Mapping[str, Any], where: str) -> None:
        allowed = self.accepted_names()
        for key in settings:
            head = key.split(".", 1)[0]
            if head == "metrics":
                raise GradleakError(f"{where}.metrics: the metrics of a sweep are its top-level 'metrics' list")
            if head not in allowed or ("." in key and head not in self.nested):
                raise GradleakError(f"{where}.{key}: unknown setting; allowed: {', '.join(self.setting_names())}, "
                                    f"and {'/'.join(self.nested)}.NAME for one option")

    def flatten(self, mapping: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Nested option mappings become dotted names; other keys stay as they are."""
        out: dict[str, Any] = {}
        for key, value in mapping.items():
            key = str(key).replace("-", "_")
            if key in self.nested and isinstance(value, Mapping):
                for sub, v in value.items():
                    out[f"{key}.{str(sub).replace('-', '_')}"] = v
            else:
                out[key] = value
        self.check_keys(out, where)
        return out

    def make_cell(self, flat: Mapping[str, Any], axes: Mapping[str, Any], metrics: tuple[str, ...],
                  where: str) -> Cell:
        """Build and validate one cell from dotted settings; errors are prefixed with `where`."""
        settings: dict[str, Any] = {name: {} for name in self.nested}
        for key, value in flat.items():
            if "." in key:
                head, sub = key.split(".", 1)
                settings[head] = {**settings.get(head, {}), sub: value}
            elif key in self.nested:
                if not isinstance(value, Mapping):
                    raise GradleakError(f"{where}: {key} must be a mapping, got {value!r}")
                settings[key] = {**settings.get(key, {}), **value}
            else:
                settings[key] = value
        try:
            resolved = self.resolve({**settings, "metrics": tuple(metrics)})
        except GradleakError as exc:
            raise GradleakError(f"{where}: {exc}") from None
        identity = {"settings": resolved, "metrics": sorted(metrics), **({"kind": self.name} if self.key_tag else {})}
        key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]
        return Cell(key=key, settings=resolved, axes=plain_data(dict(axes)), metrics=tuple(metrics), kind=self.name)


def device_name(device: str) -> str:
    """'cuda:0 (NVIDIA H200)': where a cell ran, for its row."""
    import os

    import torch

    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        return f"{device} ({torch.cuda.get_device_name(index)}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'all')})"
    return device


def plain_defaults(defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults that are plain data (what JSON can hold): the rest cannot key a cell."""
    out = {}
    for name, default in defaults.items():
        if default is inspect.Parameter.empty:
            continue
        try:
            json.dumps(default)
        except TypeError:
            continue
        out[name] = default
    return out


__all__ = ["CellKind", "device_name", "plain_defaults"]
