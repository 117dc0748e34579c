"""Declarative sweeps: a YAML grid of audit settings, run resumably into a SQLite store.

`load_sweep(FILE)` validates the file and lists its cells, `run_sweep(spec, store, executor)`
runs the pending ones on `make_executor("local" | "ray", workers=N)`, and
`gradleak.sweep.html.render_report` turns the store into one HTML page.
"""

from gradleak.sweep.executors import make_executor
from gradleak.sweep.records import DONE, FAILED, REPLICATE_AXES, Cell, CellRow
from gradleak.sweep.run import run_sweep
from gradleak.sweep.spec import load_sweep
from gradleak.sweep.store import ResultStore

__all__ = ["DONE", "FAILED", "REPLICATE_AXES", "Cell", "CellRow", "ResultStore", "load_sweep", "make_executor",
           "run_sweep"]
