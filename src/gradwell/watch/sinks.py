"""Where recorded steps stream to, besides the bounded in-memory history.

A sink is any object with ``start(header)``, ``write(record)``, ``event(event)`` and
``close()``; the monitor calls them on rank 0 only. Two ship with gradwell:

* :class:`JsonlSink` - every recorded step as one JSON line (read back with
  :func:`gradwell.watch.load`);
* :class:`TensorBoardSink` - scalars per layer (``grad_norm/<layer>`` ...) through
  ``torch.utils.tensorboard.SummaryWriter`` (needs ``pip install "gradwell[tensorboard]"``), or
  through any object with ``add_scalar(tag, value, step)``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

from .._checks import check_int

__all__ = ["Sink", "JsonlSink", "TensorBoardSink"]


class Sink(Protocol):
    def start(self, header: dict[str, Any]) -> None: ...
    def write(self, record: dict[str, Any]) -> None: ...
    def event(self, event: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class JsonlSink:
    """Stream every recorded step to ``path`` as JSON lines (the :meth:`History.save` format).

    Args:
        path: the file to write (created or truncated when the monitor starts).
        flush_every: flush to disk after this many records (1 = after each).
    """

    def __init__(self, path: str | Path, flush_every: int = 50) -> None:
        check_int("flush_every", flush_every)
        self.path = Path(path)
        self.flush_every = flush_every
        self._file: Any = None
        self._unflushed = 0

    def start(self, header: dict[str, Any]) -> None:
        self._file = self.path.open("w", encoding="utf-8")
        self._line(header)

    def write(self, record: dict[str, Any]) -> None:
        self._line({"type": "record", **record})

    def event(self, event: dict[str, Any]) -> None:
        self._line({"type": "event", **event})

    def _line(self, obj: dict[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError(f"JsonlSink({str(self.path)!r}) is not open: the monitor opens "
                               "it; do not reuse a sink after its monitor was closed")
        self._file.write(json.dumps(obj) + "\n")
        self._unflushed += 1
        if self._unflushed >= self.flush_every:
            self._file.flush()
            self._unflushed = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoardSink:
    """Per-layer scalars for TensorBoard: ``<stat>/<layer>`` for every recorded statistic.

    Args:
        log_dir: directory for a new ``torch.utils.tensorboard.SummaryWriter``.
        writer: an existing writer (or any object with ``add_scalar(tag, value, step)``);
            give this instead of ``log_dir``.
        stats: the statistics to write (default: all but the per-parameter gradient norms).

    Raises:
        ImportError: when ``writer`` is not given and the ``tensorboard`` package is missing.
    """

    def __init__(self, log_dir: str | Path | None = None, *, writer: Any = None,
                 stats: list[str] | None = None) -> None:
        if (log_dir is None) == (writer is None):
            raise ValueError("give exactly one of log_dir (a directory for a new SummaryWriter) "
                             "or writer (an object with add_scalar)")
        if writer is None:
            writer = _summary_writer(str(log_dir))
        if not callable(getattr(writer, "add_scalar", None)):
            raise TypeError(f"writer must have an add_scalar(tag, value, step) method, got "
                            f"{type(writer).__qualname__}")
        self.writer = writer
        self.stats = stats

    def start(self, header: dict[str, Any]) -> None:
        if self.stats is None:
            self.stats = [k for k in header["columns"] if k != "param_grad_norm"]

    def write(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for stat in self.stats or ():
            for name, value in record.get(stat, {}).items():
                if not math.isnan(value):
                    self.writer.add_scalar(f"{stat}/{name}", value, step)

    def event(self, event: dict[str, Any]) -> None:
        if hasattr(self.writer, "add_text"):
            self.writer.add_text("gradwell/events", json.dumps(event), event.get("step", 0))

    def close(self) -> None:
        if hasattr(self.writer, "flush"):
            self.writer.flush()


def _summary_writer(log_dir: str) -> Any:
    try:
        import tensorboard  # noqa: F401  (SummaryWriter needs it; fail with our message)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ImportError("TensorBoardSink needs the tensorboard package: "
                          'pip install "gradwell[tensorboard]"  (or pass writer=...)') from exc
    return SummaryWriter(log_dir=log_dir)
