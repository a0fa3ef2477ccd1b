"""Guard snapshots of an FSDP2 model on disk, written with ``torch.distributed.checkpoint``.

Each rank writes only its own shards (``dcp.save``, a collective); nothing is gathered. A slot
(``"trusted"``, ``"candidate"``) names a checkpoint directory through a small pointer file
``<slot>.json``: a new snapshot goes to a fresh directory, and only after every rank has
finished writing does rank 0 replace the pointer (``os.replace``, atomic) and delete the old
directory. A kill during a write therefore leaves the last trusted snapshot whole and pointed
to. Reading back (``dcp.load``) fills a template rebuilt from the snapshot's layout (shapes,
dtypes, DTensor placements), kept in memory when the snapshot was taken; the world size must
be the one that wrote it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._distributed import is_dtensor, sharded
from .snapshot import SnapshotStore

__all__ = ["ShardedSnapshotStore", "snapshot_store"]


def snapshot_store(directory: str | os.PathLike[str] | None, model: nn.Module) -> Any:
    """The guard's store: sharded (DCP) for an FSDP2 model on disk, else :class:`SnapshotStore`."""
    if directory is not None and sharded(model.parameters()):
        return ShardedSnapshotStore(directory)
    return SnapshotStore(directory)


@dataclass(frozen=True)
class _Spec:
    """The layout of one tensor of a snapshot: enough to allocate a tensor DCP can load into."""

    local_shape: tuple[int, ...]
    dtype: torch.dtype
    mesh: Any = None            # DTensor only
    placements: tuple = ()
    shape: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()

    def empty(self) -> Tensor:
        t = torch.empty(self.local_shape, dtype=self.dtype)
        if self.mesh is None:
            return t
        from torch.distributed.tensor import DTensor
        return DTensor.from_local(t, self.mesh, self.placements, run_check=False,
                                  shape=torch.Size(self.shape), stride=self.stride)


def _skeleton(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        if is_dtensor(obj):
            return _Spec(tuple(obj.to_local().shape), obj.dtype, obj.device_mesh,
                         tuple(obj.placements), tuple(obj.shape), tuple(obj.stride()))
        return _Spec(tuple(obj.shape), obj.dtype)
    if isinstance(obj, dict):
        return {k: _skeleton(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_skeleton(v) for v in obj)
    return obj


def _template(skel: Any) -> Any:
    if isinstance(skel, _Spec):
        return skel.empty()
    if isinstance(skel, dict):
        return {k: _template(v) for k, v in skel.items()}
    if isinstance(skel, (list, tuple)):
        return type(skel)(_template(v) for v in skel)
    return skel


class ShardedSnapshotStore:
    """:class:`~gradwell.guard.snapshot.SnapshotStore`'s two slots as DCP checkpoints.

    Every rank must call every method in the same order (they are collectives), as the guard
    does: its decisions are the same on every rank.
    """

    SLOTS = SnapshotStore.SLOTS

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        import torch.distributed as dist
        if not dist.is_initialized():
            raise RuntimeError("sharded snapshots need an initialised process group "
                               "(torch.distributed.init_process_group)")
        self.directory = Path(directory)
        self._rank = dist.get_rank()
        if self._rank == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            for stale in self.directory.glob("*"):   # left by an earlier run
                if stale.name.endswith((".json", ".json.tmp")) or stale.name.startswith(
                        self.SLOTS):
                    shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        dist.barrier()
        self._names: dict[str, str] = {}
        self._skeletons: dict[str, Any] = {}
        self._count = 0

    def path(self, slot: str) -> Path:
        """The checkpoint directory ``slot`` points to."""
        self._check(slot)
        if slot not in self._names:
            raise KeyError(f"no {slot} snapshot")
        return self.directory / self._names[slot]

    def put(self, slot: str, snap: dict[str, Any]) -> None:
        """Write ``snap`` (each rank its shards) to a fresh directory, then point ``slot`` at it."""
        import torch.distributed.checkpoint as dcp
        self._check(slot)
        self._count += 1
        name = f"{slot}-{self._count}"
        dcp.save(snap, checkpoint_id=self.directory / name)
        self._repoint(slot, name)
        self._skeletons[slot] = _skeleton(snap)

    def get(self, slot: str) -> dict[str, Any]:
        """The snapshot in ``slot``, read back shard by shard."""
        import torch.distributed.checkpoint as dcp
        path = self.path(slot)
        snap = _template(self._skeletons[slot])
        dcp.load(snap, checkpoint_id=path)
        return snap

    def has(self, slot: str) -> bool:
        return slot in self._names

    def promote(self) -> None:
        """The candidate becomes the trusted snapshot (one atomic pointer replacement)."""
        if "candidate" not in self._names:
            raise KeyError("no candidate snapshot to promote")
        self._repoint("trusted", self._names["candidate"])
        self._unpoint("candidate", remove=False)
        self._skeletons["trusted"] = self._skeletons.pop("candidate")

    def drop(self, slot: str) -> None:
        """Forget ``slot`` (no error if it is empty)."""
        self._check(slot)
        if slot in self._names:
            self._unpoint(slot, remove=True)
            self._skeletons.pop(slot, None)

    # ---------------------------------------------------------------------------- internals
    def _repoint(self, slot: str, name: str) -> None:
        import torch.distributed as dist
        dist.barrier()               # every rank has finished writing ``name``
        old = self._names.get(slot)
        if self._rank == 0:
            pointer = self.directory / f"{slot}.json"
            tmp = pointer.with_name(pointer.name + ".tmp")
            tmp.write_text(json.dumps({"checkpoint": name}))
            os.replace(tmp, pointer)
            if old is not None and old != name and old not in self._others(slot):
                shutil.rmtree(self.directory / old, ignore_errors=True)
        self._names[slot] = name
        dist.barrier()

    def _unpoint(self, slot: str, remove: bool) -> None:
        import torch.distributed as dist
        name = self._names.pop(slot)
        if self._rank == 0:
            (self.directory / f"{slot}.json").unlink(missing_ok=True)
            if remove and name not in self._names.values():
                shutil.rmtree(self.directory / name, ignore_errors=True)
        dist.barrier()

    def _others(self, slot: str) -> set[str]:
        return {n for s, n in self._names.items() if s != slot}

    def _check(self, slot: str) -> None:
        if slot not in self.SLOTS:
            raise ValueError(f"slot must be one of {self.SLOTS}, got {slot!r}")
