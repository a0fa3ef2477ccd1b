"""Adam-family statistics of the step taken, read from the optimizer's own state.

With ``gradwell.watch(model, optimizer=opt)`` and an Adam-family optimizer (every parameter
group has ``betas`` and ``eps`` and the state holds ``exp_avg_sq``: ``torch.optim.Adam``,
``AdamW``, ``NAdam``, ``RAdam`` and gradwell's ``Adam``/``AdamW``), on the steps whose update
is measured:

* ``adam_eps_share`` (per layer): the share of coordinates whose bias-corrected second moment
  is below epsilon, ``sqrt(v_t / (1 - beta2^t)) < eps`` (``max_exp_avg_sq`` with AMSGrad).
  There the update ``m_hat / (sqrt(v_hat) + eps)`` is damped by ``eps``: Wortsman et al. 2023
  (section "AdamW epsilon") show the gradient RMS falling to the order of ``eps`` as models
  grow, with updates too small to learn, and fix it with ``eps = 1e-15``;
* ``update_cosine``: ``cos(delta w, -g)`` of the whole model, the update actually taken
  against the gradient it was taken on (1 for plain SGD; Adam's per-coordinate scaling turns
  it away from ``-g``; near 0 or negative the step does not follow the gradient at all, the
  regime in which Molybog et al. 2023 place Adam's loss spikes).

One comparison and one dot product per parameter tensor, on measured steps only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._distributed import local

__all__ = ["is_adam", "adam_parts"]


def is_adam(optimizer: Any) -> bool:
    """True for an Adam-family optimizer (its groups carry ``betas`` and ``eps``)."""
    groups = getattr(optimizer, "param_groups", None)
    return bool(groups) and all("betas" in g and "eps" in g for g in groups)


def _groups(optimizer: Any) -> dict[int, dict[str, Any]]:
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


@torch.no_grad()
def adam_parts(optimizer: Any, params: list[Tensor], moved: list[Tensor],
               device: torch.device) -> dict[str, Tensor]:
    """Per-parameter float64 vectors on ``device``: ``below`` (coordinates with
    ``sqrt(v_hat) < eps``), ``counted`` (coordinates with a second moment), ``dot``
    (``<w_old - w_new, g>``, i.e. ``<delta w, -g>``) and ``gsq`` (``||g||^2``).

    ``moved``: ``w_old - w_new`` per parameter (the monitor's snapshot after the step).
    Parameters the optimizer holds no state for count nothing."""
    groups = _groups(optimizer)
    state = optimizer.state
    below, counted, dot, gsq = [], [], [], []
    zero = torch.zeros((), dtype=torch.float64, device=device)
    for p, d in zip(params, moved):
        g, st = p.grad, state.get(p)
        if g is not None and not g.is_sparse:
            gl = local(g).reshape(-1)
            d = d.reshape(-1)
            if gl.dtype not in (torch.float32, torch.float64) or d.dtype != gl.dtype:
                gl, d = gl.float(), d.float()
            dot.append(torch.dot(d, gl).to(device, torch.float64))
            gsq.append(torch.dot(gl, gl).to(device, torch.float64))
        else:
            dot.append(zero)
            gsq.append(zero)
        group = groups.get(id(p))
        v = None if not st or group is None else st.get(
            "max_exp_avg_sq" if group.get("amsgrad") else "exp_avg_sq")
        if v is None or "step" not in st:
            below.append(zero)
            counted.append(0.0)
            continue
        v = local(v)
        beta2, eps = group["betas"][1], group["eps"]  # numbers or tensors: never read to host
        bias = 1 - beta2 ** st["step"]
        below.append(torch.count_nonzero(v < eps * eps * bias).to(device, torch.float64))
        counted.append(float(v.numel()))
    if not params:
        empty = torch.zeros(0, dtype=torch.float64, device=device)
        return {"below": empty, "counted": empty, "dot": empty, "gsq": empty}
    return {"below": torch.stack(below),
            "counted": torch.tensor(counted, dtype=torch.float64).to(device),
            "dot": torch.stack(dot), "gsq": torch.stack(gsq)}
