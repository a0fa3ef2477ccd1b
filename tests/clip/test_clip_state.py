"""Issue 10, item 5: a stateful clipper's state is the optimizer's, never the clipper object's:
per parameter group inside a ``chain``, global with ``clip=``, saved and restored exactly by
``state_dict()``/``load_state_dict()``.

References: the AutoClip paper's recipe written with ``numpy.percentile`` per history, and
runs with a fresh clipper object per optimizer.
"""

from __future__ import annotations

import io

import numpy as np
import torch

import gradwell
from clip_helpers import assert_resume_is_seamless, norm_sequence
from gradwell.clip import AutoClip, ZClip

O = gradwell.optim


def grad_of_norm(target: float, seed: int) -> torch.Tensor:
    g = torch.randn(15, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return g * (target / torch.linalg.vector_norm(g))


def test_two_groups_with_100x_norms_keep_two_autoclip_histories() -> None:
    norms = norm_sequence(30, seed=3, spikes=(9, 21))
    p1, p2 = (torch.nn.Parameter(torch.zeros(15, dtype=torch.float64)) for _ in range(2))
    clipper = AutoClip(50, history=100)
    opt = O.Optimizer([{"params": [p1]}, {"params": [p2]}], O.chain(clipper, O.trace(0.0)),
                      lr=0.1)
    ref = [np.zeros(15), np.zeros(15)]
    history: list[list[float]] = [[], []]
    for t, n in enumerate(norms):
        grads = [grad_of_norm(n, t), grad_of_norm(100 * n, t + 1000)]
        p1.grad, p2.grad = grads[0].clone(), grads[1].clone()
        opt.step()
        for i, g in enumerate(grads):  # the paper's recipe, one history per group
            history[i].append(float(torch.linalg.vector_norm(g)))
            threshold = np.percentile(history[i], 50)
            ref[i] -= 0.1 * g.numpy() * min(1.0, threshold / (history[i][-1] + 1e-6))
    np.testing.assert_allclose(p1.detach().numpy(), ref[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p2.detach().numpy(), ref[1], rtol=1e-10, atol=1e-12)
    for i in range(2):
        kept = clipper.recorded(opt.clip_state["groups"][i][0])
        np.testing.assert_allclose(kept.numpy(), history[i], rtol=1e-12)
    assert clipper.norms.numel() == 0, "nothing is stored on the clipper object"


def test_one_clipper_object_on_two_optimizers_does_not_mix_histories() -> None:
    norms = norm_sequence(30, seed=4, spikes=(8, 20))
    shared = ZClip(warmup=5)

    def run(clip_a, clip_b):
        pa, pb = (torch.nn.Parameter(torch.zeros(15, dtype=torch.float64)) for _ in range(2))
        opt_a = O.Adam([pa], lr=0.01, clip=clip_a)
        opt_b = O.SGD([pb], lr=0.01, clip=clip_b)
        for t, n in enumerate(norms):
            pa.grad, pb.grad = grad_of_norm(n, t), grad_of_norm(100 * n + 50 * (t % 3), t)
            opt_a.step()
            opt_b.step()
        return pa, pb
    pa, pb = run(shared, shared)
    ra, rb = run(ZClip(warmup=5), ZClip(warmup=5))
    assert torch.equal(pa, ra) and torch.equal(pb, rb)
    assert shared.state_dict() == {}


def test_save_and_load_in_the_middle_of_zclip_warmup_continues_exactly() -> None:
    norms = norm_sequence(40, seed=7, spikes=(20, 33))
    assert_resume_is_seamless(lambda p: O.Adam([p], lr=0.01, clip=ZClip(warmup=10)), norms,
                              split=4)
    assert_resume_is_seamless(
        lambda p: O.Optimizer([p], O.chain(ZClip(warmup=10), O.scale_by_adam()), lr=0.01),
        norms, split=4)


def test_clip_state_survives_torch_save_with_weights_only() -> None:
    p = torch.nn.Parameter(torch.zeros(15))
    opt = O.Optimizer([{"params": [p]}], O.chain(AutoClip(10, history=8), O.trace(0.9)),
                      lr=0.1, clip=ZClip(warmup=3))
    for t in range(5):
        p.grad = grad_of_norm(1.0 + t, t).float()
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    cs = saved["gradwell"]["clip_state"]
    assert cs["clip"]["step"] == 5 and torch.equal(cs["clip"]["mean"], opt.clip_state["clip"]["mean"])
    assert torch.equal(cs["groups"][0][0]["history"].nan_to_num(-1),
                       opt.clip_state["groups"][0][0]["history"].nan_to_num(-1))


def test_earlier_checkpoint_layout_still_loads() -> None:
    """Checkpoints of earlier versions kept one state per clipper object in a list."""
    p = torch.nn.Parameter(torch.zeros(15))
    clipper = AutoClip(10, history=8)
    for t in range(4):
        clipper([], [], [], torch.tensor(1.0 + t))
    opt = O.Adam([p], clip=AutoClip(10, history=8))
    sd = opt.state_dict()
    del sd["gradwell"]["clip_state"]
    sd["gradwell"]["clippers"] = [clipper.state_dict()]
    opt.load_state_dict(sd)
    assert AutoClip(10, 8).recorded(opt.clip_state["clip"]).tolist() == [1.0, 2.0, 3.0, 4.0]
