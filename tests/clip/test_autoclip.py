"""AutoClip against the paper's recipe: a Python list, numpy.percentile and clip_grad_norm_."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gradwell
from gradwell.clip import AutoClip, clip_

from clip_helpers import assert_resume_is_seamless, grads_with_norm, no_host_sync, norm_sequence


def run_reference(norms: list[float], percentile: float,
                  window: int | None) -> list[list[np.ndarray]]:
    """Seetharaman et al. 2020: append the norm, clip_grad_norm_ to the percentile."""
    history: list[float] = []
    out = []
    for t, target in enumerate(norms):
        params = [torch.zeros_like(g, requires_grad=True) for g in grads_with_norm(target, t)]
        for p, g in zip(params, grads_with_norm(target, t)):
            p.grad = g
        norm = float(torch.nn.utils.clip_grad_norm_(params, math.inf))  # only measures
        history.append(norm)
        kept = history if window is None else history[-window:]
        torch.nn.utils.clip_grad_norm_(params, float(np.percentile(kept, percentile)))
        out.append([p.grad.numpy().copy() for p in params])
    return out


def run_autoclip(clipper: AutoClip, norms: list[float], start: int = 0) -> list[list[np.ndarray]]:
    out = []
    for t, target in enumerate(norms, start):
        params = [torch.zeros_like(g, requires_grad=True) for g in grads_with_norm(target, t)]
        for p, g in zip(params, grads_with_norm(target, t)):
            p.grad = g
        clip_(params, clipper)
        out.append([p.grad.numpy().copy() for p in params])
    return out


@pytest.mark.parametrize("percentile", [10, 50, 90, 100])
def test_matches_paper_recipe_with_full_history(percentile: float) -> None:
    norms = norm_sequence(60, spikes=(20, 41))
    expected = run_reference(norms, percentile, window=None)
    got = run_autoclip(AutoClip(percentile, history=1000), norms)
    for e_step, g_step in zip(expected, got):
        for e, g in zip(e_step, g_step):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-8)


def test_bounded_history_uses_last_norms() -> None:
    norms = norm_sequence(50, seed=3, spikes=(5, 6, 7, 30))
    expected = run_reference(norms, 10, window=8)
    full = run_reference(norms, 10, window=None)
    got = run_autoclip(AutoClip(10, history=8), norms)
    for e_step, g_step in zip(expected, got):
        for e, g in zip(e_step, g_step):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-8)
    # the window matters: the full-history recipe gives different gradients by the end
    assert not np.allclose(full[-1][0], expected[-1][0], rtol=1e-3)


def test_spike_is_scaled_down_to_percentile() -> None:
    clipper = AutoClip(50, history=100)
    for v in [1.0, 2.0, 3.0, 4.0]:
        clipper([], [], [], torch.tensor(v))
    factor = clipper([], [], [], torch.tensor(1000.0))
    # history (1, 2, 3, 4, 1000): median 3
    assert torch.allclose(factor, torch.tensor(3.0 / (1000.0 + 1e-6)))


def test_nonfinite_norm_is_not_recorded() -> None:
    a, b = AutoClip(50, history=4), AutoClip(50, history=4)
    for v in [1.0, 5.0, 2.0]:
        a([], [], [], torch.tensor(v))
        b([], [], [], torch.tensor(v))
    assert not torch.isfinite(a([], [], [], torch.tensor(float("nan"))))
    a([], [], [], torch.tensor(float("inf")))
    fa = a([], [], [], torch.tensor(3.0))
    fb = b([], [], [], torch.tensor(3.0))
    assert torch.equal(fa, fb)
    assert a.norms.tolist() == [1.0, 5.0, 2.0, 3.0]


def test_no_host_sync() -> None:
    clipper = AutoClip(10, history=16)
    grads = grads_with_norm(3.0, 0)
    norms = list(torch._foreach_norm(grads, 2.0))
    total = torch.linalg.vector_norm(torch.stack(norms))
    with no_host_sync():
        for _ in range(20):
            factor = clipper(grads, grads, norms, total)
    assert factor.dim() == 0


def test_state_saved_in_optimizer_state_dict() -> None:
    assert_resume_is_seamless(
        lambda p: gradwell.optim.Optimizer([p], gradwell.optim.trace(0.0), lr=0.1,
                                           clip=AutoClip(20, history=10)),
        norm_sequence(30, seed=5, spikes=(12, 25)), split=15)


@pytest.mark.parametrize("bad", [0, -5, 100.5, float("nan"), True])
def test_bad_percentile(bad: object) -> None:
    with pytest.raises(ValueError, match=r"percentile must be a number in \(0, 100\], got"):
        AutoClip(bad)  # type: ignore[arg-type]


def test_bad_history() -> None:
    with pytest.raises(ValueError, match=r"history must be an int >= 1.*got 0"):
        AutoClip(10, history=0)
    with pytest.raises(ValueError, match=r"history=5"):
        AutoClip(10, history=5).load_state_dict(AutoClip(10, history=3).state_dict()
                                                or {"history": torch.zeros(3),
                                                    "pos": torch.tensor(0)})


def test_dropin_adam_folds_the_factor_like_the_reference() -> None:
    """gradwell.optim.Adam(clip=AutoClip) against torch.optim.Adam after the paper's recipe."""
    norms = norm_sequence(40, seed=13, spikes=(10, 25))
    history: list[float] = []
    p_ref = torch.nn.Parameter(torch.zeros(15, dtype=torch.float64))
    p_gw = torch.nn.Parameter(torch.zeros(15, dtype=torch.float64))
    opt_ref = torch.optim.Adam([p_ref], lr=0.01)
    opt_gw = gradwell.optim.Adam([p_gw], lr=0.01, clip=AutoClip(25, history=100))
    for t, target in enumerate(norms):
        g = grads_with_norm(target, t)[0].reshape(-1).double()
        p_ref.grad, p_gw.grad = g.clone(), g.clone()
        history.append(float(torch.linalg.vector_norm(g)))
        torch.nn.utils.clip_grad_norm_([p_ref], float(np.percentile(history, 25)))
        opt_ref.step()
        opt_gw.step()
    np.testing.assert_allclose(p_gw.detach().numpy(), p_ref.detach().numpy(), rtol=1e-6,
                               atol=1e-9)
