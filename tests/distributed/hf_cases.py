"""Hugging Face GPT-2 (tests/models_zoo.py: from a config, tied embeddings) watched under DDP and
FSDP2 (one unit per block, then the root), against one process on the whole batch."""

from __future__ import annotations

import torch
from torch import nn

import gradwell

import harness

STEPS = 4


def run(rank: int, world: int, how: str, out: str) -> None:
    from models_zoo import ZOO
    arch = ZOO["gpt2"]
    model = _wrap(arch.build(), how, world)
    opt = torch.optim.Adam(model.parameters(), lr=arch.lr)
    mon = gradwell.watch(model, update_every=1)
    for step in range(STEPS):
        ids = harness.part(arch.batch(step)["input_ids"], rank, world)
        opt.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        mon.step(loss)
        opt.step()
    result = {"records": list(mon.history.records()),
              "findings": [(f.kind, f.layer, f.severity) for f in mon.findings()]}
    mon.close()
    torch.save(result, f"{out}.{how}.{rank}")


#: steps whose loss the last rank poisons (NaN): skipped, then rolled back (max_bad_steps=2)
NAN_STEPS = (3, 4)
GUARD_STEPS = 7


def guard(rank: int, world: int, how: str, out: str) -> None:
    """Guarded GPT-2 training whose last rank returns a NaN loss on ``NAN_STEPS``."""
    from gradwell.guard import Guard
    from models_zoo import ZOO
    arch = ZOO["gpt2"]
    model = _wrap(arch.build(), how, world)
    opt = torch.optim.AdamW(model.parameters(), lr=arch.lr)
    g = Guard(model, opt, snapshot_every=1, trust_after=1, max_bad_steps=2, spike_z=None)
    for step in range(GUARD_STEPS):
        ids = harness.part(arch.batch(step)["input_ids"], rank, world)
        opt.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        if step in NAN_STEPS and rank == world - 1:
            loss = loss * float("nan")
        loss.backward()
        g.step(loss)
    torch.save({"events": [(e.step, e.action, e.reason) for e in g.events],
                "params": harness.full_params(model)}, f"{out}.{how}.{rank}")


def _wrap(model: nn.Module, how: str, world: int) -> nn.Module:
    if world > 1 and how == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for block in model.transformer.h:
            fully_shard(block)
        return fully_shard(model)
    return nn.parallel.DistributedDataParallel(model) if world > 1 else model
