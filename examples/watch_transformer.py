"""Attention-logit growth in Hugging Face GPT-2, found by the monitor and fixed by its remedy.

Run ``python examples/watch_transformer.py`` (needs ``transformers``, part of
``gradwell[dev]``; the model is built from a config, nothing is downloaded). A 2-block GPT-2
learns a fixed batch with Adam while its attention projections ``c_attn`` get a learning rate
of 0.3 - the high-learning-rate regime in which Wortsman et al. (2023) see attention logits
grow. ``gradwell.watch(model, optimizer=opt)`` records ``attention_logit_max`` (``max |q.k| /
sqrt(d)`` on a subsample of every recorded step), ``log_z_rms`` at ``lm_head`` and Adam's
``update_cosine``, and reports an ``attention_logits`` warning whose first remedy is
QK-layernorm. The same run with a LayerNorm on the queries and keys of every head (the
remedy, as a small subclass of HF's attention) keeps the logits below the threshold and gets
no warning.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

import gradwell


def gpt2(qk_norm: bool = False) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                     eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    if qk_norm:
        for block in model.transformer.h:
            block.attn.c_attn = QKNorm(block.attn.c_attn, cfg.n_embd, cfg.n_head)
    return model


class QKNorm(nn.Module):
    """GPT-2's fused q|k|v projection followed by LayerNorm on each head of q and of k
    (QK-layernorm, Dehghani et al. 2023)."""

    def __init__(self, c_attn: nn.Module, width: int, heads: int) -> None:
        super().__init__()
        self.proj, self.width, self.heads = c_attn, width, heads
        self.q_norm = nn.LayerNorm(width // heads)
        self.k_norm = nn.LayerNorm(width // heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.proj(x).split(self.width, -1)
        shape = (*q.shape[:-1], self.heads, self.width // self.heads)
        q = self.q_norm(q.reshape(shape)).reshape(v.shape)
        k = self.k_norm(k.reshape(shape)).reshape(v.shape)
        return torch.cat([q, k, v], -1)


def train(model: nn.Module, steps: int = 12) -> tuple[list, list[float]]:
    g = torch.Generator().manual_seed(0)
    ids = (torch.randint(0, 64, (8, 1), generator=g) + torch.arange(16)) % 64
    attn = [p for n, p in model.named_parameters() if "c_attn" in n]
    rest = [p for n, p in model.named_parameters() if "c_attn" not in n]
    opt = torch.optim.Adam([{"params": attn, "lr": 0.3}, {"params": rest, "lr": 3e-3}])
    losses = []
    with gradwell.watch(model, optimizer=opt) as mon:
        for _ in range(steps):
            loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad()
            loss.backward()
            mon.step(loss)
            opt.step()
            losses.append(float(loss.detach()))
    return mon, losses


def main() -> tuple[list, list, dict]:
    mon, _ = train(gpt2())
    sick = [f for f in mon.findings() if f.severity in ("warning", "error")]
    for f in sick:
        print(f)
    _, _, peak = mon.history.series("attention_logit_max")
    fixed, losses = train(gpt2(qk_norm=True))
    healthy = [f for f in fixed.findings() if f.severity in ("warning", "error")]
    _, _, peak_fixed = fixed.history.series("attention_logit_max")
    numbers = {"peak": float(peak.max()), "peak_qk_norm": float(peak_fixed.max()),
               "first_loss": losses[0], "last_loss": losses[-1]}
    print(f"with QK-layernorm: {len(healthy)} warnings, max attention logit "
          f"{numbers['peak_qk_norm']:.3g} (was {numbers['peak']:.3g}), loss "
          f"{losses[0]:.2f} -> {losses[-1]:.2f}")
    return sick, healthy, numbers


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
