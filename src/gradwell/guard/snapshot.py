"""Snapshots of a training state, kept in memory or on disk, restored bit for bit.

A snapshot holds copies of ``model.state_dict()`` (parameters and buffers), the optimizer's
``state_dict()`` (moments, step counts, learning rates, and gradwell's clipper state), the
scheduler's and the GradScaler's state, and the guard's own bookkeeping. Copies are taken with
``clone`` / ``deepcopy``, so later in-place updates cannot reach into a snapshot; restoring
copies the values back into the *same* parameter tensors (``load_state_dict``), so references
held elsewhere (the optimizer, hooks) stay valid.

On disk a snapshot is written to ``<name>.pt.tmp`` and renamed with ``os.replace``: a crash
mid-write leaves the previous file whole (the rename is atomic on POSIX and Windows).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["capture", "restore", "SnapshotStore"]


def capture(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any = None,
            scaler: Any = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deep copy of everything needed to resume training exactly from here."""
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "scheduler": copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None,
        "scaler": copy.deepcopy(scaler.state_dict()) if scaler is not None else None,
        "extra": copy.deepcopy(extra or {}),
    }


def restore(snap: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any = None, scaler: Any = None) -> dict[str, Any]:
    """Load ``snap`` into the live objects (the snapshot itself stays untouched).

    Returns the snapshot's ``extra`` (a copy).
    """
    model.load_state_dict(snap["model"])
    # torch's load_state_dict may keep the tensors it is given: hand it a private copy.
    optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))
    if scheduler is not None and snap["scheduler"] is not None:
        scheduler.load_state_dict(copy.deepcopy(snap["scheduler"]))
    if scaler is not None and snap["scaler"] is not None:
        scaler.load_state_dict(copy.deepcopy(snap["scaler"]))
    return copy.deepcopy(snap["extra"])


class SnapshotStore:
    """Two slots, ``"trusted"`` and ``"candidate"``, in memory or as files in ``directory``."""

    SLOTS = ("trusted", "candidate")

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            for stale in ("candidate.pt", "trusted.pt.tmp", "candidate.pt.tmp"):
                (self.directory / stale).unlink(missing_ok=True)  # left by an earlier run
        self._memory: dict[str, dict[str, Any]] = {}
        self._present: set[str] = set()

    def path(self, slot: str) -> Path:
        """The file of ``slot`` (disk mode only)."""
        if self.directory is None:
            raise RuntimeError("this snapshot store keeps snapshots in memory")
        return self.directory / f"{slot}.pt"

    def put(self, slot: str, snap: dict[str, Any]) -> None:
        """Store ``snap`` in ``slot`` (atomically on disk)."""
        self._check(slot)
        if self.directory is None:
            self._memory[slot] = snap
        else:
            final = self.path(slot)
            tmp = final.with_name(final.name + ".tmp")
            with open(tmp, "wb") as f:
                torch.save(snap, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        self._present.add(slot)

    def get(self, slot: str) -> dict[str, Any]:
        """The snapshot in ``slot``."""
        self._check(slot)
        if slot not in self._present:
            raise KeyError(f"no {slot} snapshot")
        if self.directory is None:
            return self._memory[slot]
        return torch.load(self.path(slot), map_location="cpu", weights_only=False)

    def has(self, slot: str) -> bool:
        return slot in self._present

    def promote(self) -> None:
        """The candidate becomes the trusted snapshot (an atomic rename on disk)."""
        if "candidate" not in self._present:
            raise KeyError("no candidate snapshot to promote")
        if self.directory is None:
            self._memory["trusted"] = self._memory.pop("candidate")
        else:
            os.replace(self.path("candidate"), self.path("trusted"))
        self._present.discard("candidate")
        self._present.add("trusted")

    def drop(self, slot: str) -> None:
        """Forget ``slot`` (no error if it is empty)."""
        self._check(slot)
        self._present.discard(slot)
        self._memory.pop(slot, None)
        if self.directory is not None and self.path(slot).exists():
            self.path(slot).unlink()

    def _check(self, slot: str) -> None:
        if slot not in self.SLOTS:
            raise ValueError(f"slot must be one of {self.SLOTS}, got {slot!r}")
