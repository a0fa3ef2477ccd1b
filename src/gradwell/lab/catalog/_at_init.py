"""Trial kind ``at_init``: the statistics of a deep MLP at initialisation, before any training.

Shared by ``he2015-init`` (He et al. 2015, "Delving Deep into Rectifiers", section 2.2) and
``glorot2010`` (Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward
neural networks", section 4.2). Both papers predict how the variance of the signal changes from
layer to layer at initialisation. With ``s_l = W_l h_{l-1} + b_l`` the pre-activations of hidden
block ``l``, ``h_l = f(s_l)``, ``n`` units per layer and zero biases:

* forward (He 2015, eq. 10): ``Var[s_l] = n Var[w] E[h_{l-1}^2]``; for ReLU
  ``E[h^2] = Var[s]/2``, so each layer multiplies the std by ``sqrt(n Var[w] / 2)``:
  ``1/sqrt 2`` under Xavier (``Var[w] = 1/n``), 1 under He (``2/n``), ``1/sqrt 6`` under
  torch's default ``U(-1/sqrt n, 1/sqrt n)`` (``1/(3n)``).
* backward (Glorot 2010, eq. 6-7; He 2015, eq. 14): ``Var[dL/ds_{l-1}] = n Var[w] E[f'^2]
  Var[dL/ds_l]``: for tanh near 0 (``f' ~ 1``) the std shrinks toward the input by
  ``sqrt(n Var[w])``, ``1/sqrt 3`` under the standard init and 1 under the normalised (Xavier)
  init; for ReLU (``E[f'^2] = 1/2``) it is the forward factor again.

:func:`measure` records, for every hidden block of one batch (the whole training set), the
pre-activation std, the input-dependent part of it, the activation mean, the back-propagated
gradient std and the weight gradient relative to the weight; :func:`run_trial` stores them as
layer statistics (step 0) and summarises them as per-layer factors.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ...nn import MLP
from ..spec import Trial
from ..train import TrialResult, build_model, load_data

__all__ = ["STATS", "measure", "per_layer_factor", "run_trial"]

#: the statistics :func:`measure` returns, one value per hidden block (input to output)
STATS = ("pre_std", "signal_std", "act_mean", "back_std", "grad_norm", "grad_rel")


def _capture(model: MLP) -> tuple[list[Tensor], list[Tensor], list[Any]]:
    """Forward hooks keeping each block's pre-activation (gradient retained) and output."""
    pre: list[Tensor] = []
    out: list[Tensor] = []

    def keep_pre(_module: nn.Module, _inputs: Any, s: Tensor) -> None:
        s.retain_grad()
        pre.append(s)

    def keep_out(block: nn.Module, inputs: Any, h: Tensor) -> None:
        out.append(h - inputs[0] if block.residual else h)

    handles = []
    for block in model.blocks:
        target = block.norm if not isinstance(block.norm, nn.Identity) else block.linear
        handles.append(target.register_forward_hook(keep_pre))
        handles.append(block.register_forward_hook(keep_out))
    return pre, out, handles


def measure(model: MLP, x: Tensor, y: Tensor, loss_fn: nn.Module) -> dict[str, list[float]]:
    """One forward and backward pass of ``(x, y)``; per hidden block (input to output):

    ``pre_std`` std of the pre-activations ``s_l`` over batch and units; ``signal_std`` their
    input-dependent part (std over the batch, root-mean-square over units); ``act_mean`` the mean
    activation ``f(s_l)``; ``back_std`` std of ``dL/ds_l``; ``grad_norm`` ``||dL/dW_l||``;
    ``grad_rel`` ``||dL/dW_l|| / ||W_l||``.
    """
    pre, out, handles = _capture(model)
    try:
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        stats = {
            "pre_std": [s.std().item() for s in pre],
            "signal_std": [s.std(dim=0).pow(2).mean().sqrt().item() for s in pre],
            "act_mean": [h.mean().item() for h in out],
            "back_std": [s.grad.std().item() for s in pre],
            "grad_norm": [b.linear.weight.grad.norm().item() for b in model.blocks],
            "grad_rel": [(b.linear.weight.grad.norm() / b.linear.weight.norm()).item()
                         for b in model.blocks],
        }
    model.zero_grad(set_to_none=True)
    return stats


def per_layer_factor(values: list[float], backward: bool = False) -> float | None:
    """The geometric mean factor from one block to the next, over the hidden-to-hidden
    transitions: ``(v[-1] / v[0]) ** (1 / (L - 1))`` forward, ``(v[0] / v[-1]) ** ...`` for a
    back-propagated quantity (the factor by which it shrinks toward the input). None when
    undefined (fewer than two blocks, or a zero or non-finite value)."""
    if len(values) < 2 or not all(v > 0 and math.isfinite(v) for v in (values[0], values[-1])):
        return None
    ratio = values[0] / values[-1] if backward else values[-1] / values[0]
    return ratio ** (1.0 / (len(values) - 1))


def _summary(stats: dict[str, list[float]], loss: float) -> dict[str, Any]:
    grad_rel = sorted(stats["grad_rel"])
    return {
        **{f"{k}s": v for k, v in stats.items()},
        "act_factor": per_layer_factor(stats["pre_std"]),
        "signal_factor": per_layer_factor(stats["signal_std"]),
        "back_factor": per_layer_factor(stats["back_std"], backward=True),
        "act_ratio": stats["pre_std"][-1] / stats["pre_std"][0] if stats["pre_std"][0] else None,
        "grad_rel_median": grad_rel[len(grad_rel) // 2],
        "init_loss": loss,
    }


def run_trial(trial: Trial) -> TrialResult:
    """Build the configured MLP (seeded as a ``train`` trial is, so the weights are the ones that
    trial starts from), measure it on the whole training set, and store the statistics."""
    cfg = trial.config
    torch.manual_seed(cfg["seed"])
    data = load_data(cfg)
    model = build_model(cfg, data)
    if not isinstance(model, MLP):
        raise ValueError(f"kind 'at_init' measures MLPs; got model {cfg['model']!r}")
    loss_fn = nn.CrossEntropyLoss() if data.task == "classification" else nn.MSELoss()
    stats = measure(model, data.x_train, data.y_train, loss_fn)
    with torch.no_grad():
        loss = loss_fn(model(data.x_train), data.y_train).item()
    rows = [(0, i, f"blocks.{i}", stat, float(v))
            for stat, values in stats.items() for i, v in enumerate(values)]
    return TrialResult(trial.key, summary=_summary(stats, loss), layer_stats=rows)
