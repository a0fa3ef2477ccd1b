"""``Batch`` with keyword inputs: a padded Hugging Face batch (``input_ids`` and
``attention_mask``) split into samples.

``Batch`` passed its inputs positionally only, and GPT-2's second positional argument is its
cache, not the attention mask: the per-sample norms of a padded batch could not be asked for
at all. A dict of inputs is now passed as keyword arguments; the norms equal torch's
per-sample autograd, each sample with its own mask.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

import gradwell
from gradwell.guard import Batch, per_sample_norms
from models_zoo import ZOO


def padded(seed: int = 0) -> dict[str, torch.Tensor]:
    b = ZOO["gpt2"].batch(seed)
    mask = torch.ones_like(b["input_ids"])
    for i, n in enumerate((16, 11, 7, 16, 13, 9, 16, 5)):
        mask[i, n:] = 0
    return {"input_ids": b["input_ids"], "attention_mask": mask}


def lm_loss(out, ids: torch.Tensor) -> torch.Tensor:
    logits = out.logits[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def test_keyword_inputs_give_torchs_per_sample_norms() -> None:
    model, inputs = ZOO["gpt2"].build(), padded()
    target = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    losses, norms = per_sample_norms(model, Batch(inputs, target, lm_loss))
    params = [p for p in model.parameters() if p.requires_grad]
    for i in range(8):
        loss = lm_loss(model(**{k: v[i:i + 1] for k, v in inputs.items()}), target[i:i + 1])
        ref = torch.sqrt(sum(g.double().pow(2).sum() for g in torch.autograd.grad(loss, params)))
        torch.testing.assert_close(norms[i].double(), ref, rtol=1e-4, atol=0)
        torch.testing.assert_close(losses[i], loss.detach(), rtol=1e-5, atol=0)


def test_a_spiking_padded_batch_names_its_outlier_labels() -> None:
    """BERT regression head on padded inputs, two labels set to 1e4 after 20 healthy steps."""
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        vocab_size=64, max_position_embeddings=16, num_labels=1, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, pad_token_id=0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    guard = gradwell.guard.Guard(model, opt)

    def mse(out, y):
        return F.mse_loss(out.logits, y)
    for step in range(22):
        inputs = padded(step)
        y = (inputs["input_ids"] < 32).float().mean(1, keepdim=True)
        if step == 21:
            y[[2, 6]] = 1e4
        loss = mse(model(**inputs), y)
        opt.zero_grad()
        loss.backward()
        status = guard.step(loss, replay=Batch(inputs, y, mse, ids=list(range(8))))
    assert status == "skipped" and guard.events[-1].reason == "loss_spike"
    assert guard.events[-1].detail["culprits"] == [2, 6]
