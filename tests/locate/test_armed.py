"""The armed fast path of gradwell.locate: the fused check, the gradient walk, nothing kept."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

import gradwell
from gradwell.locate.locator import _finite, _grads
from faults import gpt2

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
_INTS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(_INTS[t.element_size()])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_check_flags_every_nan_and_inf_and_writes_back_every_bit(dtype: torch.dtype) -> None:
    tiny = torch.finfo(dtype).tiny / 4                           # a subnormal
    grads = [torch.tensor([0.0, -0.0, tiny, -tiny, torch.finfo(dtype).max], dtype=dtype),
             torch.randn(300, dtype=dtype), torch.randn(7, 9, dtype=dtype)[:, ::2]]
    before = [g.clone() for g in grads]
    assert _finite(grads)
    for g, b in zip(grads, before):       # bit for bit, -0.0 and subnormals included
        assert torch.equal(_bits(g), _bits(b))
    for bad in (float("nan"), float("inf"), float("-inf")):
        for i in range(len(grads)):
            poisoned = [g.clone() for g in grads]
            poisoned[i].view(-1)[3] = bad
            assert not _finite(poisoned)
            assert torch.isfinite(poisoned[i]).all().item() is False   # torch agrees


def test_fused_check_leaves_tensors_that_require_grad_untouched() -> None:
    w = torch.randn(5, requires_grad=True)
    loss = (w * 2).sum()
    version = loss._version
    assert _finite([loss, w])
    assert loss._version == version and w._version == 0
    assert not _finite([loss * float("nan")])
    complex_ = torch.randn(4, dtype=torch.complex64)
    assert _finite([complex_]) and not _finite([complex_ * float("inf")])


def test_sparse_embedding_gradients_are_checked_by_their_values() -> None:
    model = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Flatten(), nn.Linear(8, 2))
    x = torch.randint(0, 10, (3, 2))
    with gradwell.locate(model) as loc:
        model(x).sum().backward()
    assert model[0].weight.grad.is_sparse and loc.origin is None
    with torch.no_grad():
        model[0].weight[x[0, 0]] = float("nan")
    model.zero_grad()
    with gradwell.locate(model) as loc:
        model(x).sum().backward()
    assert loc.origin is not None and loc.origin.kind == "nan"
    assert loc.origin.phase == "input" and "0.weight" in str(loc.origin)


def test_gradient_walk_is_parameters_once_each_on_tied_gpt2() -> None:
    model, ids = gpt2(), torch.randint(0, 64, (2, 16))
    model(ids, labels=ids).loss.backward()
    expected = [p.grad for p in model.parameters() if p.grad is not None]
    got = _grads(model)
    assert len(got) == len(expected) and {id(g) for g in got} == {id(g) for g in expected}
    assert model.lm_head.weight is model.transformer.wte.weight      # tied: counted once


class _Token:
    """Something a loss node holds: alive as long as that node is."""


class _Probe(torch.autograd.Function):
    """The identity, whose node keeps a token (``ctx`` lives as long as the node)."""

    @staticmethod
    def forward(ctx, x, token):  # type: ignore[override]
        ctx.token = token
        return x.clone()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g, None


def test_an_armed_step_keeps_nothing_alive_without_the_garbage_collector() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    x, y = torch.randn(4, 8), torch.randint(0, 2, (4,))
    token = _Token()
    gc.collect()
    gc.disable()
    try:
        with gradwell.locate(model) as loc:
            out = model(x)
            nn.functional.cross_entropy(_Probe.apply(out, token), y).backward()
        ref, node = weakref.ref(out), weakref.ref(token)
        del out, token
        assert ref() is None                 # the output: freed by reference counting alone
        assert node() is None                # and the loss's nodes (they held the token)
        assert loc.origin is None
    finally:
        gc.enable()
