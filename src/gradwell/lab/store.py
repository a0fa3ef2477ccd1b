"""The results store: one SQLite database (``lab.sqlite``, WAL mode) per lab directory.

Tables: ``runs`` (one per experiment run, with its spec), ``trials`` (configuration, status,
summary), ``metrics`` (per-step values, long format), ``layer_stats`` (per-step, per-layer
statistics such as gradient norms) and ``findings``. A trial and all its rows are written in
one transaction when it finishes, so a run killed at any moment (even ``kill -9``) loses only
the trials in flight, and running the same spec again skips every finished trial.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from .spec import Trial
from .train import TrialResult

__all__ = ["Store", "DB_NAME"]

DB_NAME = "lab.sqlite"

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


class Store:
    """The lab directory's database. ``Store(dir)`` creates the directory and tables as needed."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / DB_NAME
        self.db = sqlite3.connect(self.path, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def save_run(self, name: str, description: str, spec: dict[str, Any]) -> None:
        """Record (or update) the run ``name`` and its spec."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?)",
                            (name, description, json.dumps(spec), time.time()))

    def finished_keys(self) -> set[str]:
        """Keys of trials that need no re-run (done or diverged; failed trials run again)."""
        rows = self.db.execute("SELECT key FROM trials WHERE status != 'failed'")
        return {k for (k,) in rows}

    def save_trial(self, trial: Trial, result: TrialResult) -> None:
        """Write a finished trial and all its rows in one transaction."""
        with self.db:
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
