"""Clipping by value: every gradient element is clamped to ``[-limit, limit]``.

.. math:: g_i \\leftarrow \\min(\\max(g_i, -c), c)

The oldest form of clipping (Mikolov 2012, discussed in Pascanu, Mikolov & Bengio 2013, "On the
difficulty of training recurrent neural networks"). It changes the gradient's direction; clipping
by norm (:class:`~gradwell.clip.GlobalNorm`) does not. Reference: ``torch.nn.utils.clip_grad_value_``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Clipper, check_positive, refuse_sparse

__all__ = ["Value"]


class Value(Clipper):
    """Clamp each gradient element to ``[-limit, limit]`` (``clip_grad_value_``)."""

    scales_globally = False

    def __init__(self, limit: float) -> None:
        self.limit = check_positive("limit", limit)

    def __call__(self, grads: list[Tensor], params: list[Tensor], norms: list[Tensor],
                 total: Tensor) -> None:
        refuse_sparse("Value clipping", grads)
        if grads:
            torch._foreach_clamp_min_(grads, -self.limit)
            torch._foreach_clamp_max_(grads, self.limit)
        return None
