"""DistributedDataParallel (gloo, 2 CPU processes): identical statistics and findings on every
rank, computed over both ranks' data; only rank 0 writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import gradwell
from spawn import on_free_port
from watch_helpers import digits, mlp

STEPS, BATCH = 3, 32


def _batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits()
    start = (step * 2 + rank) * BATCH
    return x[start:start + BATCH], y[start:start + BATCH]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        model = nn.parallel.DistributedDataParallel(mlp(2, 16, nn.Tanh))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        mon = gradwell.watch(model, log=Path(out) / "log.jsonl")
        for step in range(STEPS):
            xb, yb = _batch(rank, step)
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            mon.step(loss)
            opt.step()
        mon.close()
        saved = mon.save(Path(out) / f"save{rank}.jsonl")
        h = mon.history
        torch.save({"series": {k: h.series(k)[2] for k in h.columns}, "layers": mon.layers,
                    "findings": [f.to_dict() for f in mon.findings()],
                    "saved": saved is not None}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_ranks_agree_and_only_rank_0_writes(tmp_path: Path) -> None:
    on_free_port(lambda port: mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2,
                                       join=True))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["layers"] == r1["layers"] == ["0", "2", "4"]        # no "module." prefix
    for stat, values in r0["series"].items():
        np.testing.assert_array_equal(values, r1["series"][stat], err_msg=stat)
    assert r0["findings"] == r1["findings"]
    assert r0["saved"] and not r1["saved"]
    assert (tmp_path / "save0.jsonl").exists() and not (tmp_path / "save1.jsonl").exists()
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [x["type"] for x in lines] == ["header"] + ["record"] * STEPS
    # step 0 statistics cover both ranks' batches: a single-process reference
    ref = mlp(2, 16, nn.Tanh)
    (x0, y0), (x1, y1) = _batch(0, 0), _batch(1, 0)
    with torch.no_grad():
        out = ref[1](ref[0](torch.cat([x0, x1])))
        losses = [nn.functional.cross_entropy(ref(x), y) for x, y in ((x0, y0), (x1, y1))]
    mean_idx = lines[0]["columns"]["out_mean"].index("1")
    assert r0["series"]["out_mean"][0, mean_idx] == pytest.approx(float(out.mean()), abs=1e-6)
    assert lines[1]["loss"]["loss"] == pytest.approx(float(sum(losses) / 2), rel=1e-5)
