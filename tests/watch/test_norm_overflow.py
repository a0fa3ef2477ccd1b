"""Norms of finite values that overflow float32 are not NaN/Inf (torch evidence: isfinite).

A float32 sum of squares passes float32's largest value (~3.4e38) at a norm of ~1.8e19, so a
layer with such weights used to read as weights "non-finite", and per-layer sums of parameter
norms above that overflowed as well. The model is Hugging Face Llama (from a config) with one
spare embedding row, never looked up, initialised badly (1e30 per value, finite in float32).
"""

from __future__ import annotations

import math

import numpy as np
import torch

import gradwell
from models_zoo import VOCAB, ZOO, train

EMB = "model.embed_tokens"


def _llama_with_a_huge_spare_row(value: float) -> torch.nn.Module:
    model = ZOO["llama"].build()
    model.resize_token_embeddings(VOCAB + 1)        # row VOCAB: no batch holds that id
    with torch.no_grad():
        model.model.embed_tokens.weight[VOCAB] = value
    return model


def _watched(model: torch.nn.Module, steps: int = 4) -> gradwell.watch.Monitor:
    mon = gradwell.watch(model, update_every=1)
    train(ZOO["llama"], steps, model=model, after_backward=lambda s, m, loss: mon.step(loss))
    mon.close()
    return mon


def test_a_finite_weight_whose_float32_norm_overflows_is_measured_not_called_nonfinite():
    model = _llama_with_a_huge_spare_row(1e30)
    w = model.model.embed_tokens.weight
    assert torch.isfinite(w).all()                               # torch: every value finite
    assert torch.linalg.vector_norm(w.detach()).isinf()          # its float32 norm overflows
    mon = _watched(model)
    # Adam never moves the row (its gradient is 0: m = v = 0), so the norm is the same at every
    # step; torch computes it in float64
    expected = torch.linalg.vector_norm(w.detach(), dtype=torch.float64).item()
    assert math.isclose(expected, 1e30 * math.sqrt(32), rel_tol=1e-6)
    steps, names, norms = mon.history.series("weight_norm")
    np.testing.assert_allclose(norms[:, names.index(EMB)], expected, rtol=1e-6)
    assert np.isfinite(norms).all()
    assert mon.history.first_nonfinite() is None
    assert not [f for f in mon.findings() if f.kind == "nonfinite"], mon.findings()


def test_an_inf_weight_is_still_named_as_the_nonfinite_weights():
    model = _llama_with_a_huge_spare_row(math.inf)
    mon = _watched(model, steps=2)
    found = [f for f in mon.findings() if f.kind == "nonfinite"]
    assert found and found[0].layer == EMB and found[0].evidence["where"] == "weights"


def test_layer_and_total_norms_of_large_finite_parameter_norms_do_not_overflow():
    # the first layer's weight and bias have norms of 1.5e19 each: their squares (2.25e38) are
    # finite in float32, the layer's sum of them (4.5e38) is not; so are their gradients
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    mon = gradwell.watch(model, activations=False)
    x = torch.randn(8, 4) * 1e-30                  # the huge layer's output stays small
    with torch.no_grad():
        model[0].weight.fill_(3.75e18)
        model[0].bias.fill_(7.5e18)
    model[1](model[0](x)).sum().backward()
    model[0].weight.grad.fill_(3.75e18)
    model[0].bias.grad.fill_(7.5e18)
    for p in model[1].parameters():               # the second layer's, set to something small
        p.grad.fill_(1.0)
    assert all(torch.linalg.vector_norm(p).isfinite() for p in model[0].parameters())
    assert all(torch.linalg.vector_norm(p.grad).isfinite() for p in model[0].parameters())
    mon.step()
    mon.close()
    ref_w = math.hypot(torch.linalg.vector_norm(model[0].weight, dtype=torch.float64).item(),
                       torch.linalg.vector_norm(model[0].bias, dtype=torch.float64).item())
    ref_g = torch.linalg.vector_norm(torch.cat([p.grad.flatten().double()
                                                for p in model.parameters()])).item()
    _, names, w = mon.history.series("weight_norm")
    assert math.isclose(w[0, names.index("0")], ref_w, rel_tol=1e-6)
    total = mon.history.series("total_grad_norm")[2][0, 0]
    assert math.isclose(total, ref_g, rel_tol=1e-6)


def test_outputs_whose_float32_squares_overflow_are_an_overflow_not_a_nan():
    # Llama under bfloat16 autocast with one MLP's output weights at 1e37: that MLP's outputs
    # are finite in bfloat16, the sum of their squares is not, and the final RMSNorm turns the
    # hidden state to 0 (the loss stays at log(vocab)): a broken run that must be named
    model = ZOO["llama"].build()
    site = "model.layers.1.mlp.down_proj"
    with torch.no_grad():
        model.get_submodule(site).weight.fill_(1e37)
    seen: dict[str, torch.Tensor] = {}

    def keep(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen.setdefault("out", out.detach())
    model.get_submodule(site).register_forward_hook(keep)
    mon = gradwell.watch(model)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, losses = train(ZOO["llama"], 2, model=model,
                          after_backward=lambda s, m, loss: mon.step(loss))
    out = seen["out"]
    # torch: every output value, the loss and every gradient are finite; the outputs' float32
    # sum is too, their float32 sum of squares is not
    assert torch.isfinite(out).all() and out.float().sum().isfinite()
    assert out.float().square().sum().isinf()
    assert all(math.isfinite(x) for x in losses)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    found = [f for f in mon.findings() if f.kind == "nonfinite"]
    assert found and found[0].layer == site and found[0].evidence["where"] == "overflow"
    assert "outputs are finite (their mean is)" in found[0].message
    assert "NaN/Inf first" not in found[0].message
