"""Declarative sweeps: a YAML grid of audit settings, run resumably into a SQLite store."""

from gradleak.sweep.records import DONE, FAILED, REPLICATE_AXES, Cell, CellRow
from gradleak.sweep.store import ResultStore

__all__ = ["DONE", "FAILED", "REPLICATE_AXES", "Cell", "CellRow", "ResultStore"]
