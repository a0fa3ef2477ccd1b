"""Momentum (heavy ball) and Nesterov's accelerated gradient, as a transformation.

Polyak 1964 heavy ball, in the form of Sutskever, Martens, Dahl & Hinton 2013, "On the importance
of initialization and momentum in deep learning" (ICML), with torch.optim.SGD's conventions:

.. math::

    b_1 = g_1, \\qquad b_t = \\mu\\, b_{t-1} + (1 - \\tau)\\, g_t

    u_t = g_t + \\mu\\, b_t \\ \\text{(Nesterov)} \\qquad \\text{or} \\qquad u_t = b_t

with momentum :math:`\\mu` and dampening :math:`\\tau`; the parameter then moves by
:math:`-\\eta\\, u_t`.

Where torch departs from the paper: Sutskever et al. write the velocity with the learning rate
inside, :math:`v_t = \\mu v_{t-1} - \\eta \\nabla f(\\theta_{t-1} + \\mu v_{t-1})`; torch keeps the
learning rate outside the buffer (identical for a constant rate, different when a scheduler
changes it) and uses the "look-ahead" reformulation :math:`g_t + \\mu b_t` for Nesterov, which
evaluates the gradient at the current parameters (Bengio, Boulanger-Lewandowski & Pascanu 2013).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Transform, check_range

__all__ = ["trace"]


class trace(Transform):  # noqa: N801 - optax-style lower-case transformation name
    """Momentum buffer ``b = momentum * b + (1 - dampening) * u``; Nesterov optional.

    Args:
        momentum: the momentum factor mu in [0, 1); 0 makes this the identity.
        dampening: tau in [0, 1]; must be 0 with Nesterov.
        nesterov: use Nesterov's look-ahead form (needs momentum > 0).
    """

    state_keys = ("momentum_buffer",)

    def __init__(self, momentum: float = 0.9, dampening: float = 0.0, nesterov: bool = False):
        self.defaults = {"momentum": momentum, "dampening": dampening, "nesterov": nesterov}
        self.check(self.defaults)

    def check(self, group: dict[str, Any]) -> None:
        check_range("momentum", group["momentum"])
        check_range("dampening", group["dampening"], 0.0, 1.0)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening, got "
                             f"momentum={group['momentum']!r}, dampening={group['dampening']!r}")

    def update(self, updates: list[Tensor], states: list[dict[str, Any]], params: list[Tensor],
               group: dict[str, Any]) -> list[Tensor]:
        mu, tau = group["momentum"], group["dampening"]
        if mu == 0:
            return updates
        bufs = [s.get("momentum_buffer") for s in states]
        old = [i for i, b in enumerate(bufs) if b is not None]
        if old:
            old_bufs = [bufs[i] for i in old]
            torch._foreach_mul_(old_bufs, mu)
            torch._foreach_add_(old_bufs, [updates[i] for i in old], alpha=1 - tau)
        for i, b in enumerate(bufs):
            if b is None:
                bufs[i] = states[i]["momentum_buffer"] = torch.clone(updates[i]).detach()
        if group["nesterov"]:
            return list(torch._foreach_add(updates, bufs, alpha=mu))
        return bufs
