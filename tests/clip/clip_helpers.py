"""Data helpers shared by the clipping tests."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator
from unittest import mock

import torch


@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    """Inside this block, reading a tensor's value back to Python raises AssertionError."""
    def boom(self: torch.Tensor, *a: object, **k: object) -> None:
        raise AssertionError("host sync: a tensor value was read back to Python")

    names = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy")
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(mock.patch.object(torch.Tensor, name, boom))
        yield


def norm_sequence(n: int, seed: int = 0, spikes: tuple[int, ...] = ()) -> list[float]:
    """Gradient-norm-like positive numbers with a slow trend, noise and chosen spikes."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.linspace(2.0, 1.0, n) * torch.exp(0.2 * torch.randn(n, generator=gen))
    values = base.tolist()
    for s in spikes:
        values[s] *= 40.0
    return values


def grads_with_norm(target: float, seed: int) -> list[torch.Tensor]:
    """Three gradient tensors whose global 2-norm is ``target``."""
    gen = torch.Generator().manual_seed(seed)
    gs = [torch.randn(5, 3, generator=gen), torch.randn(4, generator=gen),
          torch.randn(2, 2, 2, generator=gen)]
    total = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in gs]))
    return [g * (target / total) for g in gs]


def assert_resume_is_seamless(make: Callable[[torch.nn.Parameter], Any], norms: list[float],
                              split: int) -> None:
    """``len(norms)`` steps in one go equal ``split`` steps, a ``state_dict`` save, a load into
    a fresh optimizer, and the remaining steps, bit for bit; resuming *without* the load
    differs (so the saved state is what carries the run). ``make(p)`` builds the optimizer of a
    15-element parameter ``p``; step ``t`` gets gradients of norm ``norms[t]``."""
    def run(opt: Any, p: torch.nn.Parameter, steps: range) -> None:
        for t in steps:
            p.grad = grads_with_norm(norms[t], t)[0].reshape(-1)
            opt.step()

    straight = torch.nn.Parameter(torch.zeros(15))
    run(make(straight), straight, range(len(norms)))
    first = torch.nn.Parameter(torch.zeros(15))
    opt = make(first)
    run(opt, first, range(split))
    resumed, forgetful = (torch.nn.Parameter(first.detach().clone()) for _ in range(2))
    fresh = make(resumed)
    fresh.load_state_dict(opt.state_dict())
    run(fresh, resumed, range(split, len(norms)))
    assert torch.equal(straight, resumed)
    run(make(forgetful), forgetful, range(split, len(norms)))
    assert not torch.equal(straight, forgetful)
