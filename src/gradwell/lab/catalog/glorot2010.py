"""``glorot2010``: Glorot & Bengio 2010, why deep sigmoid nets are hard to train.

Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural networks",
AISTATS 2010:

* section 3.1, figure 2: in a deep sigmoid net with the standard initialisation
  ``W ~ U(-1/sqrt n, 1/sqrt n)``, the top hidden layer is driven to saturation at 0 early in
  training, while the lower layers' mean activations stay around and above 0.5; learning
  plateaus until it slowly desaturates (around epoch 100 in the paper);
* section 4.2.1 (eq. 2-7), figure 7: at initialisation, with tanh in its linear regime, each
  layer multiplies the variance of the back-propagated gradient ``dC/ds`` by ``n Var[W]``: by
  1/3 under the standard initialisation (``Var[W] = 1/(3n)``), so its std shrinks roughly as
  ``(1/sqrt 3)`` per layer toward the input; the normalised initialisation
  ``W ~ U(-sqrt 6 / sqrt(n_in + n_out), +...)`` (``n Var[W] = 1``) keeps it level;
* table 1: sigmoid nets end with the worst test error; tanh does better, tanh with the
  normalised initialisation better still.

Here: a 5-hidden-layer MLP (256 units; the paper: 4-5 layers of 1000) on scikit-learn's digits
with torch's default initialisation, which is the paper's standard one (torch's biases are
``U(-1/sqrt n, 1/sqrt n)`` rather than zero), and Glorot's normalised (``xavier_uniform``) one.
Measured at initialisation (trial kind ``at_init``) and trained with plain SGD (batch 32) at two
learning rates, 0.05 and 0.5, each activation judged at its better one; trial kind
``train_act`` is a ``train`` trial that also keeps each hidden layer's mean activation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..spec import Trial
from ..train import TrialResult
from ..train import run_trial as run_train_trial
from ..plots import grid_and_legend, save, subplots
from ..summary import fmt
from ..verdict import Criterion, Results
from .experiment import Experiment

SPEC = r'''
name = "glorot2010"
description = """Glorot & Bengio 2010: a 5-layer MLP on digits, sigmoid and tanh with the \
standard init, tanh with the normalised init: gradients at init, saturation, final accuracy."""
metrics = ["test_acc", "test_loss", "grad_ratio"]

[base]
data = "digits"
model = "mlp"
depth = 5
width = 256
optimizer = "sgd"
batch_size = 32
kind = "train_act"

[[variants]]
name = "at init · sigmoid"
kind = "at_init"
activation = "sigmoid"

[[variants]]
name = "at init · tanh"
kind = "at_init"
activation = "tanh"

[[variants]]
name = "at init · tanh normalised"
kind = "at_init"
activation = "tanh"
init = "xavier_uniform"

[[variants]]
name = "sigmoid · lr 0.5"
activation = "sigmoid"
lr = 0.5

[[variants]]
name = "sigmoid · lr 0.05"
activation = "sigmoid"
lr = 0.05

[[variants]]
name = "tanh · lr 0.5"
activation = "tanh"
lr = 0.5

[[variants]]
name = "tanh · lr 0.05"
activation = "tanh"
lr = 0.05

[[variants]]
name = "tanh normalised · lr 0.5"
activation = "tanh"
init = "xavier_uniform"
lr = 0.5

[[variants]]
name = "tanh normalised · lr 0.05"
activation = "tanh"
init = "xavier_uniform"
lr = 0.05

[grid]
seed = [0, 1, 2]

[budget]
epochs = 30

[record]
grad_every = 50
eval_every = 150

[quick]
budget = { steps = 250 }
'''

MODELS = ("sigmoid", "tanh", "tanh normalised")
#: each model's configuration: the at-init statistics are selected by these values
MODEL_CONFIG = {"sigmoid": {"activation": "sigmoid", "init": "default"},
                "tanh": {"activation": "tanh", "init": "default"},
                "tanh normalised": {"activation": "tanh", "init": "xavier_uniform"}}
LRS = ("0.5", "0.05")


def trained(model: str, lr: str) -> dict[str, Any]:
    """Configuration of the training run of ``model`` (a key of :data:`MODEL_CONFIG`) at
    learning rate ``lr`` (one of :data:`LRS`)."""
    return {"kind": "train_act", "lr": float(lr), **MODEL_CONFIG[model]}
EARLY_STEP = 200          # "early in training": the first recorded step at or after this one


def act_means(result: TrialResult) -> tuple[list[int], list[list[float]]]:
    """``(steps, [[mean activation of hidden layer 1, 2, ...] at each step])`` from a train
    trial's monitor rows (stat ``out_mean`` of the modules ``blocks.<i>.act``)."""
    by_step: dict[int, dict[int, float]] = {}
    for step, _, layer, stat, value in result.layer_stats:
        parts = layer.split(".")
        if stat == "out_mean" and len(parts) == 3 and parts[0] == "blocks" and parts[2] == "act":
            by_step.setdefault(step, {})[int(parts[1])] = value
    steps = sorted(by_step)
    return steps, [[by_step[s][i] for i in sorted(by_step[s])] for s in steps]


def run_trial(trial: Trial) -> TrialResult:
    """A ``train`` trial whose summary also holds the hidden layers' mean activations at every
    recorded step (``act_mean_steps``, ``act_means``)."""
    result = run_train_trial(trial)
    steps, means = act_means(result)
    result.summary.update(act_mean_steps=steps, act_means=means)
    return result


def early_means(summary: dict[str, Any], step: int = EARLY_STEP) -> list[float] | None:
    """The mean activation of each hidden layer at the first recorded step ``>= step`` (the
    last recorded one when training was shorter)."""
    steps, means = summary.get("act_mean_steps"), summary.get("act_means")
    if not steps or not means:
        return None
    i = next((k for k, s in enumerate(steps) if s >= step), len(steps) - 1)
    return means[i]


def _saturation(results: Results) -> list[Criterion]:
    early = [early_means(t["summary"]) for t in results.select(**trained("sigmoid", "0.5"))]
    early = [m for m in early if m]
    top = sorted(m[-1] for m in early)
    lower = sorted(min(m[:-1]) for m in early)
    top_med = top[len(top) // 2] if top else None
    low_med = lower[len(lower) // 2] if lower else None
    return [
        Criterion(f"sigmoid: the top hidden layer saturates at 0 early (step ~{EARLY_STEP})",
                  "top layer's mean activation ≤ 0.1 (0.5 at init)", fmt(top_med),
                  top_med is not None and top_med <= 0.1),
        Criterion("sigmoid: the lower layers sit at or above 0.5",
                  "lowest mean activation of layers 1..L-1 ≥ 0.48", fmt(low_med),
                  low_med is not None and low_med >= 0.48),
    ]


def _gradients(results: Results) -> list[Criterion]:
    std = results.median("back_factor", kind="at_init", **MODEL_CONFIG["tanh"])
    norm = results.median("back_factor", kind="at_init", **MODEL_CONFIG["tanh normalised"])
    return [
        Criterion("tanh, standard init: back-propagated gradients shrink ≈ 1/√3 = 0.577 per "
                  "layer toward the input", "per-layer factor in [0.52, 0.64]", fmt(std),
                  std is not None and 0.52 <= std <= 0.64),
        Criterion("tanh, normalised init: back-propagated gradients stay level",
                  "per-layer factor ≥ 0.85", fmt(norm), norm is not None and norm >= 0.85),
    ]


def best_accuracy(results: Results, model: str) -> tuple[float | None, str]:
    """The better median final test accuracy of ``model`` over its learning rates, and the lr."""
    accs = {lr: results.median("final_test_acc", **trained(model, lr)) for lr in LRS}
    accs = {lr: a for lr, a in accs.items() if a is not None and math.isfinite(a)}
    if not accs:
        return None, "—"
    lr = max(accs, key=accs.__getitem__)
    return accs[lr], lr


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """Top sigmoid layer saturated early while the lower ones stay ≥ 0.48; tanh gradients at init
    shrink ≈ 1/√3 per layer (standard) or stay level (normalised); sigmoid ends worst."""
    out = _saturation(results) + _gradients(results)
    best = {m: best_accuracy(results, m) for m in MODELS}
    sig = best["sigmoid"][0]
    others = [best[m][0] for m in MODELS[1:]]
    text = ", ".join(f"{m} {fmt(a)} (lr {lr})" for m, (a, lr) in best.items())
    out.append(Criterion("sigmoid ends worst", "sigmoid's best test acc ≥ 0.3 below each tanh's",
                         text, sig is not None and all(o is not None and o - sig >= 0.3
                                                       for o in others)))
    return out


def plot(directory: str | Path, out: str | Path) -> Path:
    """Regenerate the docs figure from a full run stored in ``directory``: the sigmoid net's
    mean activation per layer during training (lr 0.5, seed 0; the paper's figure 2), the
    back-propagated gradient std per layer at init (seed 0), and the test accuracy (median over
    seeds, each model at its better learning rate)."""

    from ..store import Store

    fig, axes = subplots(1, 3, figsize=(11, 3.1))
    with Store(directory, readonly=True) as store:
        results = Results(store, "glorot2010")
        sig = results.select(seed=0, **trained("sigmoid", "0.5"))
        if sig:
            s = sig[0]["summary"]
            for i, series in enumerate(zip(*s["act_means"])):
                axes[0].plot(s["act_mean_steps"], series, label=f"layer {i + 1}")
        for model, ls in zip(MODELS, ("--", "-", "-")):
            t = results.select(kind="at_init", seed=0, **MODEL_CONFIG[model])
            if t:
                back = t[0]["summary"]["back_stds"]
                axes[1].semilogy(range(1, len(back) + 1), back, ls, marker="o", label=model)
            _, lr = best_accuracy(results, model)
            if lr in LRS:                      # "—": no finished training run
                _median_curve(axes[2], store, results.select(**trained(model, lr)),
                              f"{model} (lr {lr})", ls)
    axes[0].set(title="sigmoid: mean activation (lr 0.5)", xlabel="step", ylim=(0, 1))
    axes[1].set(title="back-propagated gradient std at init", xlabel="layer")
    axes[2].set(title="test accuracy (median of 3 seeds)", xlabel="step", ylim=(0, 1))
    grid_and_legend(axes)
    return save(fig, out, dpi=80)


def _median_curve(ax: Any, store: Any, trials: list[dict[str, Any]], name: str, ls: str) -> None:
    import statistics

    curves = [store.metrics(t["key"]).get("test_acc", []) for t in trials]
    if not curves or not curves[0]:
        return
    steps = [s for s, _, _ in curves[0]]
    med = [statistics.median(c[i][2] for c in curves if len(c) > i) for i in range(len(steps))]
    ax.plot(steps, med, ls, label=name)


EXPERIMENT = Experiment(
    "glorot2010", "deep sigmoid/tanh MLP: top sigmoid layer saturates; tanh gradients shrink "
    "~1/√3 per layer under standard init, level under Glorot's; sigmoid ends worst", SPEC,
    verdict)
