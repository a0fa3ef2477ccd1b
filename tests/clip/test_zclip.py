"""ZClip against a plain-Python loop written from Kumar et al. 2025, Algorithm 1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gradwell
from gradwell.clip import ZClip, clip_

from clip_helpers import assert_resume_is_seamless, grads_with_norm, no_host_sync, norm_sequence


class ZClipReference:
    """The paper's algorithm with Python floats and lists (no tensors)."""

    def __init__(self, alpha: float, z_thresh: float, warmup: int, reciprocal: bool) -> None:
        self.alpha, self.z, self.warmup, self.reciprocal = alpha, z_thresh, warmup, reciprocal
        self.buffer: list[float] = []
        self.mean = self.var = None

    def factor(self, g: float) -> float:
        if self.mean is None:
            self.buffer.append(g)
            if len(self.buffer) == self.warmup:
                self.mean = sum(self.buffer) / len(self.buffer)
                self.var = sum((x - self.mean) ** 2 for x in self.buffer) / len(self.buffer)
            return 1.0
        std = math.sqrt(self.var)
        z = (g - self.mean) / (std + 1e-6)
        g_eff, factor = g, 1.0
        if z > self.z:
            g_eff = self.mean + (self.z ** 2 / z if self.reciprocal else self.z) * std
            factor = g_eff / (g + 1e-6)
        self.mean = self.alpha * self.mean + (1 - self.alpha) * g_eff
        self.var = self.alpha * self.var + (1 - self.alpha) * (g_eff - self.mean) ** 2
        return factor


@pytest.mark.parametrize("reciprocal", [True, False])
@pytest.mark.parametrize("alpha,z_thresh,warmup", [(0.97, 2.5, 25), (0.9, 1.5, 5)])
def test_matches_reference_loop(reciprocal: bool, alpha: float, z_thresh: float,
                                warmup: int) -> None:
    norms = norm_sequence(80, seed=2, spikes=(3, 30, 31, 60))
    ref = ZClipReference(alpha, z_thresh, warmup, reciprocal)
    clipper = ZClip(alpha, z_thresh, warmup, reciprocal=reciprocal)
    clipped = 0
    for t, target in enumerate(norms):
        params = [torch.zeros_like(g, requires_grad=True) for g in grads_with_norm(target, t)]
        for p, g in zip(params, grads_with_norm(target, t)):
            p.grad = g.clone()
        measured = float(torch.nn.utils.clip_grad_norm_(params, math.inf))
        factor = ref.factor(measured)
        clipped += factor < 1
        clip_(params, clipper)
        for p, g in zip(params, grads_with_norm(target, t)):
            np.testing.assert_allclose(p.grad.numpy(), g.numpy() * factor, rtol=2e-5, atol=1e-8)
    assert clipped >= 3, "the sequence must trigger clipping after warmup"
    mean, std = clipper.stats
    assert math.isclose(float(mean), ref.mean, rel_tol=1e-5)
    assert math.isclose(float(std), math.sqrt(ref.var), rel_tol=1e-4)


def test_spike_during_warmup_is_not_clipped() -> None:
    clipper = ZClip(warmup=3)
    for v in [1.0, 100.0]:
        assert float(clipper([], [], [], torch.tensor(v))) == 1.0


def test_nonfinite_norm_leaves_statistics_alone() -> None:
    a, b = ZClip(0.9, 2.0, 3), ZClip(0.9, 2.0, 3)
    for i, v in enumerate([1.0, 1.2, 0.9, 1.1, 1.05, 3.0, 1.0]):
        a([], [], [], torch.tensor(v))
        b([], [], [], torch.tensor(v))
        if i in (3, 5):  # after warmup
            a([], [], [], torch.tensor(float("nan")))
            a([], [], [], torch.tensor(float("inf")))
        assert torch.equal(a.stats[0], b.stats[0]) and torch.equal(a.stats[1], b.stats[1]), i


def test_nonfinite_norm_in_warmup_is_left_out_of_initial_statistics() -> None:
    clipper = ZClip(0.9, 2.0, warmup=4)
    for v in [1.0, float("nan"), 3.0, float("inf")]:
        clipper([], [], [], torch.tensor(v))
    mean, std = clipper.stats
    assert float(mean) == 2.0 and float(std) == 1.0  # of (1, 3) only


def test_no_host_sync() -> None:
    clipper = ZClip(warmup=4)
    grads = grads_with_norm(3.0, 0)
    norms = list(torch._foreach_norm(grads, 2.0))
    with no_host_sync():
        for v in [1.0, 1.1, 0.9, 1.0, 50.0, 1.0]:
            factor = clipper(grads, grads, norms, torch.tensor(v))
    assert factor.dim() == 0


def test_state_dict_round_trip_through_optimizer() -> None:
    assert_resume_is_seamless(
        lambda p: gradwell.optim.Optimizer(
            [p], gradwell.optim.chain(ZClip(warmup=10), gradwell.optim.trace(0.0)), lr=0.1),
        norm_sequence(40, seed=7, spikes=(20, 33)), split=18)


@pytest.mark.parametrize("kwargs,message", [
    ({"z_thresh": 0}, r"z_thresh must be a positive number, got 0"),
    ({"z_thresh": -1.0}, r"z_thresh must be a positive number, got -1.0"),
    ({"alpha": 1.0}, r"alpha must be a number in \(0, 1\).*got 1.0"),
    ({"warmup": 0}, r"warmup must be an int >= 1.*got 0"),
])
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ZClip(**kwargs)


def test_dropin_adam_folds_the_factor_like_the_reference() -> None:
    """gradwell.optim.Adam(clip=ZClip) (the factor rides in the fused kernel) against
    torch.optim.Adam on gradients scaled by the reference loop's factor."""
    norms = norm_sequence(40, seed=11, spikes=(15, 30))
    ref = ZClipReference(0.97, 2.5, 8, True)
    p_ref = torch.nn.Parameter(torch.zeros(15, dtype=torch.float64))
    p_gw = torch.nn.Parameter(torch.zeros(15, dtype=torch.float64))
    opt_ref = torch.optim.Adam([p_ref], lr=0.01)
    opt_gw = gradwell.optim.Adam([p_gw], lr=0.01, clip=ZClip(warmup=8))
    clipped = 0
    for t, target in enumerate(norms):
        g = grads_with_norm(target, t)[0].reshape(-1).double()
        factor = ref.factor(float(torch.linalg.vector_norm(g)))
        clipped += factor < 1
        p_ref.grad, p_gw.grad = g * factor, g.clone()
        opt_ref.step()
        opt_gw.step()
    assert clipped >= 2
    np.testing.assert_allclose(p_gw.detach().numpy(), p_ref.detach().numpy(), rtol=1e-6,
                               atol=1e-9)
