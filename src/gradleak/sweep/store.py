"""The result store: one SQLite file (WAL mode), one row per cell, keyed by the cell's hash.

Drivers write; workers return results to their driver. Every cell is written in its own
transaction after its artifacts are on disk, so a crash or SIGKILL at any moment loses
at most the cells in flight: a row is either absent or complete, and every artifact it
names exists. Artifacts live in `<store>.artifacts/`.

Several drivers (on one machine, or on several that share the file) split a sweep: a
driver claims a cell before it runs it (`claim`), renews its claims while it works
(`beat`) and drops them once the row is written (`release`). A claim whose driver has not
renewed it for `LEASE_SECONDS`, or whose driver process on this machine is gone, is
taken over, so a killed driver's cells are run again by the next one.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from gradleak.errors import GradleakError
from gradleak.io import atomic_write_bytes
from gradleak.sweep.records import DONE, FAILED, CellRow

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY, spec TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    sweep TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    settings TEXT NOT NULL,
    axes TEXT NOT NULL,
    metrics TEXT NOT NULL,
    per_sample TEXT NOT NULL,
    timings TEXT NOT NULL,
    error TEXT,
    versions TEXT NOT NULL,
    artifacts TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL NOT NULL,
    attempts INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS cells_sweep ON cells (sweep, status);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, heartbeat REAL NOT NULL);
"""
LEASE_SECONDS = 120.0  # a claim not renewed for this long belongs to a lost driver


def _finite(value: Any) -> Any:
    # JSON has no NaN/inf; store them as null so every reader can parse the row
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_finite(value), sort_keys=True, allow_nan=False, default=str)


class ResultStore:
    """A sweep's results in one SQLite file; safe to reopen after any crash."""

    def __init__(self, path: str | Path, *, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if self.path.is_dir():
            raise GradleakError(f"store must be a file path, got the folder {str(self.path)!r}")
        if (readonly or not create) and not self.path.is_file():
            raise GradleakError(f"store {str(self.path)!r} does not exist")
        if create and not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if readonly:  # a reader changes nothing, not even the journal mode
                self._db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=30.0,
                                           isolation_level=None)
            else:
                self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            if (readonly or not create) and self._db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cells'").fetchone() is None:
                self._db.close()  # a foreign SQLite file is left exactly as it was
                raise GradleakError(f"store {str(self.path)!r} is not a gradleak result store (no cells table)")
            if readonly:
                return
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable up to the last checkpoint
            self._db.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.DatabaseError as exc:
            raise GradleakError(f"store {str(self.path)!r} is not a gradleak result store: {exc}") from None

    @property
    def artifact_dir(self) -> Path:
        return self.path.with_name(self.path.name + ".artifacts")

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise GradleakError(f"store {str(self.path)!r} has schema version {row[0]}, this gradleak reads "
                                f"{SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register_sweep(self, name: str, spec: Mapping[str, Any]) -> None:
        now = time.time()
        with self._transaction():
            self._db.execute(
                "INSERT INTO sweeps VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, "
                "updated = excluded.updated", (name, _dumps(spec), now, now))

    def statuses(self) -> dict[str, str]:
        """Cell key -> status of every stored cell."""
        return dict(self._db.execute("SELECT key, status FROM cells").fetchall())

    def write(self, row: CellRow, artifacts: Mapping[str, bytes] = {}) -> CellRow:
        """Store a cell's row, replacing an earlier attempt; artifacts are written first.

        `artifacts` maps a name to file bytes; each goes to `<artifact_dir>/<key>-<name>` (".png"
        appended to a name without a suffix, like "grid"; "text.json" keeps its own) atomically
        before the row commits, so the row never names a missing file.
        """
        if row.status not in (DONE, FAILED):
            raise GradleakError(f"row status must be {DONE!r} or {FAILED!r}, got {row.status!r}")
        paths = dict(row.artifacts)
        if artifacts:
            self.artifact_dir.mkdir(parents=True, exist_ok=True)
            for name, data in artifacts.items():
                rel = f"{row.key}-{name}" + ("" if "." in name else ".png")
                atomic_write_bytes(self.artifact_dir / rel, data)
                paths[name] = rel
        previous = self._db.execute("SELECT attempts FROM cells WHERE key = ?", (row.key,)).fetchone()
        attempts = (previous[0] if previous else 0) + 1
        values = (row.key, row.sweep, row.status, _dumps(row.settings), _dumps(row.axes), _dumps(row.metrics),
                  _dumps({k: list(v) for k, v in row.per_sample.items()}), _dumps(row.timings), row.error,
                  _dumps(row.versions), _dumps(paths), row.started, row.finished, attempts)
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
        return _row(values)

    def attempts(self) -> dict[str, int]:
        """Cell key -> how many times it has run."""
        return dict(self._db.execute("SELECT key, attempts FROM cells").fetchall())

    def claim(self, key: str, seen_attempts: int) -> bool:
        """Claim a cell for this driver; False when another driver holds a live claim on it,
        or it has run since this driver planned (`seen_attempts`: its attempts then)."""
        now = time.time()
        with self._transaction():
            row = self._db.execute("SELECT attempts FROM cells WHERE key = ?", (key,)).fetchone()
            if (row[0] if row else 0) != seen_attempts:
                return False
            held = self._db.execute("SELECT owner, host, pid, heartbeat FROM claims WHERE key = ?", (key,)).fetchone()
            if held is not None and held[0] != self.owner and not _lost(*held[1:], now):
                return False
            host, pid = self.owner.split(":")[:2]
            self._db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?)", (key, self.owner, host,
                                                                                       int(pid), now))
        return True

    def release(self, key: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def beat(self, owner: str | None = None) -> None:
        """Renew the claims of `owner` (this store's driver by default)."""
        with self._transaction():
            self._db.execute("UPDATE claims SET heartbeat = ? WHERE owner = ?", (time.time(), owner or self.owner))

    def rows(self, sweep: str | None = None, status: str | None = None) -> list[CellRow]:
        """Stored rows (optionally of one sweep and status), oldest first."""
        query, args = "SELECT * FROM cells", []
        where = []
        if sweep is not None:
            where.append("sweep = ?")
            args.append(sweep)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if where:
            query += " WHERE " + " AND ".join(where)
        return [_row(r) for r in self._db.execute(query + " ORDER BY finished, key", args)]

    def sweeps(self) -> dict[str, dict[str, Any]]:
        """Sweep name -> its stored specification."""
        return {name: json.loads(spec) for name, spec in self._db.execute("SELECT name, spec FROM sweeps")}

    def integrity(self) -> str:
        """SQLite's integrity check: "ok" for a sound file."""
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def _transaction(self):
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _lost(host: str, pid: int, heartbeat: float, now: float) -> bool:
    """Whether a claim's driver is gone: silent for a lease, or a dead process on this machine."""
    if now - heartbeat > LEASE_SECONDS:
        return True
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, someone else's
            return False
    return False


def _row(values) -> CellRow:
    (key, sweep, status, settings, axes, metrics, per_sample, timings, error, versions, artifacts, started,
     finished, attempts) = values

    def nan(v, field: str):  # nulls stored for NaN/inf come back as NaN
        if v is None:
            return float("nan")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise GradleakError(f"store row {key!r} is damaged: {field} holds {v!r}, not a number")
        return v

    def parse(text, field: str, kind: type):
        try:
            value = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise GradleakError(f"store row {key!r} is damaged: its {field} is not valid JSON ({exc})") from None
        if not isinstance(value, kind):
            raise GradleakError(f"store row {key!r} is damaged: its {field} is a {type(value).__name__}")
        return value

    per = parse(per_sample, "per_sample", dict)
    if not all(isinstance(v, list) for v in per.values()):
        raise GradleakError(f"store row {key!r} is damaged: per_sample must map metrics to lists")
    return CellRow(
        key=key, sweep=sweep, status=status, settings=parse(settings, "settings", dict),
        axes=parse(axes, "axes", dict),
        metrics={k: nan(v, f"metric {k}") for k, v in parse(metrics, "metrics", dict).items()},
        per_sample={k: tuple(nan(x, f"per-sample {k}") for x in v) for k, v in per.items()},
        timings=parse(timings, "timings", dict), error=error, versions=parse(versions, "versions", dict),
        artifacts=parse(artifacts, "artifacts", dict), started=started, finished=finished, attempts=attempts)

