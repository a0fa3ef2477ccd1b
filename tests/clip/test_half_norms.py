"""float16 gradients whose every value is finite can have a 2-norm above float16's largest value
(65504). The monitor and the guard accumulate their norms in float32 (``wide_half``), so they
see the true norm, judged against torch's float64 norm, where torch's float16 norm is ``inf``;
clipping keeps torch's ``clip_grad_norm_`` arithmetic (the optimizers match torch's path)."""

from __future__ import annotations

import torch
from torch import nn

import gradwell
from gradwell.clip.base import grad_norms


def _half_model_with_big_finite_grads() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)).half()
    x, y = torch.randn(256, 512).half(), torch.randint(0, 10, (256,))
    loss = nn.functional.cross_entropy(model(x).float(), y) * 150000.0
    loss.backward()
    return model, loss


def test_float16_norms_are_accumulated_in_float32():
    g = [torch.full((100000,), 300.0, dtype=torch.float16), torch.randn(10).half(),
         torch.randn(100000)]
    norms = grad_norms(g, wide_half=True)
    ref = [float(t.double().norm()) for t in g]
    assert float(grad_norms(g)[0]) == float("inf")         # the default: torch's arithmetic
    assert float(g[0].norm()) == float("inf")              # torch's float16 norm overflows
    assert [n.dtype for n in norms] == [torch.float32, torch.float32, torch.float32]
    assert all(abs(float(n) - r) <= 1e-4 * r for n, r in zip(norms, ref))   # float32 sums


def test_clip_guard_and_monitor_see_the_true_norm_of_finite_float16_gradients():
    model, loss = _half_model_with_big_finite_grads()
    grads = [p.grad for p in model.parameters()]
    assert all(bool(torch.isfinite(g).all()) for g in grads)          # torch: every value finite
    true = float(torch.cat([g.double().flatten() for g in grads]).norm())
    assert true > 65504 and float(torch.stack([g.norm() for g in grads]).norm()) == float("inf")
    mon = gradwell.watch(model)
    mon.step(loss)
    mon.close()
    assert abs(mon.history.series("total_grad_norm")[2][0, 0] - true) < 1e-3 * true
    assert "nonfinite" not in [f.kind for f in mon.findings()]
    guard = gradwell.guard.Guard(model, torch.optim.SGD(model.parameters(), lr=1e-9),
                                 spike_z=None)
    assert guard.step(loss) == "ok"
    model, _ = _half_model_with_big_finite_grads()
    total, _ = gradwell.clip.clip_(model.parameters(), gradwell.clip.GlobalNorm(1.0))
    ref, _ = _half_model_with_big_finite_grads()
    assert float(total) == float(torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0))
