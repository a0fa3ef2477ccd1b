"""Functions run on every spawned rank (importable by name, as spawn requires)."""

from __future__ import annotations

import torch

import cases
import harness


def optimizers(rank: int, world: int, out: str, nan_step: int | None, quick: bool) -> None:
    """Every case on an FSDP2 model; rank 0 saves the gathered parameters and skip counts."""
    results = {}
    for name in cases.names(quick):
        model = harness.shard(harness.make_model())
        opt = cases.train(name, model, rank, world, nan_step)
        results[name] = {"params": harness.full_params(model),
                         "skipped": torch.tensor(getattr(opt, "skipped_steps", 0))}
    if rank == 0:
        torch.save(results, out)
