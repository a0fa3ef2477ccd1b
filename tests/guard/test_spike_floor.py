"""The guard's gradient-norm spike floor on a healthy run whose norm doubles (gradwell.guard.spike).

Overfitting one batch (Hugging Face Llama from a config, AdamW 1e-3), the loss falls at every step
while the gradient norm, flat at ~0.91 for 20 steps, doubles for a few steps (1.79 at step 27).
With a 5 % floor on the log-norm scale that read as z = 13: the guard skipped the step and, the
batch being the same, rolled back a run that torch shows to be healthy. A 10x gradient must
still be skipped."""

from __future__ import annotations

import copy

import torch

import gradwell

STEPS = 34


def _llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def _lockstep(spike_at: int | None = None):
    model = _llama()
    ids = torch.randint(0, 256, (4, 32))           # after the init, from the same seed
    ref = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-3)
    guard = gradwell.guard.Guard(model, opt)
    losses, norms, status = [], [], []
    for step in range(STEPS):
        ref_opt.zero_grad()
        loss = ref(input_ids=ids, labels=ids).loss
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(ref.parameters(), float("inf"))))
        losses.append(float(loss.detach()))
        ref_opt.step()
        opt.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        if step == spike_at:
            for p in model.parameters():
                p.grad.mul_(10.0)
        status.append(guard.step(loss))
    return losses, norms, status, guard, model, ref


def test_a_healthy_doubling_of_the_gradient_norm_is_not_a_spike():
    losses, norms, status, guard, model, ref = _lockstep()
    assert all(b < a for a, b in zip(losses, losses[1:]))          # torch: always improving
    flat = sorted(norms[5:25])[10]
    assert max(norms[25:]) > 1.9 * flat                  # ... while the norm doubles
    assert status == ["ok"] * STEPS, guard.events
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))


def test_a_tenfold_gradient_is_still_skipped():
    _, _, status, guard, _, _ = _lockstep(spike_at=22)
    assert status[22] == "skipped" and status.count("skipped") == 1, guard.events
    assert guard.events[0].reason == "grad_spike"
