"""The structured record of a watched run, with a fixed memory budget, and its JSON-lines form.

The in-memory history keeps at most ``max_records`` rows by *progressive downsampling*: when
the buffer is full every second row is dropped and from then on only every second recorded
step is kept (stride 1, 2, 4, ...). A run of any length therefore keeps an evenly spaced
picture of its whole life, plus the latest row; a 100-layer model needs about 9 MB at the
default 1024 rows, whatever the number of steps. Events (the first non-finite step and where
it appeared) are kept exactly. A file sink (:class:`~gradwell.watch.JsonlSink`) streams every
recorded step instead.

File format (JSON lines, one object per line, ``NaN``/``Infinity`` as Python's ``json``
writes them): ``{"type": "header", "columns": {...}, "meta": {...}}``, then
``{"type": "record", "step": s, "<stat>": {"<column>": value}}`` and
``{"type": "event", ...}`` lines, in any order after the header.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .._checks import check_int

__all__ = ["History", "load"]

FORMAT_VERSION = 1


class History:
    """Recorded statistics: ``history.series("grad_norm")`` -> ``(steps, names, values)``."""

    def __init__(self, columns: dict[str, list[str]], meta: dict[str, Any],
                 max_records: int = 1024) -> None:
        check_int("max_records", max_records, 2)
        self.columns = {k: list(v) for k, v in columns.items()}
        self.meta = dict(meta)
        self.max_records = max_records - max_records % 2
        self.events: list[dict[str, Any]] = []
        self._slices: dict[str, slice] = {}
        start = 0
        for key, names in self.columns.items():
            self._slices[key] = slice(start, start + len(names))
            start += len(names)
        self.width = start
        self._data = np.empty((self.max_records, self.width), dtype=np.float64)
        self._steps = np.empty(self.max_records, dtype=np.int64)
        self._n = 0
        self._seen = 0
        self._stride = 1
        self._last: tuple[int, np.ndarray] | None = None

    # ------------------------------------------------------------------------- writing
    def append(self, step: int, row: np.ndarray) -> None:
        """Add one recorded step (``row`` laid out as :attr:`columns`)."""
        if row.shape != (self.width,):
            raise ValueError(f"row has shape {row.shape}, expected ({self.width},)")
        if self._seen % self._stride == 0:
            if self._n == self.max_records:
                keep = self._n // 2
                self._data[:keep] = self._data[0:self._n:2]
                self._steps[:keep] = self._steps[0:self._n:2]
                self._n, self._stride = keep, self._stride * 2
            if self._seen % self._stride == 0:
                self._data[self._n] = row
                self._steps[self._n] = step
                self._n += 1
        self._seen += 1
        self._last = (step, row)

    def value(self, row: np.ndarray, stat: str) -> float:
        """The first column of ``stat`` in ``row`` (the loss, the total gradient norm)."""
        return float(row[self._slices[stat].start])

    def add_event(self, event: dict[str, Any]) -> None:
        self.events.append(dict(event))

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        """The events of one ``kind`` (``"nonfinite"``, ``"guard"``, ``"no_grad_forward"``)."""
        return [e for e in self.events if e.get("kind") == kind]

    # ------------------------------------------------------------------------- reading
    def __len__(self) -> int:
        """Rows held (the kept rows plus the latest row if it was not kept)."""
        return len(self.steps)

    @property
    def recorded(self) -> int:
        """How many steps were recorded in total (kept or not)."""
        return self._seen

    @property
    def stride(self) -> int:
        """One of every ``stride`` recorded steps is kept."""
        return self._stride

    @property
    def nbytes(self) -> int:
        return self._data.nbytes + self._steps.nbytes

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        steps, data = self._steps[:self._n], self._data[:self._n]
        if self._last is not None and (self._n == 0 or self._steps[self._n - 1] != self._last[0]):
            steps = np.append(steps, self._last[0])
            data = np.vstack([data, self._last[1][None, :]])
        return steps, data

    @property
    def steps(self) -> np.ndarray:
        return self._rows()[0]

    def series(self, stat: str) -> tuple[np.ndarray, list[str], np.ndarray]:
        """``(steps, column names, values[steps, columns])`` of one statistic."""
        if stat not in self.columns:
            raise KeyError(f"no statistic {stat!r}; recorded: {sorted(self.columns)}")
        steps, data = self._rows()
        return steps, self.columns[stat], data[:, self._slices[stat]]

    def latest(self) -> dict[str, Any] | None:
        """The last recorded step as a record dict (see :meth:`records`), or None."""
        if self._last is None:
            return None
        return self.as_record(*self._last)

    def records(self) -> Iterator[dict[str, Any]]:
        """``{"step": s, "<stat>": {"<column>": value}}`` for every row held."""
        steps, data = self._rows()
        for s, row in zip(steps, data):
            yield self.as_record(int(s), row)

    __iter__ = records

    def as_record(self, step: int, row: np.ndarray) -> dict[str, Any]:
        """``row`` (laid out as :attr:`columns`) as ``{"step": s, "<stat>": {col: value}}``."""
        rec: dict[str, Any] = {"step": int(step)}
        for key, names in self.columns.items():
            vals = row[self._slices[key]]
            rec[key] = {n: float(v) for n, v in zip(names, vals)}
        return rec

    def first_nonfinite(self) -> dict[str, Any] | None:
        """The event describing the first non-finite step, or None."""
        return next(iter(self.events_of("nonfinite")), None)

    # ---------------------------------------------------------------------- files
    def header(self) -> dict[str, Any]:
        return {"type": "header", "version": FORMAT_VERSION, "columns": self.columns,
                "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        """Write the held rows and the events as JSON lines; returns the path."""
        path = Path(path)
        with path.open("w", encoding="utf-8") as f:
            f.write(json.dumps(self.header()) + "\n")
            for rec in self.records():
                f.write(json.dumps({"type": "record", **rec}) + "\n")
            for ev in self.events:
                f.write(json.dumps({"type": "event", **ev}) + "\n")
        return path

    def row_from_record(self, rec: dict[str, Any]) -> np.ndarray:
        row = np.full(self.width, math.nan)
        for key, names in self.columns.items():
            vals = rec.get(key, {})
            sl = self._slices[key]
            row[sl] = [vals.get(n, math.nan) for n in names]
        return row


def load(path: str | Path, max_records: int | None = None) -> History:
    """Read a history written by :meth:`History.save`, ``Monitor.save`` or a ``JsonlSink``.

    Every record of the file is replayed through the same downsampling, so a streamed log
    longer than ``max_records`` (default: all of it) is thinned evenly.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise ValueError(f"{path} is empty: not a gradwell history")
    header = json.loads(lines[0])
    if header.get("type") != "header" or "columns" not in header:
        raise ValueError(f"{path} does not start with a gradwell history header line")
    if header.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} has format version {header['version']}; this gradwell "
                         f"reads up to {FORMAT_VERSION}")
    items = [json.loads(line) for line in lines[1:] if line.strip()]
    records = [x for x in items if x.get("type") == "record"]
    size = max_records or max(2, len(records) + len(records) % 2)
    hist = History(header["columns"], header.get("meta", {}), max_records=size)
    for rec in records:
        hist.append(int(rec["step"]), hist.row_from_record(rec))
    for ev in items:
        if ev.get("type") == "event":
            hist.add_event({k: v for k, v in ev.items() if k != "type"})
    return hist
