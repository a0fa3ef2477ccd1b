"""Stochastic gradient descent with momentum and Nesterov momentum: the ``SGD`` drop-in.

.. math:: \\theta \\leftarrow \\theta - \\eta\\, \\text{trace}(g + \\lambda\\theta)

Robbins & Monro 1951 (stochastic approximation); momentum and Nesterov as in
:mod:`gradwell.optim.momentum` (Sutskever et al. 2013). Full-batch gradient descent is this
optimizer applied to the gradient of the whole data set; mini-batch SGD to a sample of it.
"""

from __future__ import annotations


import torch
from torch import Tensor
from torch.optim.sgd import sgd as torch_sgd

from ..clip.base import Clipper
from .base import chain
from .dropin import DropIn, fused_groups, scale_
from .momentum import trace
from .optimizer import GroupBatch, ParamsT
from .weight_decay import add_decayed_weights

__all__ = ["SGD"]

_SGD = chain(add_decayed_weights(), trace(0.0))


class SGD(DropIn):
    """Drop-in for ``torch.optim.SGD``, plus ``clip=`` and ``skip_nonfinite=``."""

    has_fused_kernel = True
    supports_sparse = True

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float | Tensor = 0, nesterov: bool = False,
                 *, maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None,
                 clip: Clipper | None = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, _SGD, lr, clip=clip, skip_nonfinite=skip_nonfinite,
                         momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, maximize=maximize, foreach=foreach,
                         differentiable=differentiable, fused=fused)

    def _fusable(self, b: GroupBatch) -> bool:
        # The fused kernel can start momentum buffers only when all are new; a skipped first
        # step would leave them uninitialised, so a group with new buffers takes one sync.
        if b.group["momentum"] != 0 and any("momentum_buffer" not in s for s in b.states):
            return False
        return super()._fusable(b)

    def _fused_step(self, b: GroupBatch, factor: Tensor | None, found_inf: Tensor | None) -> bool:
        g = b.group
        first = g["momentum"] != 0 and all("momentum_buffer" not in s for s in b.states)
        if first and found_inf is None and super()._fusable(b):
            self._sgd_kernel(b, factor, None)  # torch's kernel starts the buffers
            return True
        if not self._fusable(b):
            return False
        self._sgd_kernel(b, factor, found_inf)
        return True

    def _sgd_kernel(self, b: GroupBatch, factor: Tensor | None,
                    found_inf: Tensor | None) -> None:
        g = b.group
        momentum = g["momentum"] != 0
        bufs = [s.get("momentum_buffer") for s in b.states]  # None: new, or no momentum
        lists = [b.params, b.grads, bufs, list(range(len(b.params)))]
        for (ps, gs, ms, idx), sc, inf in fused_groups(lists, factor, found_inf):
            torch_sgd(ps, gs, ms, fused=True, grad_scale=sc, found_inf=inf,
                      weight_decay=g["weight_decay"], momentum=g["momentum"], lr=g["lr"],
                      dampening=g["dampening"], nesterov=g["nesterov"], maximize=g["maximize"])
            if momentum:  # the functional API creates missing buffers in the list it is given
                for i, buf in zip(idx, ms):  # b.states: under FSDP2 views of the DTensor's state
                    b.states[i]["momentum_buffer"] = buf

    def _sparse_step(self, b: GroupBatch, factor: Tensor | None) -> None:
        """Sparse gradients (``nn.Embedding(sparse=True)``) take torch's own sparse SGD."""
        g = b.group
        scale_(b.grads, factor)
        bufs = [s.get("momentum_buffer") for s in b.states]
        torch_sgd(b.params, b.grads, bufs, has_sparse_grad=True, foreach=False,
                  weight_decay=g["weight_decay"], momentum=g["momentum"], lr=g["lr"],
                  dampening=g["dampening"], nesterov=g["nesterov"],
                  maximize=g["maximize"])
        if g["momentum"] != 0:
            for s, buf in zip(b.states, bufs):
                s["momentum_buffer"] = buf
