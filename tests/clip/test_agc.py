"""AGC against a per-unit NumPy loop written from Brock et al. 2021, eq. (3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gradwell
from gradwell.clip import AGC, clip_


def agc_reference(grad: np.ndarray, weight: np.ndarray, clipping: float, eps: float) -> np.ndarray:
    """The paper's rule, one unit at a time, in float64."""
    grad = grad.astype(np.float64)
    weight = weight.astype(np.float64)
    if grad.ndim <= 1:  # a bias or gain is one unit
        units_g, units_w = [grad.reshape(-1)], [weight.reshape(-1)]
    else:
        units_g = [grad[i].reshape(-1) for i in range(grad.shape[0])]
        units_w = [weight[i].reshape(-1) for i in range(weight.shape[0])]
    out = []
    for g, w in zip(units_g, units_w):
        w_norm = max(np.sqrt(np.sum(w * w)), eps)
        g_norm = np.sqrt(np.sum(g * g))
        if g_norm / w_norm > clipping:
            g = g * (clipping * w_norm / g_norm)
        out.append(g)
    return np.concatenate(out).reshape(grad.shape)


def make_tensors(seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(8, 5), (8,), (6, 3, 3, 3), (6,), (4, 2, 7), (), (3, 4)]
    params = [torch.randn(s, generator=gen) for s in shapes]
    params[3].zero_()  # zero-initialised bias: the eps floor matters
    params[6][1].zero_()  # one zero unit inside a matrix
    grads = [torch.randn(s, generator=gen) * 0.05 for s in shapes]
    grads[0][2] *= 100.0  # a few units far above the threshold
    grads[2][0] *= 50.0
    return params, grads


@pytest.mark.parametrize("clipping,eps", [(0.01, 1e-3), (0.05, 1e-3), (0.2, 1e-2)])
def test_clip_matches_per_unit_reference(clipping: float, eps: float) -> None:
    params, grads = make_tensors()
    expected = [agc_reference(g.numpy(), p.numpy(), clipping, eps) for g, p in zip(grads, params)]
    ps = [p.clone().requires_grad_() for p in params]
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    clip_(ps, AGC(clipping, eps))
    clipped_any = False
    for p, e, g in zip(ps, expected, grads):
        np.testing.assert_allclose(p.grad.numpy(), e, rtol=2e-6, atol=1e-9)
        clipped_any |= not np.allclose(e, g.numpy())
    assert clipped_any, "the test data must actually trigger clipping"


def test_small_gradients_are_left_bitwise_alone() -> None:
    params, _ = make_tensors()
    ps = [p.clone().requires_grad_() for p in params]
    for p in ps:
        p.grad = torch.full_like(p, 1e-9)
    before = [p.grad.clone() for p in ps]
    clip_(ps, AGC(0.01))
    for p, b in zip(ps, before):
        assert torch.equal(p.grad, b)


def test_zero_gradient_unit_stays_zero_and_finite() -> None:
    w = torch.zeros(3, 4, requires_grad=True)
    w.grad = torch.zeros(3, 4)
    w.grad[1] = 1.0
    clip_([w], AGC(0.01, eps=1e-3))
    assert torch.isfinite(w.grad).all()
    assert torch.equal(w.grad[0], torch.zeros(4))
    # unit 1: ||g|| = 2, max norm = 0.01 * 1e-3 -> scaled to norm 1e-5
    assert torch.allclose(w.grad[1].norm(), torch.tensor(1e-5), rtol=1e-5)


def test_exclude_module_and_tensor() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 10
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    clip_(model.parameters(), AGC(0.01, exclude=model[2]))
    assert torch.equal(model[2].weight.grad, before["2.weight"])
    assert torch.equal(model[2].bias.grad, before["2.bias"])
    ref = agc_reference(before["0.weight"].numpy(), model[0].weight.detach().numpy(), 0.01, 1e-3)
    np.testing.assert_allclose(model[0].weight.grad.numpy(), ref, rtol=2e-6)
    assert AGC(0.01, exclude=[model[0].weight]).excluded[0] is model[0].weight


def sgd_step_reference(model: nn.Module, head: nn.Module, lr: float) -> dict[str, np.ndarray]:
    head_ids = {id(p) for p in head.parameters()}
    out = {}
    for n, p in model.named_parameters():
        g = p.grad.numpy()
        if id(p) not in head_ids:
            g = agc_reference(g, p.detach().numpy(), 0.02, 1e-3)
        out[n] = p.detach().numpy().astype(np.float64) - lr * g
    return out


def make_model_with_grads(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(16, 5), nn.Linear(5, 3))
    x = torch.randn(7, 2, 4, 4) * 30
    model(x).pow(2).sum().backward()
    return model


@pytest.mark.parametrize("route", ["clip=", "chain", "dropin"])
def test_three_routes_match_reference(route: str) -> None:
    model = make_model_with_grads()
    head = model[3]
    expected = sgd_step_reference(model, head, lr=0.1)
    agc = AGC(0.02, exclude=head)
    if route == "clip=":
        opt = gradwell.optim.Optimizer(model.parameters(), gradwell.optim.trace(0.0), lr=0.1,
                                       clip=agc)
    elif route == "chain":
        opt = gradwell.optim.Optimizer(model.parameters(),
                                       gradwell.optim.chain(agc, gradwell.optim.trace(0.0)), lr=0.1)
    else:
        opt = gradwell.optim.SGD(model.parameters(), lr=0.1, clip=agc)
    opt.step()
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.detach().numpy(), expected[n], rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match=r"clipping must be a positive number, got -0.1"):
        AGC(-0.1)
    with pytest.raises(ValueError, match=r"eps must be a positive number, got 0"):
        AGC(0.01, eps=0)
    with pytest.raises(TypeError, match=r"exclude must hold modules or tensors.*str"):
        AGC(0.01, exclude=["fc"])


def test_hf_conv1d_weights_are_clipped_per_output_unit_along_their_last_axis() -> None:
    """GPT-2's Conv1D stores (in, out): its units are columns (the reference on the transpose)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from models_zoo import ZOO

    model = ZOO["gpt2"].build()
    conv = model.transformer.h[0].attn.c_attn
    assert type(conv).__name__ == "Conv1D" and conv.weight.shape == (32, 96)
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(conv.weight.shape, generator=gen)
    grad[:, 5] *= 100.0
    want = agc_reference(grad.T.numpy(), conv.weight.detach().T.numpy(), 0.01, 1e-3).T
    agc = AGC(0.01, model=model)
    got = [grad.clone()]
    agc(got, [conv.weight], [], torch.zeros(()))
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-5, atol=1e-7)
    lin = nn.Linear(32, 96)                  # torch layout in the same model: units are rows
    got = [grad.T.clone()]
    AGC(0.01, unit_axis=-1)([g := got[0].T.contiguous()], [lin.weight.detach().T], [],
                            torch.zeros(()))
    want_lin = agc_reference(grad.T.numpy(), lin.weight.detach().numpy(), 0.01, 1e-3)
    np.testing.assert_allclose(g.T.numpy(), want_lin, rtol=1e-5, atol=1e-7)
    assert "Conv1D" in repr(agc)
    with pytest.raises(TypeError, match="unit_axis must be an int"):
        AGC(0.01, unit_axis="last")
    with pytest.raises(ValueError, match="unit_axis 2 is out of range"):
        AGC(0.01, unit_axis=2)([grad.clone()], [conv.weight], [], torch.zeros(()))
