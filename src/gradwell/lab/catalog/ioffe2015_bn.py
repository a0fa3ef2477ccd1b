"""``ioffe2015-bn``: batch normalisation speeds training up and tolerates large learning rates.

Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing Internal
Covariate Shift", ICML 2015 (arXiv:1502.03167). On MNIST a 3-layer sigmoid MLP with BN
reached higher test accuracy sooner than without (their Fig. 1); on ImageNet the BN Inception
reached the baseline's accuracy in 14x fewer steps with a 5x learning rate ("BN-x5"), still
trained at 30x ("BN-x30"), and BN let saturating nonlinearities train ("BN-x5-Sigmoid") where
the plain sigmoid network did not.

Here, on scikit-learn's digits with SGD (batch 64):

* a 4-layer ReLU MLP (He init), plain against BN, at the plain net's good learning rate 0.1
  and at 5x and 30x that rate: steps to 95 % test accuracy, and whether the run trains or
  diverges;
* a 10-layer sigmoid MLP (torch's default init, lr 0.5), plain against BN.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from ..store import Store
from ..plots import save, subplots
from ..verdict import Criterion, Results
from .experiment import Experiment

__all__ = ["EXPERIMENT", "SPEC", "verdict", "plot", "median_steps", "median_acc", "relu",
           "sigmoid", "BASE_LR", "SCALES"]

BASE_LR = 0.1
SCALES = (1, 5, 30)


def _relu_variants() -> str:
    out = []
    for scale in SCALES:
        for name, norm in (("plain", "none"), ("BN", "batch")):
            out.append(f'[[variants]]\nname = "ReLU-4 {name} · lr ×{scale}"\n'
                       f'activation = "relu"\ninit = "he"\ndepth = 4\nnorm = "{norm}"\n'
                       f"lr = {BASE_LR * scale:g}\n")
    return "\n".join(out)


SPEC = r'''
name = "ioffe2015-bn"
description = """Ioffe & Szegedy 2015 on digits: a 4-layer ReLU MLP with and without batch \
norm at 1x, 5x and 30x the plain net's learning rate, and a 10-layer sigmoid MLP with and \
without batch norm (SGD, batch 64)."""
metrics = ["test_acc", "test_loss", "steps_to_target", "grad_ratio"]

[base]
data = "digits"
model = "mlp"
width = 64
optimizer = "sgd"
batch_size = 64

''' + _relu_variants() + r'''
[[variants]]
name = "sigmoid-10 plain"
activation = "sigmoid"
depth = 10
lr = 0.5

[[variants]]
name = "sigmoid-10 BN"
activation = "sigmoid"
depth = 10
norm = "batch"
lr = 0.5

[grid]
seed = [0, 1, 2]

[budget]
epochs = 20

[target]
metric = "test_acc"
value = 0.95

[record]
eval_every = 10
grad_every = 10

[quick]
budget = { epochs = 10 }
'''


NORM = {"plain": "none", "BN": "batch"}


def relu(norm: str, scale: int) -> dict[str, Any]:
    """Configuration of the 4-layer ReLU net, ``norm`` "plain" or "BN", at ``scale`` x lr."""
    return {"activation": "relu", "norm": NORM[norm], "lr": BASE_LR * scale}


def sigmoid(norm: str) -> dict[str, Any]:
    """Configuration of the 10-layer sigmoid net, ``norm`` "plain" or "BN"."""
    return {"activation": "sigmoid", "norm": NORM[norm]}


def median_steps(results: Results, **config: Any) -> float | None:
    """Median steps to target over the seeds of ``config``, a seed that never reached it
    counting as infinite (None when there are no trials)."""
    steps = [t["summary"].get("steps_to_target") for t in results.select(**config)]
    if not steps:
        return None
    return statistics.median(math.inf if s is None else s for s in steps)


def median_acc(results: Results, **config: Any) -> float | None:
    """Median final test accuracy over the seeds of ``config``, a diverged run counting as 0."""
    accs = [t["summary"].get("final_test_acc") if t["status"] == "done" else 0.0
            for t in results.select(**config)]
    accs = [0.0 if a is None or not math.isfinite(a) else a for a in accs]
    return statistics.median(accs) if accs else None


def _s(x: float | None) -> str:
    return "—" if x is None else ("never" if math.isinf(x) else f"{x:.0f}")


def _speed(results: Results) -> list[Criterion]:
    plain = median_steps(results, **relu("plain", 1))
    same = median_steps(results, **relu("BN", 1))
    bn = {s: median_steps(results, **relu("BN", s)) for s in SCALES}
    best = min(bn, key=lambda s: math.inf if bn[s] is None else bn[s])
    ok = plain is not None and None not in bn.values()
    ratio = plain / bn[best] if ok and bn[best] else math.nan
    same_ratio = plain / same if plain is not None and same else math.nan
    return [
        Criterion("BN reaches 95 % test acc in ≥ 2x fewer steps (fastest BN lr vs plain at "
                  f"lr {BASE_LR:g})", "steps ratio ≥ 2",
                  f"plain {_s(plain)} / BN ×{best} {_s(bn[best])} = {ratio:.1f}x",
                  ok and ratio >= 2),
        Criterion("at the same lr BN is faster too", "steps ratio > 1",
                  f"plain {_s(plain)} / BN {_s(same)} = {same_ratio:.1f}x",
                  same_ratio > 1),
    ]


def _high_lr(results: Results, scale: int) -> Criterion:
    """At ``scale`` x the lr BN still reaches the target; the plain net is at least 3x slower
    to it (never counting as infinite), and at 30x most of its seeds diverge."""
    plain, bn = relu("plain", scale), relu("BN", scale)
    p, b = median_steps(results, **plain), median_steps(results, **bn)
    pa, ba = median_acc(results, **plain), median_acc(results, **bn)
    n_div = sum(t["status"] == "diverged" for t in results.select(**plain))
    n = len(results.select(**plain))
    must_diverge = scale >= 30
    ok = (p is not None and b is not None and math.isfinite(b) and p >= 3 * b
          and (not must_diverge or 2 * n_div > n))
    return Criterion(
        f"at {scale}x the learning rate ({BASE_LR * scale:g}) BN still trains, plain "
        + ("diverges" if must_diverge else "is unstable"),
        "BN reaches 95 %; plain ≥ 3x slower or never" + (", most seeds diverge"
                                                         if must_diverge else ""),
        f"steps BN {_s(b)} (acc {ba:.3f}), plain {_s(p)} (acc {pa:.3f}, {n_div}/{n} diverged)"
        if pa is not None and ba is not None else "—", ok)


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """Speed (≥ 2x fewer steps to 95 %), the 10-layer sigmoid net (BN only), high learning
    rates (BN trains, plain fails); medians over seeds 0-2."""
    out = _speed(results)
    floor = 0.7 if quick else 0.8
    sp, sb = median_acc(results, **sigmoid("plain")), median_acc(results, **sigmoid("BN"))
    out.append(Criterion("a 10-layer sigmoid net trains only with BN",
                         f"plain acc ≤ 0.2, BN acc ≥ {floor}", f"plain {sp:.3f}, BN {sb:.3f}"
                         if sp is not None and sb is not None else "—",
                         sp is not None and sb is not None and sp <= 0.2 and sb >= floor))
    for s in SCALES[1:]:
        out.append(_high_lr(results, s))
    return out


def _median_curve(store: Store, trials: list[dict]) -> tuple[list[int], list[float]]:
    by_step: dict[int, list[float]] = {}
    for t in trials:
        for step, _, v in store.metrics(t["key"]).get("test_acc", []):
            if v is not None and math.isfinite(v):
                by_step.setdefault(step, []).append(v)
    steps = sorted(s for s, vs in by_step.items() if len(vs) == len(trials))
    return steps, [statistics.median(by_step[s]) for s in steps]


def plot(directory: str | Path, out: str | Path) -> Path:
    """Median test-accuracy curves of the stored run in ``directory`` (the full run when
    present, else the quick one) -> PNG at ``out``."""

    with Store(directory, readonly=True) as store:
        runs = [r["name"] for r in store.runs()]
        run = "ioffe2015-bn" if "ioffe2015-bn" in runs else "ioffe2015-bn (quick)"
        results = Results(store, run)
        fig, axes = subplots(1, 2, figsize=(9, 3.2), sharey=True)
        curves = [(axes[0], relu(n, s), f"{n} · lr ×{s}", f"C{i}")
                  for i, s in enumerate(SCALES) for n in NORM]
        curves += [(axes[1], sigmoid(n), f"sigmoid-10 {n}", "C0") for n in NORM]
        for ax, config, name, color in curves:
            trials = results.select(**config)
            if trials:
                steps, acc = _median_curve(store, trials)
                style = "-" if config["norm"] == "batch" else "--"
                ax.plot(steps, acc, style, color=color, label=name, lw=1.4)
    axes[0].set_title("4-layer ReLU MLP, SGD")
    axes[1].set_title("10-layer sigmoid MLP, SGD lr 0.5")
    for ax in axes:
        ax.axhline(0.95, color="grey", lw=0.6, ls=":")
        ax.set_xlabel("step")
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("test accuracy (median of 3 seeds)")
    return save(fig, out, dpi=80)


EXPERIMENT = Experiment(
    "ioffe2015-bn", "Ioffe & Szegedy 2015: BN trains faster, at 5-30x the lr, and a 10-layer "
    "sigmoid net", SPEC, verdict)
