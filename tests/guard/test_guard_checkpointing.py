"""The guard's replay triage and culprit samples under activation checkpointing.

The per-sample gradient norms fall back from ``vmap`` (which runs neither kind of checkpoint)
to a loop of ``torch.autograd.grad``, which a reentrant checkpoint refuses: a refused step of a
model trained with Hugging Face ``gradient_checkpointing_enable(use_reentrant=True)`` raised
"torch.utils.checkpoint is incompatible with .grad()" out of ``guard.step``.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradwell
from checkpointed import Checkpointed
from gradwell.guard.triage import Batch, per_sample_norms

pytestmark = pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated")


def net(reentrant: bool | None) -> Checkpointed:
    """Two checkpointed tanh blocks between an input and an output layer."""
    torch.manual_seed(0)
    return Checkpointed(nn.Linear(8, 16),
                        [nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(2)],
                        nn.Linear(16, 4), reentrant)


@pytest.mark.parametrize("reentrant", [True, False])
def test_per_sample_norms_through_a_checkpoint_equal_torch_per_sample_backward(reentrant):
    torch.manual_seed(1)
    x, y = torch.randn(6, 8), torch.randint(0, 4, (6,))
    plain, model = net(None), net(reentrant)
    want = []                                       # torch-only: one backward per sample
    for i in range(6):
        plain.zero_grad()
        F.cross_entropy(plain(x[i:i + 1]), y[i:i + 1]).backward()
        want.append(torch.stack([p.grad.norm() for p in plain.parameters()]).norm())
    F.cross_entropy(model(x), y).backward()         # the step's gradients, to be kept
    grads = [p.grad.clone() for p in model.parameters()]
    _, norms = per_sample_norms(model, Batch(x, y, F.cross_entropy))
    assert torch.allclose(norms, torch.stack(want), rtol=1e-5)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    return model.train()


def _lm_loss(out: object, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.logits.flatten(0, 1), y.flatten())


def test_a_nan_sample_is_named_on_gpt2_with_reentrant_gradient_checkpointing():
    model = _gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    emb, y = torch.randn(4, 16, 32) * 0.02, torch.randint(0, 64, (4, 16))
    emb[2, 5, 7] = float("nan")                     # sample 2 holds a NaN feature
    with gradwell.guard.Guard(model, opt) as guard:
        loss = _lm_loss(model(inputs_embeds=emb), y)
        loss.backward()
        assert not torch.isfinite(loss)             # torch-only: the step is broken
        status = guard.step(loss, replay=Batch({"inputs_embeds": emb}, y, _lm_loss,
                                               ids=[10, 11, 12, 13]))
        event = guard.events[-1]
    assert status == "skipped" and event.reason == "nonfinite_loss"
    assert event.detail["triage"] == "data" and event.detail["culprits"] == [12]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
