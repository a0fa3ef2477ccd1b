"""``micikevicius2018-loss-scaling``: float16 gradients underflow; loss scaling restores them.

Micikevicius et al. 2018, "Mixed precision training" (ICLR 2018): with float32 master weights
and float16 forward and backward passes, activation gradients below float16's smallest
subnormal (``2^-24 ~ 6e-8``) become zero -- in their SSD example most of them -- and training
degrades or stalls; multiplying the loss by a scale ``S`` before backward shifts the gradients
into float16's range, and dividing the weight gradients by ``S`` before the update keeps the
step unchanged. torch's ``GradScaler`` picks ``S`` dynamically (start ``2^16``, halve and skip
the step on overflow, double after 2,000 clean steps).

Here: real float16 on the CPU, ``torch.autocast("cpu", dtype=torch.float16)`` (float32 master
weights; matrix products and their gradients in float16), with and without
``torch.amp.GradScaler``, against float32; a deep tanh MLP on scikit-learn's digits whose
back-propagated gradients shrink toward the input (Glorot & Bengio 2010). The trial kind
``amp_train`` is the lab's ``train`` trial with these precisions; it also measures the share of
exactly-zero weight-gradient values per layer on one training batch (:func:`zero_grad_share`),
at initialisation and after training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..monitor import layer_weights
from ..plots import grid_and_legend
from ..schema import choice, number, register_kind
from ..spec import Trial
from ..train import Hooks, TrialResult, load_data, run_trial
from ..verdict import Criterion, Results
from . import Experiment, register

__all__ = ["zero_grad_share", "amp_trial", "verdict", "plot", "EXPERIMENT", "INIT_SCALE"]

#: GradScaler's initial scale (torch's default, 2^16)
INIT_SCALE = 2.0 ** 16
#: training samples in the batch the zero share is measured on
SHARE_BATCH = 64


def _grads(model: nn.Module, x: Tensor, y: Tensor, dtype: torch.dtype | None,
           scale: float) -> list[Tensor]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = nn.functional.cross_entropy(model(x), y)
    (loss * scale).backward()
    grads = [p.grad.detach().clone() for _, p in layer_weights(model)]
    model.zero_grad(set_to_none=True)
    return grads


def zero_grad_share(model: nn.Module, x: Tensor, y: Tensor, dtype: torch.dtype | None,
                    scale: float = 1.0) -> list[float]:
    """For every weight matrix (input to output): the share of its gradient values that are
    exactly 0 after one forward and backward pass of the cross-entropy loss times ``scale``
    under ``torch.autocast("cpu", dtype=dtype)``, among those that are not 0 in float32 -- the
    values lost to underflow (inputs that are always 0, like the digits' border pixels, give
    zero gradients in any precision and are not counted). ``dtype=None`` is float32 (all 0)."""
    reference = _grads(model, x, y, None, 1.0)
    grads = _grads(model, x, y, dtype, scale) if dtype is not None else reference
    return [((g == 0) & (r != 0)).sum().item() / max(1, (r != 0).sum().item())
            for g, r in zip(grads, reference)]


def _dtype(cfg: dict[str, Any]) -> torch.dtype | None:
    return torch.float16 if cfg["precision"] == "float16" else None


def _shares(model: nn.Module, cfg: dict[str, Any], x: Tensor, y: Tensor, tag: str
            ) -> tuple[dict[str, Any], list]:
    scale = cfg["loss_weight"] * (INIT_SCALE if cfg["loss_scale"] == "dynamic" else 1.0)
    shares = zero_grad_share(model, x, y, _dtype(cfg), scale)
    summary = {f"zero_share{tag}": shares, f"zero_share_first{tag}": shares[0],
               f"zero_share_mean{tag}": sum(shares) / len(shares)}
    return summary, [(i, None, f"zero_share{tag}", v) for i, v in enumerate(shares)]


def amp_trial(trial: Trial) -> TrialResult:
    """Trial kind ``amp_train``: the ``train`` trial at ``precision`` (float32, or float16 under
    autocast) with ``loss_scale`` none or dynamic (GradScaler); plus the per-layer share of zero
    gradient values on the first :data:`SHARE_BATCH` training samples, at initialisation
    (``zero_share_init``; with loss scaling at the initial scale ``2^16``) and after training."""
    cfg = trial.config
    data = load_data(cfg)
    x, y = data.x_train[:SHARE_BATCH], data.y_train[:SHARE_BATCH]
    kept: dict[str, Any] = {}

    def prepare(model: nn.Module, trial: Trial) -> None:
        kept["model"], kept["init"] = model, _shares(model, cfg, x, y, "_init")

    hooks = Hooks(prepare=prepare, loss_weight=float(cfg["loss_weight"]), autocast=_dtype(cfg),
                  loss_scale=cfg["loss_scale"] == "dynamic")
    result = run_trial(trial, hooks=hooks)
    if "model" not in kept:
        return result
    for summary, metrics in (kept["init"], _shares(kept["model"], cfg, x, y, "")):
        result.summary.update(summary)
        result.metrics += metrics
    return result


register_kind("amp_train", "gradwell.lab.catalog.micikevicius2018_loss_scaling:amp_trial",
              {"precision": choice("float32", "float16", default="float32"),
               "loss_scale": choice("none", "dynamic", default="none"),
               "loss_weight": number(0.0, default=1.0)})
