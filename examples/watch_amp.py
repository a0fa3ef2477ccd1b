"""float16 mixed precision with a GradScaler, watched: ``gradwell.watch(model, scaler=scaler)``.

Run ``python examples/watch_amp.py`` (needs ``transformers``, part of ``gradwell[dev]``; a small
Hugging Face Llama built from a config, nothing is downloaded; float16 autocast on the CPU). The
backward runs on ``scaler.scale(loss)``, so until ``scaler.step`` unscales them every gradient
is the true one times the scale (here 2**20 at first), and when they overflow float16 the
scaler skips the step and halves its scale, as it is meant to. Watched without ``scaler=`` the
healthy run reads as an error-level ``exploding`` finding (relative gradients scaled up) and a
``nonfinite`` one; with ``scaler=`` the monitor divides the scale out, the overflow steps are
``amp_overflow`` events, and nothing is found. See docs/watch.md, "float16 with a GradScaler".
"""

from __future__ import annotations

import logging
from typing import Any

import torch

import gradwell


def llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16))


def run(with_scaler: bool, steps: int = 12) -> dict[str, Any]:
    """Train with float16 autocast and a GradScaler; the findings, the overflow events and
    the steps on which the scaler itself backed off."""
    model = llama()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 20)   # high: it backs off first
    mon = gradwell.watch(model, scaler=scaler if with_scaler else None)
    start = torch.randint(0, 64, (8, 1), generator=torch.Generator().manual_seed(0))
    ids = (start + torch.arange(16)) % 64                 # a learnable pattern
    backed_off, losses = [], []
    for step in range(steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(input_ids=ids, labels=ids).loss
        before = scaler.get_scale()
        scaler.scale(loss).backward()
        mon.step(loss)                                     # after backward, before the step
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < before:
            backed_off.append(step)
        losses.append(float(loss.detach()))
    mon.close()
    return {"findings": mon.findings(), "losses": losses, "backed_off": backed_off,
            "overflow_events": [e["step"] for e in mon.history.events
                                if e["kind"] == "amp_overflow"]}


def main() -> dict[str, dict[str, Any]]:
    out = {"without scaler=": run(False), "with scaler=": run(True)}
    for label, r in out.items():
        print(f"{label}: loss {r['losses'][0]:.2f} -> {r['losses'][-1]:.2f}; the scaler backed "
              f"off at steps {r['backed_off']}; amp_overflow events at {r['overflow_events']}")
        for f in r["findings"]:
            print("  ", str(f).splitlines()[0])
        if not r["findings"]:
            print("   no findings")
    return out


if __name__ == "__main__":
    main()
