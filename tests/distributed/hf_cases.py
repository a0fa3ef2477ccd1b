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
    model = arch.build()
    if world > 1 and how == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
    elif world > 1:
        model = nn.parallel.DistributedDataParallel(model)
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
