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
``torch.amp.GradScaler``, against float32; a 10-layer tanh MLP on scikit-learn's digits trained
with Adam. A network this small has gradients far inside float16's range, so the training loss
is weighted by ``2^-16`` or ``2^-18`` -- the gradient scale of a mean over that many times more
terms (tokens, pixels) -- which Adam's update ignores in float32 (it is invariant to the scale
of the gradient but for its ``eps``). The trial kind
``amp_train`` is the lab's ``train`` trial with these precisions; it also measures the share of
exactly-zero weight-gradient values per layer on one training batch (:func:`zero_grad_share`),
at initialisation and after training.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..trial_monitor import layer_weights
from ..plots import grid_and_legend, save, subplots
from ..spec import Trial
from ..train import Hooks, TrialResult, load_data, run_trial
from ..summary import fmt
from ..verdict import Criterion, Results
from .experiment import Experiment

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
    for summary, metrics in (kept["init"], _shares(kept["model"], cfg, x, y, "")):
        result.summary.update(summary)
        result.metrics += metrics
    return result


SPEC = r'''
name = "micikevicius2018-loss-scaling"
description = """Micikevicius et al. 2018: in float16 (CPU autocast) small gradients underflow \
to zero and training degrades or stalls; GradScaler's loss scaling restores float32's training."""
metrics = ["train_loss", "test_acc"]

[base]
kind = "amp_train"
data = "digits"
model = "mlp"
depth = 10
width = 64
activation = "tanh"
init = "lecun"
optimizer = "adam"
lr = 0.001
batch_size = 64

[[variants]]
name = "float32"

[[variants]]
name = "float16"
precision = "float16"

[[variants]]
name = "float16 + GradScaler"
precision = "float16"
loss_scale = "dynamic"

[grid]
weight = [{ name = "loss × 2^-16", loss_weight = 1.52587890625e-05 },
          { name = "loss × 2^-18", loss_weight = 3.814697265625e-06 }]
seed = [0, 1, 2]

[budget]
epochs = 10

[quick]
grid = { weight = [{ name = "loss × 2^-18", loss_weight = 3.814697265625e-06 }] }
budget = { epochs = 3 }
'''

#: each variant's configuration: the precision of the forward/backward pass and the loss scale
PRECISION_CONFIG: dict[str, dict[str, str]] = {
    "float32": {"precision": "float32", "loss_scale": "none"},
    "float16": {"precision": "float16", "loss_scale": "none"},
    "float16 + GradScaler": {"precision": "float16", "loss_scale": "dynamic"}}
PRECISIONS = tuple(PRECISION_CONFIG)
#: the share of gradient values lost to underflow that counts as "many" (mean over layers)
UNDERFLOW = 0.2
#: unscaled float16 "degrades": its final training loss is at least this many times float32's
DEGRADED = 2.0
#: GradScaler "restores": final training loss within this fraction of float32's ...
RESTORED = 0.1
#: ... and at most this share of gradient values lost
RESTORED_SHARE = 0.01
STALLED_ACC = 0.2


def _tag(weight: float) -> str:
    return f"loss × 2^{round(math.log2(weight))}"


def _select(results: Results, precision: str, weight: float, **config: Any) -> list[dict]:
    """Trials of variant ``precision`` (a name in :data:`PRECISION_CONFIG`) at ``weight``."""
    return results.select(loss_weight=weight, **PRECISION_CONFIG[precision], **config)


def _vals(results: Results, key: str, precision: str, weight: float) -> list[float]:
    return [t["summary"][key] for t in _select(results, precision, weight)
            if t["summary"].get(key) is not None]


def _med(results: Results, key: str, precision: str, weight: float) -> float | None:
    vals = _vals(results, key, precision, weight)
    return statistics.median(vals) if vals else None


def _seeds(results: Results, key: str, precision: str, weight: float) -> str:
    return ", ".join(f"{v:.3g}" for v in _vals(results, key, precision, weight))


def _criteria(results: Results, w: float) -> list[Criterion]:
    tag = _tag(w)
    fp32, fp16, amp = (_med(results, "final_train_loss", p, w) for p in PRECISIONS)
    lost = _med(results, "zero_share_mean", "float16", w)
    lost_init = _med(results, "zero_share_mean_init", "float16", w)
    kept = _med(results, "zero_share_mean", "float16 + GradScaler", w)
    have = None not in (fp32, fp16, amp)
    return [
        Criterion(f"{tag}: float16 gradients underflow to zero",
                  f"share of values lost (mean over layers, after training) ≥ {UNDERFLOW}",
                  f"{fmt(lost, '.3g')} (at init {fmt(lost_init, '.3g')}; per seed: "
                  f"{_seeds(results, 'zero_share_mean', 'float16', w)})",
                  lost is not None and lost >= UNDERFLOW),
        Criterion(f"{tag}: …and float16 training degrades",
                  f"final train loss ≥ {DEGRADED:g} × float32's",
                  f"{fmt(fp16, '.3g')} vs {fmt(fp32, '.3g')} (per seed: "
                  f"{_seeds(results, 'final_train_loss', 'float16', w)})",
                  have and fp16 >= DEGRADED * fp32),
        Criterion(f"{tag}: GradScaler restores float32's training",
                  f"final train loss within {RESTORED:.0%} of float32's, "
                  f"share lost ≤ {RESTORED_SHARE}",
                  f"{fmt(amp, '.3g')} vs {fmt(fp32, '.3g')}, share lost {fmt(kept, '.3g')}",
                  have and kept is not None and abs(amp - fp32) <= RESTORED * fp32
                  and kept <= RESTORED_SHARE),
    ]


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """For every loss weight: unscaled float16 loses >= 20 % of the gradient values (mean over
    layers) and ends with a training loss >= 2x float32's; GradScaler ends within 10 % of
    float32 losing <= 1 %. At 2^-18, unscaled float16 stalls (test acc <= 0.2); at 2^-16 the
    lost share grows during training. Medians over seeds."""
    weights = sorted({t["config"]["loss_weight"] for t in results.trials}, reverse=True)
    out = [c for w in weights for c in _criteria(results, w)]
    w18, w16 = 2.0 ** -18, 2.0 ** -16
    if w18 in weights:
        acc = _med(results, "final_test_acc", "float16", w18)
        out.append(Criterion("loss × 2^-18: unscaled float16 stalls",
                             f"median test acc ≤ {STALLED_ACC} (chance 0.1)",
                             f"{fmt(acc, '.3g')} (per seed: "
                             f"{_seeds(results, 'final_test_acc', 'float16', w18)})",
                             acc is not None and acc <= STALLED_ACC))
    if w16 in weights:
        init = _med(results, "zero_share_mean_init", "float16", w16)
        end = _med(results, "zero_share_mean", "float16", w16)
        out.append(Criterion("loss × 2^-16: the share lost grows as training shrinks the loss",
                             "share lost after training > at init", f"{fmt(end, '.3g')} vs {fmt(init, '.3g')}",
                             None not in (init, end) and end > init))
    return out


def plot(directory: str | Path, out: str | Path, quick: bool = False) -> Path:
    """The docs figure: the share of gradient values lost per layer after training (median over
    seeds; each precision and loss weight) and the training loss of seed 0."""
    from ..store import Store

    run = EXPERIMENT.name + (" (quick)" if quick else "")
    fig, (left, right) = subplots(1, 2, figsize=(9, 3.4))
    colors = dict(zip(PRECISIONS, ("C0", "C3", "C2")))
    with Store(directory) as store:
        results = Results(store, run)
        weights = sorted({t["config"]["loss_weight"] for t in results.trials}, reverse=True)
        for w, ls in zip(weights, ("-", "--")):
            for p, color in colors.items():
                label = f"{p}, {_tag(w)}"
                shares = [t["summary"]["zero_share"] for t in _select(results, p, w)
                          if t["summary"].get("zero_share")]
                if shares:
                    left.plot(np.median(np.array(shares), axis=0), ls, color=color, marker="o",
                              ms=3, label=label)
                first = _select(results, p, w, seed=0)
                m = store.metrics(first[0]["key"]).get("train_loss", []) if first else []
                if m:
                    right.semilogy([s for s, _, _ in m], [v for _, _, v in m], ls, color=color,
                                   label=label)
    left.set(xlabel="layer (input → output)", ylabel="share of gradient values lost",
             ylim=(-0.03, 1.03), title="after training (median of 3 seeds)")
    right.set(xlabel="step", ylabel="training loss (unweighted)", title="seed 0")
    grid_and_legend((left, right), fontsize=6)
    return save(fig, out, dpi=90)


EXPERIMENT = Experiment(
    "micikevicius2018-loss-scaling",
    "float16 autocast: small gradients underflow, training degrades or stalls; GradScaler restores",
    SPEC, verdict)
