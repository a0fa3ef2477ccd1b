"""``wortsman2023-instabilities``: attention-logit growth at high learning rates, QK-layernorm
and z-loss, and the learning-rate sensitivity they flatten.

Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer training
instabilities" (ICLR 2024). Two instabilities of large transformers appear in small ones
trained at high learning rates: the attention logits ``q.k / sqrt(h)`` grow without bound, the
attention collapses onto one key and the loss diverges -- LayerNorm on the queries and keys
(QK-layernorm, Dehghani et al. 2023) prevents it; and the output logits drift, the softmax
normaliser ``log Z`` moving far from 0 -- the z-loss ``c log^2 Z`` (Chowdhery et al. 2022) holds
it there. Their measure of how much a recipe suffers is the *learning-rate sensitivity*
``E_lr[min(l(lr), l0) - min_lr l(lr)]`` (``l0`` the loss at initialisation): the average excess
of the final loss over the best one across a sweep of learning rates.

Here: a 2-block pre-LN :class:`~gradwell.nn.TinyTransformer` (width 32, 2 heads) on the copy
task (4 random tokens, then the same 4 again), Adam with 20 steps of linear warm-up, a sweep of
learning rates for three recipes: baseline, QK-layernorm, QK-layernorm + z-loss (trial kind
``transformer_train``, which records the largest attention logit and ``log Z`` every
``grad_every`` steps).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from ..plots import grid_and_legend, save, subplots
from ..summary import fmt
from ..verdict import Criterion, Results
from .experiment import Experiment

__all__ = ["lr_sensitivity", "verdict", "plot", "EXPERIMENT", "FIXES", "Z_LOSS"]

#: the z-loss coefficient (PaLM's 1e-4 acts over ~1e5 steps; 200 steps need more)
Z_LOSS = 0.003

SPEC = r'''
name = "wortsman2023-instabilities"
description = """Wortsman et al. 2023: at high Adam learning rates a small transformer's \
attention logits grow by orders of magnitude and training fails; QK-layernorm prevents it, \
z-loss keeps the output logits' log Z at 0, and the final loss depends far less on the LR."""
metrics = ["train_loss", "test_acc"]

[base]
kind = "transformer_train"
data = "copy"
seq_len = 4
vocab = 16
n_train = 2000
n_test = 256
d_model = 32
heads = 2
layers = 2
norm_position = "pre"
optimizer = "adam"
batch_size = 64
warmup = 20

[grid]
fix = [{ name = "baseline" },
       { name = "QK-layernorm", qk_norm = true },
       { name = "QK-layernorm + z-loss", qk_norm = true, z_loss = 0.003 }]
lr = [0.01, 0.03, 0.1, 0.3]
seed = [0, 1, 2]

[budget]
steps = 200

[record]
eval_every = 25

[quick]
grid = { lr = [0.03, 0.3] }
budget = { steps = 100 }
'''

#: recipe -> (qk_norm, z_loss)
FIXES = {"baseline": (False, 0.0), "QK-layernorm": (True, 0.0),
         "QK-layernorm + z-loss": (True, Z_LOSS)}
#: the loss of a model that learned nothing (ln 16), the cap ``l0`` of the sensitivity
LOSS0 = math.log(16)
FAILED_LOSS = 2.5          # "does not train": final training loss at least this
TRAINED_LOSS = 1.5         # "trains": at most this (best possible 3 ln 16 / 7 = 1.19)
ATTN_GROWTH = 100.0        # baseline: max attention logit at the top LR / at the lowest, at least
ATTN_KEPT = 0.01           # QK-layernorm: its max attention logit / baseline's at the top LR
LOG_Z_DRIFT = 2 * LOSS0    # without z-loss: final |log Z| at least this (ln 16 at init)
LOG_Z_HELD = 1.0           # with z-loss: final |log Z| at most this
FLATTER = 0.25             # a fix's LR sensitivity, at most this times the baseline's


def _trials(results: Results, fix: str, lr: float) -> list[dict[str, Any]]:
    qk, z = FIXES[fix]
    return results.select(qk_norm=qk, z_loss=z, lr=lr)


def _final_loss(t: dict[str, Any]) -> float:
    """A trial's final training loss; a diverged (non-finite) one counts as ``l0``."""
    v = t["summary"].get("final_train_loss")
    return v if v is not None and math.isfinite(v) and t["status"] != "diverged" else LOSS0


def _median(results: Results, fix: str, lr: float, key: str | None = None) -> float | None:
    trials = _trials(results, fix, lr)
    vals = ([_final_loss(t) for t in trials] if key is None else
            [t["summary"][key] for t in trials if t["summary"].get(key) is not None])
    return statistics.median(vals) if vals else None


def lr_sensitivity(losses: list[float], loss0: float = LOSS0) -> float:
    """Wortsman et al.'s LR sensitivity of final losses over a learning-rate sweep:
    ``mean(min(l, l0)) - min(l)``."""
    if not losses:
        raise ValueError("lr_sensitivity needs the final loss of at least one learning rate")
    return statistics.fmean(min(v, loss0) for v in losses) - min(losses)


def _lrs(results: Results) -> list[float]:
    return sorted({t["config"]["lr"] for t in results.trials})


def _per_seed(results: Results, fix: str, lr: float, key: str | None = None) -> str:
    trials = _trials(results, fix, lr)
    vals = [_final_loss(t) if key is None else t["summary"].get(key) for t in trials]
    return ", ".join(fmt(v, ".3g") for v in vals)


def _attention(results: Results, top: float, low: float) -> list[Criterion]:
    base_hi = _median(results, "baseline", top, "max_attn_logit")
    base_lo = _median(results, "baseline", low, "max_attn_logit")
    qk_hi = _median(results, "QK-layernorm", top, "max_attn_logit")
    loss_b, loss_q = _median(results, "baseline", top), _median(results, "QK-layernorm", top)
    return [
        Criterion(f"lr {top:g}: the baseline's attention logits grow",
                  f"max attention logit ≥ {ATTN_GROWTH:g} × at lr {low:g}",
                  f"{fmt(base_hi, '.3g')} vs {fmt(base_lo, '.3g')} (per seed: "
                  f"{_per_seed(results, 'baseline', top, 'max_attn_logit')})",
                  None not in (base_hi, base_lo) and base_hi >= ATTN_GROWTH * base_lo),
        Criterion("…and its training fails", f"final train loss ≥ {FAILED_LOSS} (ln 16 = 2.77)",
                  f"{fmt(loss_b)} (per seed: {_per_seed(results, 'baseline', top)})",
                  loss_b is not None and loss_b >= FAILED_LOSS),
        Criterion("QK-layernorm keeps the attention logits small",
                  f"max attention logit ≤ {ATTN_KEPT:g} × the baseline's",
                  f"{fmt(qk_hi, '.3g')} (per seed: "
                  f"{_per_seed(results, 'QK-layernorm', top, 'max_attn_logit')})",
                  None not in (qk_hi, base_hi) and qk_hi <= ATTN_KEPT * base_hi),
        Criterion("…and trains at that LR", f"final train loss ≤ {TRAINED_LOSS} (best 1.19)",
                  f"{fmt(loss_q)} (per seed: {_per_seed(results, 'QK-layernorm', top)})",
                  loss_q is not None and loss_q <= TRAINED_LOSS),
    ]


def _log_z(results: Results, top: float) -> list[Criterion]:
    drift = _median(results, "QK-layernorm", top, "final_abs_log_z")
    held = _median(results, "QK-layernorm + z-loss", top, "final_abs_log_z")
    loss = _median(results, "QK-layernorm + z-loss", top)
    return [
        Criterion(f"lr {top:g}: without z-loss the output logits drift (log Z leaves 0)",
                  f"final |log Z| ≥ {LOG_Z_DRIFT:.2f} (2 ln 16; ln 16 at init)",
                  f"{fmt(drift, '.3g')} (per seed: "
                  f"{_per_seed(results, 'QK-layernorm', top, 'final_abs_log_z')})",
                  drift is not None and drift >= LOG_Z_DRIFT),
        Criterion("z-loss holds log Z at 0 and still trains",
                  f"final |log Z| ≤ {LOG_Z_HELD:g}, final train loss ≤ {TRAINED_LOSS}",
                  f"{fmt(held, '.3g')} (per seed: "
                  f"{_per_seed(results, 'QK-layernorm + z-loss', top, 'final_abs_log_z')}); "
                  f"loss {fmt(loss)}",
                  None not in (held, loss) and held <= LOG_Z_HELD and loss <= TRAINED_LOSS),
    ]


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """At the top learning rate (medians over seeds): the baseline's largest attention logit
    >= 100x its value at the lowest LR and its final training loss >= 2.5 (ln 16: nothing
    learned); QK-layernorm's attention logit <= 1 % of the baseline's and its loss <= 1.5;
    without z-loss the final ``|log Z|`` >= 2 ln 16, with it <= 1 at a loss <= 1.5. Over the
    sweep: each fix's LR sensitivity <= 0.25x the baseline's."""
    lrs = _lrs(results)
    if not lrs:
        return []
    out = _attention(results, lrs[-1], lrs[0]) + _log_z(results, lrs[-1])
    sens = {}
    for fix in FIXES:
        losses = [_median(results, fix, lr) for lr in lrs]
        sens[fix] = lr_sensitivity(losses) if None not in losses else None
    base = sens["baseline"]
    for fix in list(FIXES)[1:]:
        out.append(Criterion(f"the final loss depends less on the LR with {fix}",
                             f"LR sensitivity ≤ {FLATTER:g} × the baseline's",
                             f"{fmt(sens[fix])} vs {fmt(base)} (lr {', '.join(map(str, lrs))})",
                             None not in (sens[fix], base) and sens[fix] <= FLATTER * base))
    return out


def plot(directory: str | Path, out: str | Path, quick: bool = False) -> Path:
    """The docs figure, per recipe against the learning rate (medians over seeds): the final
    training loss (the LR-sensitivity curve), the largest attention logit, the final |log Z|."""
    from ..store import Store

    run = EXPERIMENT.name + (" (quick)" if quick else "")
    fig, axes = subplots(1, 3, figsize=(12, 3.4))
    with Store(directory) as store:
        results = Results(store, run)
        lrs = _lrs(results)
        for (fix, color), marker in zip(zip(FIXES, ("C3", "C0", "C2")), "osd"):
            for ax, key in zip(axes, (None, "max_attn_logit", "final_abs_log_z")):
                pts = [(lr, _median(results, fix, lr, key)) for lr in lrs]
                pts = [(x, y) for x, y in pts if y is not None]
                if pts:
                    ax.plot(*zip(*pts), color=color, marker=marker, label=fix)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate (Adam)")
    axes[0].axhline(LOSS0, color="0.5", ls=":", lw=1)
    axes[0].set(ylabel="final training loss", title="LR sensitivity (median of 3 seeds)")
    axes[1].set(yscale="log", ylabel="largest attention logit", title="attention logits")
    axes[2].set(ylabel="final |log Z|", title="output-logit normaliser")
    grid_and_legend(axes)
    return save(fig, out, dpi=90)


EXPERIMENT = Experiment(
    "wortsman2023-instabilities",
    "2-block transformer, LR sweep: attention logits explode and training fails at high LR; "
    "QK-layernorm and z-loss fix it and flatten the LR sensitivity",
    SPEC, verdict)
