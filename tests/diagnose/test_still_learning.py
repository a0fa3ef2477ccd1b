"""`vanishing` is not raised for a layer that the optimizer still moves at a healthy rate.

Hugging Face Mamba from a config: ``mixer.dt_proj`` is initialised with weights of std
``dt_rank ** -0.5`` (large) and gets a small gradient, so its relative gradient is ~1e-3 of the
other layers'. Under Adam, whose step does not depend on the gradient's scale, it still moves by
about 1e-3 of itself per step; under SGD it moves by its gradient, ~1e-5, and is frozen.
Evidence from torch in the test: relative gradients and relative updates of the weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import gradwell

pytest.importorskip("transformers")

V, S, B = 64, 16, 8
DT = "backbone.layers.1.mixer.dt_proj"


def _mamba() -> torch.nn.Module:
    from transformers import MambaConfig, MambaForCausalLM
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    return MambaForCausalLM(MambaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                                        state_size=8))


def _train(make_opt, steps: int):
    model = _mamba()
    start = torch.randint(0, V, (B, 1), generator=torch.Generator().manual_seed(0))
    ids = (start + torch.arange(S)) % V
    opt = make_opt(model.parameters())
    mon = gradwell.watch(model, optimizer=opt, update_every=2)
    linear = {n: m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    losses, rel_grad, rel_update = [], [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        before = {n: w.detach().clone() for n, w in linear.items()}
        rel_grad.append({n: float(w.grad.norm() / w.detach().norm()) for n, w in linear.items()})
        opt.step()
        rel_update.append({n: float((w.detach() - before[n]).norm() / before[n].norm())
                           for n, w in linear.items()})
        losses.append(float(loss.detach()))
    mon.close()
    med = {k: {n: float(np.median([r[n] for r in rows])) for n in linear}
           for k, rows in (("grad", rel_grad), ("update", rel_update))}
    return mon, losses, med


def _others(med: dict[str, float]) -> float:
    return float(np.median([v for n, v in med.items() if n != DT]))


def test_adam_moves_the_small_gradient_layer_so_no_vanishing():
    mon, losses, med = _train(lambda ps: torch.optim.Adam(ps, lr=3e-3), 16)
    assert losses[-1] < 0.6 * losses[0]                                    # torch: it learns
    assert med["grad"][DT] < 1e-2 * _others(med["grad"])                   # small gradient ...
    assert 1e-4 < med["update"][DT] < 0.1                                  # ... healthy step
    assert med["update"][DT] > 1e-2 * _others(med["update"])
    bad = [f for f in mon.findings() if f.severity != "info"]
    assert not bad, [str(f) for f in bad]


def test_under_sgd_the_same_layer_is_frozen_and_reported():
    mon, _, med = _train(lambda ps: torch.optim.SGD(ps, lr=0.05), 16)
    assert med["update"][DT] < 1e-3 * _others(med["update"])               # torch: frozen
    found = [f for f in mon.findings() if f.kind == "vanishing"]
    assert found and DT in found[0].evidence["relative_grad_vs_reference"], mon.findings()
