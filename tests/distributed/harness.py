"""Spawn ``world`` CPU ranks (gloo) and run a function on each; shared models and data.

The reference of every distributed test is one process on the whole batch: the helpers here
build the same seeded model and data for both, and split the batch evenly across ranks.
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from spawn import on_free_port

STEPS = 4
BATCH = 8


def _entry(rank: int, fn: Callable[..., Any], world: int, port: int, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        fn(rank, world, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable[..., Any], world: int, *args: Any, timeout: float = 240) -> None:
    """Run ``fn(rank, world, *args)`` on ``world`` spawned ranks; raise if one fails or hangs
    (a new port and another try if rank 0 finds its port taken: tests/spawn.py)."""
    def start(port: int) -> None:
        ctx = mp.start_processes(_entry, args=(fn, world, port, args), nprocs=world,
                                 join=False, start_method="spawn")
        deadline = time.monotonic() + timeout
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                raise TimeoutError(f"{world} ranks did not finish within {timeout} s (a hang?)")
    on_free_port(start)


def make_model(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Three linear layers; 10 and 3 output rows split unevenly over 4 ranks (one empty)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 10), nn.Tanh(),
                         nn.Linear(10, 3)).to(dtype)


def shard(model: nn.Module, mesh: Any = None) -> nn.Module:
    """FSDP2: every Linear its own unit, then the root."""
    from torch.distributed.fsdp import fully_shard
    for m in model:
        if isinstance(m, nn.Linear):
            fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def data(steps: int = STEPS, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(steps, BATCH, 6, generator=g, dtype=dtype)
    y = torch.randn(steps, BATCH, 3, generator=g, dtype=dtype)
    return x, y


def part(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's share of a batch (dim 0), the whole batch for world 1."""
    n = t.shape[0] // world
    return t[rank * n:(rank + 1) * n]


def full_params(model: nn.Module) -> list[torch.Tensor]:
    """Whole parameters (gathered from DTensor shards: a collective on every rank)."""
    out = []
    for p in model.parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        out.append(full.detach().clone())
    return out
