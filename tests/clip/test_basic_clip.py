"""``Value`` and ``GlobalNorm`` against torch.nn.utils.clip_grad_value_ / clip_grad_norm_.

Both entry points are checked: ``gradwell.clip.clip_(parameters, clipper)`` on its own, and
``clip=`` inside every drop-in optimizer (against torch's clipping followed by torch's step,
step for step in float64, with the clipping threshold crossed on some steps and not others).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

import gradwell
from gradwell.clip import GlobalNorm, Value, clip_

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "optim"))
from optim_harness import BASE_LR, NAMES, gw, lockstep, paths, rel_err  # noqa: E402

SHAPES = [(4, 3), (5,), (), (2, 2, 2)]


def grad_params(seed: int, dtype=torch.float64, scale: float = 1.0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ps = []
    for shape in SHAPES:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=dtype))
        p.grad = scale * torch.randn(shape, generator=gen, dtype=dtype)
        ps.append(p)
    return ps


def clone_params(ps):
    out = []
    for p in ps:
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = p.grad.clone()
        out.append(q)
    return out


def joint_norm(grads, norm_type) -> float:
    flat = torch.cat([g.reshape(-1) for g in grads]).double()
    return torch.linalg.vector_norm(flat, norm_type).item()


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_clip_matches_clip_grad_norm(norm_type, max_norm, dtype, tol) -> None:
    ref = grad_params(1, dtype)
    got = clone_params(ref)
    before = [p.grad.clone() for p in ref]
    ref_total = torch.nn.utils.clip_grad_norm_(ref, max_norm, norm_type=norm_type)
    total, factor = clip_(got, GlobalNorm(max_norm, norm_type=norm_type))
    assert rel_err(total, ref_total) <= tol
    for r, g in zip(ref, got):
        assert rel_err(g.grad, r.grad) <= tol
    expected = min(1.0, max_norm / (joint_norm(before, norm_type) + 1e-6))
    assert abs(factor.item() - expected) <= tol * expected
    shrink = joint_norm([p.grad for p in got], norm_type) / joint_norm(before, norm_type)
    assert abs(factor.item() - shrink) <= 10 * tol


@pytest.mark.parametrize("limit", [0.3, 10.0])
def test_clip_matches_clip_grad_value(limit) -> None:
    ref = grad_params(2)
    got = clone_params(ref)
    before = [p.grad.clone() for p in ref]
    torch.nn.utils.clip_grad_value_(ref, limit)
    total, factor = clip_(got, Value(limit))
    for r, g in zip(ref, got):
        assert torch.equal(g.grad, r.grad)
    assert rel_err(total, torch.tensor(joint_norm(before, 2.0), dtype=torch.float64)) <= 1e-12
    shrink = joint_norm([p.grad for p in got], 2.0) / joint_norm(before, 2.0)
    assert abs(factor.item() - shrink) <= 1e-12
    assert (factor.item() < 1.0) == (limit < 10.0)


def test_parameters_without_grad_are_ignored_and_inputs_may_be_any_iterable() -> None:
    ref = grad_params(3)
    ref[1].grad = None
    got = clone_params([p for p in ref if p.grad is not None])
    ref_total = torch.nn.utils.clip_grad_norm_(ref, 0.5)
    no_grad = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    total, _ = clip_((p for p in [got[0], no_grad, *got[1:]]), GlobalNorm(0.5))
    assert rel_err(total, ref_total) <= 1e-12 and no_grad.grad is None
    for r, g in zip([p for p in ref if p.grad is not None], got):
        assert rel_err(g.grad, r.grad) <= 1e-12
    single = clone_params(grad_params(4))[0]
    ref_single = clone_params([single])[0]
    torch.nn.utils.clip_grad_norm_(ref_single, 0.1)
    clip_(single, GlobalNorm(0.1))
    assert rel_err(single.grad, ref_single.grad) <= 1e-12


def test_no_gradients_at_all() -> None:
    total, factor = clip_([torch.nn.Parameter(torch.ones(2))], GlobalNorm(1.0))
    assert total.item() == 0.0 and factor.item() == 1.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_gradients_like_torch_and_factor_is_nan(bad) -> None:
    """Same gradients as clip_grad_norm_(error_if_nonfinite=False); the factor says "nan"."""
    ref = grad_params(5)
    ref[0].grad[0, 0] = bad
    got = clone_params(ref)
    ref_total = torch.nn.utils.clip_grad_norm_(ref, 1.0)
    total, factor = clip_(got, GlobalNorm(1.0))
    assert torch.equal(total.isnan(), ref_total.isnan()) and (total.isinf() == ref_total.isinf())
    for r, g in zip(ref, got):
        assert torch.equal(g.grad.nan_to_num(), r.grad.nan_to_num())
        assert torch.equal(g.grad.isnan(), r.grad.isnan())
    assert math.isnan(factor.item()), f"documented: factor is nan for non-finite grads, got {factor}"


def test_clip_requires_a_clipper() -> None:
    with pytest.raises(TypeError, match="clipper"):
        clip_(grad_params(6), 1.0)


CLIPPERS = {
    "GlobalNorm(0.5)": (lambda: GlobalNorm(0.5), 0.5, 2.0),
    "GlobalNorm(0.25,inf)": (lambda: GlobalNorm(0.25, norm_type=math.inf), 0.25, math.inf),
    "Value(0.25)": (lambda: Value(0.25), 0.25, None),
}
KW = {"SGD": {"momentum": 0.9}, "Adagrad": {}, "RMSprop": {"centered": True}, "Adadelta": {},
      "Adam": {"amsgrad": True}, "AdamW": {}}
CASES = [pytest.param(name, clip, path_kw, id=f"{name}-{clip}-{path}")
         for name in NAMES for clip in CLIPPERS for path, path_kw in paths(name)[:2]]


@pytest.mark.parametrize("name, clip, path_kw", CASES)
def test_clip_keyword_matches_torch_clipping_then_step(name, clip, path_kw) -> None:
    make_clipper, c, norm_type = CLIPPERS[clip]
    kw = {"lr": BASE_LR[name], **KW[name]}
    crossed = []

    def ref_edit(model):
        if norm_type is None:
            big = max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None)
            crossed.append(big > c)
            torch.nn.utils.clip_grad_value_(model.parameters(), c)
        else:
            total = torch.nn.utils.clip_grad_norm_(model.parameters(), c, norm_type=norm_type)
            crossed.append(total.item() > c)

    lockstep(lambda m: getattr(torch.optim, name)(m.parameters(), foreach=False, **kw),
             lambda m: gw(name)(m.parameters(), clip=make_clipper(), **kw, **path_kw),
             ref_edit=ref_edit)
    assert any(crossed) and not all(crossed), "threshold must be crossed on some steps only"


def test_clip_keyword_on_composed_optimizer_spans_all_groups() -> None:
    """``clip=`` sees every group at once, like one clip_grad_norm_ over all parameters."""
    from optim_harness import two_groups

    def make(m):
        return gradwell.optim.Optimizer(two_groups(m, {}, {"lr": 0.003}),
                                        gradwell.optim.scale_by_adam(), lr=0.01,
                                        clip=GlobalNorm(0.3))
    lockstep(lambda m: torch.optim.Adam(two_groups(m, {}, {"lr": 0.003}), lr=0.01,
                                        foreach=False), make,
             ref_edit=lambda m: torch.nn.utils.clip_grad_norm_(m.parameters(), 0.3))



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_two_norms_of_large_tensors_match_torch_vector_norm(dtype) -> None:
    """Large contiguous CPU tensors take the BLAS-dot path, the rest ``_foreach_norm``: every
    norm equals ``torch.linalg.vector_norm``, NaN/inf propagate, order is kept."""
    from gradwell.clip.base import _DOT_MIN_NUMEL, grad_norms
    g = torch.Generator().manual_seed(0)
    big = torch.randn(_DOT_MIN_NUMEL + 7, generator=g, dtype=dtype) * 3
    small = torch.randn(100, generator=g, dtype=dtype)
    strided = torch.randn(400, 200, generator=g, dtype=dtype).t()      # not contiguous
    matrix = torch.randn(300, 200, generator=g, dtype=dtype)
    bad_nan, bad_inf = big.clone(), matrix.clone()
    bad_nan[5], bad_inf[1, 2] = float("nan"), float("inf")
    tensors = [small, big, strided, matrix, bad_nan, bad_inf]
    got = grad_norms(tensors)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for t, n in zip(tensors[:4], got[:4]):
        ref = torch.linalg.vector_norm(t)
        assert n.dtype == dtype and abs(float(n) - float(ref)) <= tol * float(ref)
    assert math.isnan(float(got[4])) and math.isinf(float(got[5]))
    if dtype == torch.float32:   # the dot accumulates at least as exactly as torch's norm
        wide = torch.randn(1_000_000, generator=g) * 0.01 + 0.003
        exact = float(wide.double().norm())
        ours, torchs = float(grad_norms([wide])[0]), float(wide.norm())
        assert abs(ours - exact) <= abs(torchs - exact) + 1e-7 * exact
    huge = torch.full((_DOT_MIN_NUMEL,), 1e20)        # overflows like torch's own norm
    assert math.isinf(float(grad_norms([huge])[0])) == math.isinf(float(huge.norm()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_square_sum_matches_torch_in_every_layout(dtype) -> None:
    """``square_sum`` (the monitor's activation and output-gradient statistic): the dot path
    and the norm path both equal ``sum(t**2)`` computed in float64, NaN/inf propagate."""
    from gradwell.clip.base import _DOT_MIN_NUMEL, square_sum
    g = torch.Generator().manual_seed(1)
    big = (torch.randn(8, 64, _DOT_MIN_NUMEL // 256, generator=g) * 2).to(dtype)
    cases = [big, big.transpose(0, 2), big[:, ::2], torch.randn(9, generator=g).to(dtype),
             big.clone().requires_grad_(dtype.is_floating_point)]
    tol = {torch.float64: 1e-12, torch.float32: 2e-5}.get(dtype, 1e-2)   # float32: ~sqrt(n) eps
    for t in cases:
        got, ref = square_sum(t), t.detach().double().square().sum()
        assert not got.requires_grad and got.dtype in (torch.float32, torch.float64)
        assert abs(float(got) - float(ref)) <= tol * float(ref)
    bad = big.clone()
    bad.view(-1)[3] = float("nan")
    assert math.isnan(float(square_sum(bad)))
    bad.view(-1)[3] = float("inf")
    assert math.isinf(float(square_sum(bad)))


def test_global_norm_on_large_layers_matches_clip_grad_norm() -> None:
    """A model whose layers take the dot path clips to torch's numbers."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Tanh(),
                                torch.nn.Linear(256, 10))
    ref = [torch.randn_like(p) * 50 for p in model.parameters()]
    for p, r in zip(model.parameters(), ref):
        p.grad = r.clone()
    twins = [torch.zeros_like(p, requires_grad=True) for p in model.parameters()]
    for t, r in zip(twins, ref):
        t.grad = r.clone()
    total, _ = clip_(model.parameters(), GlobalNorm(1.0))
    expected = torch.nn.utils.clip_grad_norm_(twins, 1.0)
    assert float(expected) > 100
    assert abs(float(total) - float(expected)) <= 1e-5 * float(expected)
    for p, t in zip(model.parameters(), twins):
        torch.testing.assert_close(p.grad, t.grad, rtol=1e-5, atol=1e-7)
