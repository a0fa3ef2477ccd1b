"""The Guard under FSDP2 and DDP: a NaN loss on one rank skips everywhere, two in a row roll
every rank back (item 2); snapshots in memory or sharded on disk (item 4)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import gradwell
from gradwell.guard import Guard

import harness
import watch_cases

STEPS = 7
#: steps whose batch holds a NaN in its last example (the last rank's share under DDP/FSDP2)
NAN_STEPS = (3, 4)


def run(how: str, rank: int, world: int, snapshot_dir: str | None = None) -> dict[str, Any]:
    """Guarded training; this rank's events and whole parameters. ``how``: "ddp", "fsdp", or
    "fsdp-disk" (snapshots in ``snapshot_dir``: sharded DCP checkpoints under FSDP2)."""
    how, _, disk = how.partition("-")
    snapshot_dir = snapshot_dir if disk else None
    model = watch_cases.wrap(harness.make_model(), how, world)
    if how == "ddp":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = gradwell.optim.Adam(model.parameters(), lr=0.01, clip=gradwell.clip.ZClip(warmup=2))
    guard = Guard(model, opt, snapshot_every=1, trust_after=1, max_bad_steps=2, spike_z=None,
                  snapshot_dir=snapshot_dir)
    x, y = harness.data(STEPS)
    for s in NAN_STEPS:
        x[s, -1, 0] = float("nan")
    for s in range(STEPS):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(harness.part(x[s], rank, world)),
                                      harness.part(y[s], rank, world))
        loss.backward()
        guard.step(loss)
    events = [(e.step, e.action, e.reason) for e in guard.events]
    return {"events": events, "params": harness.full_params(model),
            "local": [p.detach().clone() for p in model.parameters()
                      if not hasattr(p, "to_local")]}


def crash_during_write(rank: int, world: int, directory: str) -> dict[str, Any]:
    """A trusted sharded snapshot, then a candidate write killed half-way: the trusted one must
    still load, and restore the model and optimizer as they were when it was taken."""
    import torch.distributed.checkpoint as dcp
    from gradwell.guard.sharded import ShardedSnapshotStore
    from gradwell.guard.snapshot import capture, restore
    model = harness.shard(harness.make_model())
    opt = gradwell.optim.Adam(model.parameters(), lr=0.01, clip=gradwell.clip.ZClip(warmup=2))
    x, y = harness.data()

    def train(s: int) -> None:
        opt.zero_grad()
        nn.functional.mse_loss(model(harness.part(x[s], rank, world)),
                               harness.part(y[s], rank, world)).backward()
        opt.step()
    train(0), train(1)
    store = ShardedSnapshotStore(directory)
    store.put("trusted", capture(model, opt, extra={"good_steps": 2}))
    at_snapshot = harness.full_params(model)
    train(2)
    real_save = dcp.save

    def killed(state: Any, checkpoint_id: Any) -> None:   # dies after writing a little
        from pathlib import Path
        Path(checkpoint_id).mkdir(parents=True, exist_ok=True)
        (Path(checkpoint_id) / f"__{rank}_0.distcp").write_bytes(b"partial")
        raise KeyboardInterrupt("killed during the write")
    dcp.save = killed
    try:
        store.put("candidate", capture(model, opt))
    except KeyboardInterrupt:
        pass
    finally:
        dcp.save = real_save
    torch.distributed.barrier()
    extra = restore(store.get("trusted"), model, opt)
    return {"restored": harness.full_params(model), "at_snapshot": at_snapshot,
            "extra": extra, "has_candidate": store.has("candidate"),
            "clipper_step": opt.state_dict()["gradwell"]["clip_state"]["clip"]["step"]}
