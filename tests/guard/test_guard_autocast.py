"""A step refused under ``torch.autocast`` is replayed in the step's precision.

The docs' loop computes the loss inside ``with torch.autocast(...)`` and calls ``guard.step``
after the block: the replay used to run in float32, where the step's bfloat16 Inf does not
happen, and read as ``transient`` ("a race, a hardware fault"). Model: Hugging Face BERT from
a config (tests/models_zoo.py) with a hand-written binary cross-entropy on a confident head:
in bfloat16 ``sigmoid(7)`` rounds to 1, so ``log(1 - p)`` is ``-inf`` for the label-0 samples.
"""

from __future__ import annotations

import math

import torch

import gradwell
from gradwell.guard import Batch
from models_zoo import ZOO

ZEROS = [1, 5]     # the samples labelled 0: their log(1 - p) is -inf in bfloat16


def bce(out, y: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(out.logits[:, 0])
    return -torch.log(torch.where(y > 0, p, 1 - p)).mean()


def setup():
    model = ZOO["bert"].build()
    with torch.no_grad():
        model.classifier.bias[0] = 7.0
    x = ZOO["bert"].batch(0)["input_ids"]
    y = torch.ones(len(x))
    y[ZEROS] = 0.0
    return model, x, y


def per_sample(model, x, y, bf16: bool) -> list[float]:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return [bce(model(x[i:i + 1]), y[i:i + 1]).item() for i in range(len(x))]


def test_the_replay_of_a_bf16_step_runs_in_bf16_and_names_its_samples() -> None:
    model, x, y = setup()
    # torch's evidence: non-finite exactly at ZEROS in bfloat16, finite everywhere in float32
    assert [i for i, v in enumerate(per_sample(model, x, y, True)) if not math.isfinite(v)] == ZEROS
    assert all(math.isfinite(v) for v in per_sample(model, x, y, False))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    guard = gradwell.guard.Guard(model, opt, spike_z=None)
    for replay in (lambda: bce(model(x), y), Batch(x, y, bce)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = bce(model(x), y)
        loss.backward()
        assert guard.step(loss, replay=replay) == "skipped"
        detail = guard.events[-1].detail
        assert detail["triage"] == "reproducible", detail
        assert (detail["origin"]["phase"], detail["origin"]["op"]) == ("loss", "log")
        assert detail["origin"]["dtype"] == "torch.bfloat16"
    assert detail["culprits"] == ZEROS
    assert not torch.is_autocast_enabled("cpu")            # the step's state was not left on
    with torch.no_grad():                                     # float32 steps replay in float32
        assert math.isfinite(bce(model(x), y).item())
    guard.close()
    assert not model._forward_pre_hooks                      # close() removes the guard's hook
