"""The results store: one SQLite database (``lab.sqlite``, WAL mode) per lab directory.

Tables: ``runs`` (one per experiment run, with its spec), ``trials`` (configuration, status,
summary), ``metrics`` (per-step values, long format), ``layer_stats`` (per-step, per-layer
statistics such as gradient norms) and ``findings``. A trial and all its rows are written in
one transaction when it finishes, so a run killed at any moment (even ``kill -9``) loses only
the trials in flight, and running the same spec again skips every finished trial.

Trials belong to their run (the run's name is part of each trial's key). :meth:`Store.open_run`
refuses a run whose stored trials the spec no longer has (a changed budget, target or grid),
and :meth:`Store.lock` keeps a second writer out of the directory. Every failure of the
database or the directory is a :class:`StoreError` naming the path and what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import StoreError
from .spec import Trial
from .train import TrialResult

__all__ = ["Store", "StoreError", "DB_NAME", "LOCK_NAME"]

DB_NAME = "lab.sqlite"
LOCK_NAME = "lab.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY, description TEXT, spec TEXT, updated REAL);
CREATE TABLE IF NOT EXISTS trials (
    key TEXT PRIMARY KEY, run TEXT NOT NULL, label TEXT NOT NULL, config TEXT NOT NULL,
    status TEXT NOT NULL, seconds REAL, summary TEXT, error TEXT, finished REAL,
    position INTEGER);
CREATE TABLE IF NOT EXISTS metrics (
    trial TEXT NOT NULL, step INTEGER, seconds REAL, name TEXT, value REAL);
CREATE TABLE IF NOT EXISTS layer_stats (
    trial TEXT NOT NULL, step INTEGER, layer_index INTEGER, layer TEXT, stat TEXT, value REAL);
CREATE TABLE IF NOT EXISTS findings (
    trial TEXT NOT NULL, kind TEXT, layer TEXT, step INTEGER, severity TEXT, evidence TEXT,
    remedies TEXT);
CREATE INDEX IF NOT EXISTS metrics_trial ON metrics(trial);
CREATE INDEX IF NOT EXISTS layer_stats_trial ON layer_stats(trial);
CREATE INDEX IF NOT EXISTS findings_trial ON findings(trial);
"""


def _finite(v: float | None) -> float | None:
    """SQLite stores NaN as NULL; keep infinities as +-1e308 so they survive."""
    if v is None or v != v:
        return None
    return max(min(v, 1e308), -1e308)


def _advice(e: BaseException) -> str:
    text = str(e).lower()
    if "full" in text or getattr(e, "errno", None) == 28:
        return "the disk is full: free space there, or give --out on another disk"
    if "readonly" in text or "read-only" in text or isinstance(e, PermissionError):
        return "it is not writable: give --out a directory you can write to"
    if "not a database" in text or "malformed" in text:
        return ("it is not a readable lab store: move it away, or give --out another "
                "directory to start fresh")
    return "check the path, or give --out another directory"


class Store:
    """The lab directory's database. ``Store(dir)`` creates the directory and tables as needed;
    ``Store(dir, readonly=True)`` only reads (an existing store, even on a read-only disk)."""

    def __init__(self, directory: str | Path, readonly: bool = False) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        self.readonly = readonly
        self._lockfile: IO[str] | None = None
        with self._errors("open"):
            if readonly:
                self.db = self._connect_readonly()
            else:
                self.directory.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, timeout=30.0)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(_SCHEMA)

    def _connect_readonly(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise StoreError(f"{self.directory} is not a lab directory (no {DB_NAME}); run "
                             "'gradwell lab run NAME --out DIR' first")
        uri = self.path.resolve().as_uri()
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0)
            db.execute("SELECT COUNT(*) FROM runs").fetchone()
        except sqlite3.OperationalError:     # WAL on a read-only disk: no -shm can be made
            db = sqlite3.connect(f"{uri}?immutable=1", uri=True)
            db.execute("SELECT COUNT(*) FROM runs").fetchone()
        return db

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn the database's and the file system's errors into a :class:`StoreError`."""
        try:
            yield
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot {what} the lab store {self.path} ({e}); "
                             f"{_advice(e)}") from e

    def close(self) -> None:
        """Close the connection (and release :meth:`lock`)."""
        self.db.close()
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None

    def lock(self) -> None:
        """Make this the directory's only writer until :meth:`close`; another process's run
        into the same directory gets a :class:`StoreError` instead of running trials twice."""
        import fcntl

        with self._errors("lock"):
            f = open(self.directory / LOCK_NAME, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            f.close()
            raise StoreError(f"{self.directory} is being written by another gradwell run "
                             f"(process {owner}); wait for it to finish, or give --out another "
                             "directory") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lockfile = f

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def save_run(self, name: str, description: str, spec: dict[str, Any]) -> None:
        """Record (or update) the run ``name`` and its spec."""
        with self._errors("write"), self.db:
            self.db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?)",
                            (name, description, json.dumps(spec), time.time()))

    def open_run(self, name: str, description: str, spec: dict[str, Any],
                 trials: list[Trial]) -> None:
        """Record the run ``name`` for a spec expanding to ``trials``; refuse (StoreError) when
        the store holds trials of ``name`` that are not among them, so a changed spec never
        mixes with the old one. Labels and order of the stored trials follow the spec."""
        wanted = {t.key: t for t in trials}
        with self._errors("read"):
            stored = [k for (k,) in self.db.execute("SELECT key FROM trials WHERE run = ?",
                                                     (name,))]
        stale = [k for k in stored if k not in wanted]
        if stale:
            raise StoreError(
                f"{self.directory} holds {len(stale)} trial(s) of run {name!r} that this spec "
                "does not have (its budget, target, record or configurations changed); to "
                "start fresh, delete that directory or give --out another one; to keep both, "
                "give the changed spec another name")
        self.save_run(name, description, spec)
        with self._errors("write"), self.db:
            self.db.executemany("UPDATE trials SET label = ?, position = ? WHERE key = ?",
                                [(wanted[k].label, wanted[k].index, k) for k in stored])

    def finished_keys(self, run: str | None = None) -> set[str]:
        """Keys of the trials (of ``run``, or all) that need no re-run (done or diverged;
        failed trials run again)."""
        q = "SELECT key FROM trials WHERE status != 'failed'"
        with self._errors("read"):
            rows = self.db.execute(q + (" AND run = ?" if run else ""), (run,) if run else ())
            return {k for (k,) in rows}

    def save_trial(self, trial: Trial, result: TrialResult) -> None:
        """Write a finished trial and all its rows in one transaction."""
        with self._errors("write"), self.db:
            for table in ("trials", "metrics", "layer_stats", "findings"):
                col = "key" if table == "trials" else "trial"
                self.db.execute(f"DELETE FROM {table} WHERE {col} = ?", (trial.key,))
            self.db.execute(
                "INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (trial.key, trial.experiment, trial.label, json.dumps(trial.config),
                 result.status, result.seconds, json.dumps(result.summary), result.error,
                 time.time(), trial.index))
            self.db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)",
                                [(trial.key, s, t, n, _finite(v)) for s, t, n, v in result.metrics])
            self.db.executemany(
                "INSERT INTO layer_stats VALUES (?, ?, ?, ?, ?, ?)",
                [(trial.key, s, i, layer, stat, _finite(v))
                 for s, i, layer, stat, v in result.layer_stats])
            self.db.executemany(
                "INSERT INTO findings VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(trial.key, f["kind"], f.get("layer", ""), f.get("step"), f.get("severity", ""),
                  json.dumps(f.get("evidence", {})), json.dumps(f.get("remedies", [])))
                 for f in result.findings])

    # ------------------------------------------------------------------ reading
    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first: ``{"name", "description", "spec"}``."""
        rows = self.db.execute("SELECT name, description, spec FROM runs ORDER BY updated")
        return [{"name": n, "description": d, "spec": json.loads(s)} for n, d, s in rows]

    def trials(self, run: str | None = None) -> list[dict[str, Any]]:
        """Trials (of ``run``, or all) in spec order, with config and summary decoded."""
        q = "SELECT key, run, label, config, status, seconds, summary, error FROM trials"
        rows = self.db.execute(q + (" WHERE run = ?" if run else "") + " ORDER BY run, position",
                               (run,) if run else ())
        cols = ("key", "run", "label", "config", "status", "seconds", "summary", "error")
        out = []
        for row in rows:
            t = dict(zip(cols, row))
            t["config"], t["summary"] = json.loads(t["config"]), json.loads(t["summary"] or "{}")
            out.append(t)
        return out

    def metrics(self, trial: str) -> dict[str, list[tuple[int, float, float | None]]]:
        """``{name: [(step, seconds, value), ...]}`` for one trial, by step."""
        out: dict[str, list] = {}
        for s, t, n, v in self.db.execute(
                "SELECT step, seconds, name, value FROM metrics WHERE trial = ? ORDER BY step",
                (trial,)):
            out.setdefault(n, []).append((s, t, v))
        return out

    def layer_stats(self, trial: str, stat: str = "grad_norm") -> dict[int, list[float | None]]:
        """``{step: [value of layer 0, layer 1, ...]}`` for one trial and statistic."""
        out: dict[int, list] = {}
        for s, v in self.db.execute(
                "SELECT step, value FROM layer_stats WHERE trial = ? AND stat = ? "
                "ORDER BY step, layer_index", (trial, stat)):
            out.setdefault(s, []).append(v)
        return out

    def findings(self, trial: str) -> list[dict[str, Any]]:
        """The findings of one trial."""
        cols = ("kind", "layer", "step", "severity", "evidence", "remedies")
        rows = self.db.execute(f"SELECT {', '.join(cols)} FROM findings WHERE trial = ?", (trial,))
        out = []
        for row in rows:
            f = dict(zip(cols, row))
            f["evidence"], f["remedies"] = json.loads(f["evidence"]), json.loads(f["remedies"])
            out.append(f)
        return out
