"""The guard's culprit samples (``replay=Batch``) under DDP and FSDP2 with batches of different
sizes per rank (3 and 5), on Hugging Face BERT from a config (a regression head).

Under DDP every per-sample forward broadcast the module buffers (BERT's position ids), so a
rank with more samples waited for a broadcast the other never sent: a hang (gloo timed out).
Under FSDP2 the per-sample gradients were taken of the shards, which FSDP2's backward never
fills: every norm read 0.0, and the loop of forwards (each one all-gathering the parameters)
hung as well with unequal batches."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import harness

pytest.importorskip("transformers")

SIZES = (3, 5)


def _bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, vocab_size=64, max_position_embeddings=16,
                     num_labels=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


def _loss(out, y):
    return nn.functional.mse_loss(out.logits.squeeze(-1), y)


def _wrap(model: nn.Module, how: str) -> nn.Module:
    if how == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    from torch.distributed.fsdp import fully_shard
    for layer in model.bert.encoder.layer:
        fully_shard(layer)
    return fully_shard(model)


def _torch_norms(model: nn.Module, ids: torch.Tensor, y: torch.Tensor) -> list[float]:
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for i in range(len(y)):
        gs = torch.autograd.grad(_loss(model(input_ids=ids[i:i + 1]), y[i:i + 1]), params,
                                 allow_unused=True)
        out.append(math.sqrt(sum(float(g.pow(2).sum()) for g in gs if g is not None)))
    return out


def run(rank: int, world: int, out: str) -> None:
    from gradwell.guard import Batch, Guard, per_sample_norms
    result = {}
    for how in ("ddp", "fsdp"):
        g = torch.Generator().manual_seed(rank)
        ids = torch.randint(1, 64, (SIZES[rank], 8), generator=g)
        y = torch.randn(SIZES[rank], generator=g)
        model = _wrap(_bert(), how)
        _, norms = per_sample_norms(model, Batch({"input_ids": ids}, y, _loss))
        want = _torch_norms(_bert(), ids, y)
        if rank == 1:
            y[1] = float("nan")
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        guard = Guard(model, opt, spike_z=None)
        loss = _loss(model(input_ids=ids), y)
        loss.backward()
        guard.step(loss, replay=Batch({"input_ids": ids}, y, _loss))
        per_sample = [float(_loss(_bert()(input_ids=ids[i:i + 1]), y[i:i + 1]))
                      for i in range(len(y))]
        result[how] = {"norms": norms.tolist(), "want": want, "losses": per_sample,
                       "events": [(e.step, e.action, e.detail.get("culprits"))
                                  for e in guard.events]}
    torch.save(result, f"{out}.{rank}")


def test_culprits_with_unequal_batches_per_rank_under_ddp_and_fsdp2(tmp_path):
    out = str(tmp_path / "culprits")
    harness.run_ranks(run, 2, out, timeout=150)
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        for how, res in got.items():
            torch_bad = [i for i, v in enumerate(res["losses"]) if not math.isfinite(v)]
            assert torch_bad == ([1] if rank == 1 else [])
            assert res["events"] == [(0, "skipped", torch_bad)], (how, rank, res["events"])
            assert all(w > 0 for w in res["want"])
            for x, w in zip(res["norms"], res["want"], strict=True):
                if how == "ddp":      # this rank's own per-sample gradients
                    assert abs(x - w) <= 1e-4 * w, (how, rank, x, w)
                else:                 # FSDP2: not measured; never a made-up 0.0
                    assert math.isnan(x), (how, rank, x, w)
