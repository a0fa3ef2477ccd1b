"""Which samples were in a refused step: ids per batch, the skip list, and excluding them.

:class:`SampleTracker` wraps a batch sampler (``torch.utils.data.BatchSampler`` or any iterable
of index lists) and remembers the ids of the batches it hands out, in order; a ``DataLoader``
built with ``batch_sampler=tracker`` delivers batches in that order (also with workers), so
``guard.step(loss, samples=tracker)`` takes the next batch's ids. ``exclude=`` leaves samples
out (a resumed run passes :func:`skipped_ids` of the previous one).

:class:`SkipList` appends one JSON line per refused step to ``snapshot_dir/skipped.jsonl``
(flushed and fsynced: a crash loses nothing written), or keeps the lines in memory.
"""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator

from torch import Tensor

from .._checks import check_int

__all__ = ["SampleTracker", "SkipList", "skipped_ids", "as_ids"]

FILENAME = "skipped.jsonl"


def as_ids(samples: Any) -> list[Any]:
    """Sample ids as a JSON-able list (a tensor, a sequence of ints/strings, or a tracker)."""
    if isinstance(samples, SampleTracker):
        return samples.pop()
    if isinstance(samples, Tensor):
        return samples.detach().cpu().reshape(-1).tolist()
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Iterable):
        raise TypeError("samples must be a sequence of sample ids, a tensor of them or a "
                        f"gradwell.guard.SampleTracker, got {type(samples).__qualname__}")
    ids = list(samples)
    for i in ids:
        if not isinstance(i, (int, str)) or isinstance(i, bool):
            raise TypeError(f"sample ids must be ints or strings, got {i!r}")
    return ids


class SampleTracker:
    """A batch sampler that remembers the ids of the batches it handed out.

    Args:
        batch_sampler: yields lists of dataset indices (``BatchSampler(RandomSampler(ds),
            64, drop_last=False)``).
        exclude: indices never handed out (e.g. ``skipped_ids("ckpt")`` of an earlier run).
    """

    def __init__(self, batch_sampler: Iterable[list[int]], exclude: Iterable[Any] = ()) -> None:
        if not isinstance(batch_sampler, Iterable):
            raise TypeError("batch_sampler must yield lists of indices (a torch BatchSampler), "
                            f"got {type(batch_sampler).__qualname__}")
        self.batch_sampler = batch_sampler
        self.exclude = set(exclude)
        self._handed: deque[list[Any]] = deque()

    def __iter__(self) -> Iterator[list[Any]]:
        self._handed.clear()  # a new epoch: batches prefetched and not used are gone
        for batch in self.batch_sampler:
            ids = [int(i) for i in batch if int(i) not in self.exclude]
            if ids:
                self._handed.append(ids)
                yield ids

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    def pop(self, batches: int = 1) -> list[Any]:
        """The ids of the oldest ``batches`` batches handed out and not yet taken, in order
        (one per training step; with gradient accumulation, the step's micro-batches)."""
        check_int("batches", batches)
        ids: list[Any] = []
        for _ in range(batches):
            if not self._handed:
                raise RuntimeError("SampleTracker: no batch handed out that was not taken yet; "
                                   "pass samples=tracker to guard.step once per optimizer step "
                                   "(tracker.pop(k) for k micro-batches per step)")
            ids += self._handed.popleft()
        return ids


class SkipList:
    """The refused steps' samples: ``directory/skipped.jsonl``, or memory without a directory."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.path = Path(directory) / FILENAME if directory is not None else None
        self.lines: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        self.lines.append(record)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())


def skipped_ids(where: str | os.PathLike[str], culprits_only: bool = True,
                reasons: Iterable[str] | None = None) -> set[Any]:
    """The sample ids in a skip list (a ``skipped.jsonl`` file or the directory holding it).

    ``culprits_only``: where per-sample norms were computed, only the culprits they named
    (none when every sample was non-finite: then the batch was not the cause); elsewhere the
    whole batch. ``reasons``: only steps refused for these reasons (default: all but
    ``amp_overflow``, which is GradScaler's normal business).
    """
    path = Path(where)
    path = path / FILENAME if path.is_dir() else path
    keep = None if reasons is None else set(reasons)
    out: set[Any] = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("action") != "skipped" or rec.get("reason") == "amp_overflow":
                continue
            if keep is not None and rec.get("reason") not in keep:
                continue
            named = culprits_only and rec.get("culprits") is not None
            out.update(rec["culprits"] if named else rec.get("samples", []))
    return out
