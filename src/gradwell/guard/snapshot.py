"""Snapshots of a training state, kept in memory or on disk, restored bit for bit.

A snapshot holds copies of ``model.state_dict()`` (parameters and buffers), the optimizer's
``state_dict()`` (moments, step counts, learning rates, and gradwell's clipper state), the
scheduler's and the GradScaler's state, and the guard's own bookkeeping. Copies are taken with
``clone`` / ``deepcopy``, so later in-place updates cannot reach into a snapshot; restoring
copies the values back into the *same* parameter tensors (``load_state_dict``), so references
held elsewhere (the optimizer, hooks) stay valid.

On disk a snapshot file is data, never code: a header line with the SHA-256 of the payload,
then the payload written by ``torch.save``. Reading checks the digest (a damaged file is
refused) and loads with ``torch.load(weights_only=True)`` (a planted pickle cannot run).
Files are written to ``<name>.pt.tmp`` and renamed with ``os.replace``: a crash mid-write
leaves the previous file whole. The space a write needs is reserved (``posix_fallocate``)
*before* the training step it follows, so a full disk fails before anything changes, and a
failed write leaves no ``.tmp`` behind. One store per directory: a ``lock`` file held with
``flock`` (released by :meth:`SnapshotStore.close` or when the process ends).
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

__all__ = ["capture", "restore", "SnapshotStore", "SnapshotError", "read_snapshot",
           "write_snapshot", "state_bytes"]

MAGIC = b"GRADWELL-SNAPSHOT 1 sha256="
LOCK_NAME = "lock"


class SnapshotError(RuntimeError):
    """A snapshot file that cannot be trusted, or a snapshot directory that cannot be used."""


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


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors a snapshot of ``model`` and ``optimizer`` holds (an estimate of its
    file size; an optimizer without state yet is counted as holding two moments per weight)."""
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    opt_bytes = sum(v.numel() * v.element_size() for s in optimizer.state.values()
                    for v in s.values() if isinstance(v, torch.Tensor))
    return model_bytes + (opt_bytes if optimizer.state else 2 * model_bytes)


def write_snapshot(f: IO[bytes], snap: dict[str, Any]) -> int:
    """Write ``snap`` to the open binary file ``f`` (header with the digest, then the payload);
    return the bytes written."""
    buf = io.BytesIO()
    torch.save(snap, buf)
    payload = buf.getvalue()
    header = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    f.write(header)
    f.write(payload)
    return len(header) + len(payload)


def read_snapshot(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The snapshot in the file ``path``, after checking its digest; loaded as data only
    (``torch.load(weights_only=True)``). Raises :class:`SnapshotError` for a file that is not
    a gradwell snapshot, is damaged, or holds anything but tensors and plain containers."""
    data = Path(path).read_bytes()
    header, _, payload = data.partition(b"\n")
    if not header.startswith(MAGIC) or len(header) != len(MAGIC) + 64:
        raise SnapshotError(f"{path} is not a gradwell snapshot (no digest header); refusing "
                            "to load it")
    if hashlib.sha256(payload).hexdigest().encode() != header[len(MAGIC):]:
        raise SnapshotError(f"{path} is damaged (its SHA-256 does not match the one written "
                            "with it); refusing to restore from it")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError / RuntimeError for foreign objects
        raise SnapshotError(f"{path} holds objects other than tensors and plain data; refusing "
                            f"to load it ({type(e).__name__}: {str(e).splitlines()[0]})") from e


def _lock(directory: Path) -> IO[str]:
    """Hold ``directory/lock`` exclusively for as long as the returned file stays open."""
    f = open(directory / LOCK_NAME, "a+")
    try:
        import fcntl
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # pragma: no cover - Windows
        import msvcrt
        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            f.close()
            raise _busy(directory) from None
    except OSError:
        f.seek(0)
        owner = f.read().strip() or "unknown"
        f.close()
        raise _busy(directory, owner) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def _busy(directory: Path, owner: str = "unknown") -> SnapshotError:
    return SnapshotError(f"snapshot_dir {directory} is in use by another Guard (process "
                         f"{owner}); give each Guard its own snapshot_dir")


class SnapshotStore:
    """Two slots, ``"trusted"`` and ``"candidate"``, in memory or as files in ``directory``.

    A directory is locked for this store (a second store on it raises :class:`SnapshotError`);
    a ``trusted.pt`` left there by an earlier run is kept: :attr:`survivor` says so.
    """

    SLOTS = ("trusted", "candidate")

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[str, dict[str, Any]] = {}
        self._present: set[str] = set()
        self._lockfile: IO[str] | None = None
        self.last_size = 0        #: bytes of the last snapshot written
        self.survivor = False     #: a trusted.pt from an earlier run was found in the directory
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lockfile = _lock(self.directory)
            for stale in ("candidate.pt", "trusted.pt.tmp", "candidate.pt.tmp"):
                (self.directory / stale).unlink(missing_ok=True)  # left by a dead run
            if self.path("trusted").is_file():
                self._present.add("trusted")
                self.last_size = self.path("trusted").stat().st_size
                self.survivor = True

    def close(self) -> None:
        """Release the directory's lock (the files stay)."""
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None

    def path(self, slot: str) -> Path:
        """The file of ``slot`` (disk mode only)."""
        if self.directory is None:
            raise RuntimeError("this snapshot store keeps snapshots in memory")
        return self.directory / f"{slot}.pt"

    def _tmp(self, slot: str) -> Path:
        return self.path(slot).with_name(f"{slot}.pt.tmp")

    def reserve(self, slot: str, nbytes: int) -> None:
        """Make sure ``nbytes`` can be written to ``slot``: allocate its ``.tmp`` file now, so a
        full disk fails here (nothing left behind) rather than after the training step."""
        self._check(slot)
        if self.directory is None:
            return
        tmp = self._tmp(slot)
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            try:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fd, 0, max(1, nbytes))
            finally:
                os.close(fd)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise self._write_error(e, nbytes) from e

    def put(self, slot: str, snap: dict[str, Any]) -> None:
        """Store ``snap`` in ``slot`` (atomically on disk)."""
        self._check(slot)
        if self.directory is None:
            self._memory[slot] = snap
        else:
            final, tmp = self.path(slot), self._tmp(slot)
            try:
                with open(tmp, "r+b" if tmp.exists() else "wb") as f:
                    size = write_snapshot(f, snap)
                    f.truncate(size)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise self._write_error(e, self.last_size) from e
            self.last_size = size
        self._present.add(slot)

    def _write_error(self, e: OSError, nbytes: int) -> SnapshotError:
        return SnapshotError(f"cannot write a snapshot to {self.directory} ({e.strerror}; "
                             f"about {nbytes / 2**20:.1f} MiB needed): free space there or give "
                             "the Guard another snapshot_dir; this step was not applied")

    def get(self, slot: str) -> dict[str, Any]:
        """The snapshot in ``slot``."""
        self._check(slot)
        if slot not in self._present:
            raise KeyError(f"no {slot} snapshot")
        if self.directory is None:
            return self._memory[slot]
        return read_snapshot(self.path(slot))

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
        if self.directory is not None:
            self.path(slot).unlink(missing_ok=True)
            self._tmp(slot).unlink(missing_ok=True)

    def _check(self, slot: str) -> None:
        if slot not in self.SLOTS:
            raise ValueError(f"slot must be one of {self.SLOTS}, got {slot!r}")
