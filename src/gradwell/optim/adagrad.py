"""Adagrad (Duchi, Hazan & Singer 2011), as a transformation and the ``Adagrad`` drop-in.

Duchi, Hazan & Singer 2011, "Adaptive Subgradient Methods for Online Learning and Stochastic
Optimization" (JMLR), the diagonal version:

.. math::

    G_t = G_{t-1} + g_t^2, \\qquad
    u_t = \\frac{g_t}{(1 + (t-1)\\,\\delta)\\,(\\sqrt{G_t} + \\epsilon)}

with :math:`G_0` the initial accumulator value and :math:`\\delta` torch's ``lr_decay`` (the
step size is :math:`\\eta / (1 + (t-1)\\delta)`; the paper has no decay and no :math:`\\epsilon`,
torch adds both). Like torch, the state is created when the optimizer is built.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.adagrad import adagrad as torch_adagrad

from ..clip.base import Clipper
from .base import Quotient, Transform, chain, check_range, scalar_steps
from .dropin import DropIn, fused_groups, scale_
from .optimizer import GroupBatch, ParamsT
from .weight_decay import add_decayed_weights

__all__ = ["scale_by_adagrad", "Adagrad"]


class scale_by_adagrad(Transform):  # noqa: N801
    """``g / ((1 + (t-1) lr_decay) (sqrt(sum g^2) + eps))``."""

    state_keys = ("step", "sum")

    def __init__(self, lr_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10) -> None:
        self.defaults = {"lr_decay": lr_decay,
                         "initial_accumulator_value": initial_accumulator_value, "eps": eps}
        self.check(self.defaults)

    def check(self, group: dict[str, Any]) -> None:
        check_range("lr_decay", group["lr_decay"])
        check_range("initial_accumulator_value", group["initial_accumulator_value"])
        check_range("eps", group["eps"])

    def init(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": torch.zeros((), dtype=torch.float32, device=param.device),
                "sum": torch.full_like(param, group["initial_accumulator_value"],
                                       memory_format=torch.preserve_format)}

    def update(self, updates: list[Tensor], states: list[dict[str, Any]], params: list[Tensor],
               group: dict[str, Any]) -> Quotient:
        steps = [s["step"] for s in states]
        sums = [s["sum"] for s in states]
        torch._foreach_add_(steps, 1)
        torch._foreach_addcmul_(sums, updates, updates, 1.0)
        std = torch._foreach_sqrt(sums)
        torch._foreach_add_(std, group["eps"])
        decay = group["lr_decay"]
        if decay != 0:
            torch._foreach_mul_(std, [1 + (t - 1) * decay for t in scalar_steps(steps)])
        return Quotient(updates, list(std))


_ADAGRAD = chain(add_decayed_weights(), scale_by_adagrad())


class Adagrad(DropIn):
    """Drop-in for ``torch.optim.Adagrad``, plus ``clip=`` and ``skip_nonfinite=``."""

    has_fused_kernel = True
    supports_sparse = True

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 clip: Clipper | None = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, _ADAGRAD, lr, clip=clip, skip_nonfinite=skip_nonfinite,
                         lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps,
                         foreach=foreach, maximize=maximize, differentiable=differentiable,
                         fused=fused)
        for group in self.param_groups:  # torch.optim.Adagrad creates its state eagerly
            for p in group["params"]:
                self.state[p].update(_ADAGRAD.init(p, group))

    def _fused_kernel(self, b: GroupBatch, factor: Tensor | None,
                      found_inf: Tensor | None) -> None:
        g = b.group
        lists = [b.params, b.grads, [s["sum"] for s in b.states], [s["step"] for s in b.states]]
        for (ps, gs, sums, st), scale, inf in fused_groups(lists, factor, found_inf):
            torch_adagrad(ps, gs, sums, st, fused=True, grad_scale=scale, found_inf=inf,
                          lr=g["lr"], lr_decay=g["lr_decay"], weight_decay=g["weight_decay"],
                          eps=g["eps"], maximize=g["maximize"])

    def _sparse_step(self, b: GroupBatch, factor: Tensor | None) -> None:
        """Sparse gradients (``nn.Embedding(sparse=True)``) take torch's own sparse Adagrad."""
        g = b.group
        scale_(b.grads, factor)
        torch_adagrad(
            b.params, b.grads, [s["sum"] for s in b.states], [s["step"] for s in b.states],
            has_sparse_grad=True, foreach=False, lr=g["lr"], weight_decay=g["weight_decay"],
            lr_decay=g["lr_decay"], eps=g["eps"], maximize=g["maximize"])
