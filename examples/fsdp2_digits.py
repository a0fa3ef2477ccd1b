"""Train an MLP on scikit-learn's digits with FSDP2, clipped, guarded and watched by gradwell.

    torchrun --nproc-per-node 2 examples/fsdp2_digits.py     # 2 CPU ranks (gloo)
    python examples/fsdp2_digits.py                          # 1 rank, same code

Every rank trains on its share of each batch; parameters are DTensor shards
(``fully_shard``). gradwell's numbers are those of the full model: the clip norm, the NaN
skip at step 30 (one corrupt sample on the last rank), the monitor's per-layer norms and the
guard's decisions are the same on every rank. Rank 0 prints.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import nn
from torch.distributed.fsdp import fully_shard

import gradwell

STEPS, BATCH = 120, 64


def main() -> dict[str, float]:
    """Train; returns rank 0's view: training accuracy, skipped steps, number of findings."""
    if not dist.is_initialized():
        if "RANK" not in os.environ:    # plain `python`: a one-rank group
            os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=os.environ.get("MASTER_PORT", "29533"))
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    digits = load_digits()
    x_all = torch.tensor(digits.data, dtype=torch.float32) / 16
    y_all = torch.tensor(digits.target)
    torch.manual_seed(0)        # the same initial model on every rank
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 10))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    opt = gradwell.optim.AdamW(model.parameters(), lr=3e-3,
                               clip=gradwell.clip.GlobalNorm(1.0), skip_nonfinite=True)
    mon = gradwell.watch(model, optimizer=opt)
    guard = gradwell.guard.Guard(model, opt, snapshot_every=20, trust_after=5, monitor=mon)
    gen = torch.Generator().manual_seed(0)   # the same global batches on every rank
    share = BATCH // world
    for step in range(STEPS):
        idx = torch.randint(0, len(x_all), (BATCH,), generator=gen)[rank * share:(rank + 1) * share]
        x, y = x_all[idx].clone(), y_all[idx]
        if step == 30 and rank == world - 1:
            x[0, 0] = float("nan")            # one corrupt sample, on one rank only
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        mon.step(loss)
        guard.step(loss)                      # every rank: "ok", "skipped" or "rolled_back"
    with torch.no_grad():
        correct = (model(x_all).argmax(1) == y_all).float().mean()
    findings = mon.findings()
    mon.close()
    result = {"accuracy": float(correct), "skipped": float(sum(e.action == "skipped"
                                                              for e in guard.events)),
              "findings": float(len(findings))}
    if rank == 0:
        print(f"{world} ranks: accuracy {result['accuracy']:.3f}, skipped steps "
              f"{int(result['skipped'])}, findings {len(findings)}")
        for f in findings:
            print(" ", f)
    return result


if __name__ == "__main__":
    main()
    dist.destroy_process_group()
