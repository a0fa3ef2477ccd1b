"""``kingma2015-optimizers``: every optimizer gradwell ships, each at its best learning rate.

Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015 (arXiv:1412.6980),
Figs. 1-2: on MNIST logistic regression and a multilayer network (2 hidden layers of 1000 ReLU
units), Adam's training cost falls as fast as or faster than SGD with Nesterov momentum,
Adagrad, RMSprop and AdaDelta, each with a searched learning rate.

Here: scikit-learn's digits, logistic regression (one linear layer) and an MLP (2 hidden layers
of 64 ReLU units), 10 epochs, batch 64; full-batch gradient descent (GD), SGD, SGD with momentum
0.9, Nesterov momentum, Adagrad, RMSprop, Adadelta, Adam and AdamW (weight decay 0.01), each at
four learning rates; seeds 0-4. The measure is the mean training loss over the per-epoch
evaluations (the area under the training curve: low when the loss falls early); an
optimizer's best is its learning rate with the lowest median over seeds. The verdict compares
Adam's best with the best of the others on the MLP.
"""

from __future__ import annotations

import math
import json
import statistics
from pathlib import Path
from typing import Any

from ..store import Store
from ..plots import save, subplots
from ..verdict import Criterion, Results
from .experiment import Experiment

__all__ = ["EXPERIMENT", "SPEC", "OPTIMIZERS", "MODELS", "config", "verdict", "best", "plot"]

#: name -> (its configuration, the learning rates searched); the configurations tell every
#: optimizer apart (GD is SGD on the full batch, AdamW is Adam with weight decay)
OPTIMIZERS: dict[str, tuple[dict[str, Any], tuple[float, ...]]] = {
    "GD": ({"optimizer": "sgd", "batch_size": 100000}, (0.3, 1.0, 3.0, 10.0)),
    "SGD": ({"optimizer": "sgd", "batch_size": 64}, (0.1, 0.3, 1.0, 3.0)),
    "momentum": ({"optimizer": "momentum"}, (0.03, 0.1, 0.3, 1.0)),
    "Nesterov": ({"optimizer": "nesterov"}, (0.03, 0.1, 0.3, 1.0)),
    "Adagrad": ({"optimizer": "adagrad"}, (0.03, 0.1, 0.3, 1.0)),
    "RMSprop": ({"optimizer": "rmsprop"}, (1e-3, 3e-3, 1e-2, 3e-2)),
    "Adadelta": ({"optimizer": "adadelta"}, (1.0, 3.0, 10.0, 30.0)),
    "Adam": ({"optimizer": "adam"}, (1e-3, 3e-3, 1e-2, 3e-2)),
    "AdamW": ({"optimizer": "adamw", "weight_decay": 0.01}, (1e-3, 3e-3, 1e-2, 3e-2)),
}
#: the grid's model names -> the ``model`` configuration value
MODELS = {"logreg": "logistic", "MLP": "mlp"}
MARGIN = 0.10


def config(optimizer: str, lr: float, model: str) -> dict[str, Any]:
    """Configuration of ``optimizer`` (a name in :data:`OPTIMIZERS`) at ``lr`` on ``model``
    (``logreg`` or ``MLP``)."""
    return {**OPTIMIZERS[optimizer][0], "lr": lr, "model": MODELS[model]}


def _variants() -> str:
    return "\n".join(f'[[variants]]\nname = "{name} lr={lr:g}"\n'
                     + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
                     + f"lr = {lr!r}\n"
                     for name, (keys, lrs) in OPTIMIZERS.items() for lr in lrs)


SPEC = r'''
name = "kingma2015-optimizers"
description = """Kingma & Ba 2015 on digits: GD, SGD, momentum, Nesterov, Adagrad, RMSprop, \
Adadelta, Adam and AdamW, each at four learning rates, on logistic regression and a 2-layer \
ReLU MLP (10 epochs, batch 64)."""
metrics = ["train_loss", "test_loss", "test_acc"]

[base]
data = "digits"
width = 64
depth = 2
activation = "relu"
batch_size = 64

''' + _variants() + r'''
[grid]
model = [{ name = "logreg", model = "logistic" }, { name = "MLP", model = "mlp" }]
seed = [0, 1, 2, 3, 4]

[budget]
epochs = 10

[record]
grad_every = 10

[quick]
budget = { epochs = 5 }
grid = { model = [{ name = "MLP", model = "mlp" }], seed = [0, 1, 2] }
'''


def mean_train_loss(results: Results, trial: dict) -> float:
    """The mean of a trial's training loss over its evaluations (the area under its training
    curve, per evaluation): low when the loss falls early. Diverged runs count as inf."""
    vals = [v for _, _, v in results.store.metrics(trial["key"]).get("train_loss", [])]
    if trial["status"] != "done" or not vals or not all(math.isfinite(v) for v in vals):
        return math.inf
    return statistics.fmean(vals)


def _median(results: Results, **config: Any) -> float:
    """Median over the seeds of ``config`` of :func:`mean_train_loss` (nan without trials)."""
    vals = [mean_train_loss(results, t) for t in results.select(**config)]
    return statistics.median(vals) if vals else math.nan


def best(results: Results, optimizer: str, model: str) -> tuple[float, float]:
    """``(learning rate, median mean training loss)`` of ``optimizer``'s best learning rate
    on ``model`` (``logreg`` or ``MLP``)."""
    lrs = OPTIMIZERS[optimizer][1]
    losses = {lr: _median(results, **config(optimizer, lr, model)) for lr in lrs}
    lr = min(lrs, key=lambda x: math.inf if math.isnan(losses[x]) else losses[x])
    return lr, losses[lr]


ADAM_FAMILY = ("Adam", "AdamW")


def _compare(results: Results, model: str, rivals: tuple[str, ...], margin: float,
             claim: str) -> Criterion:
    adam_lr, adam = best(results, "Adam", model)
    others = {n: best(results, n, model) for n in rivals}
    name = min(others, key=lambda n: others[n][1])
    lr, loss = others[name]
    ratio = adam / loss if loss > 0 else math.nan
    return Criterion(
        claim, f"Adam ≤ {1 + margin:g} × best other",
        f"Adam (lr {adam_lr:g}) {adam:.4f}; best other {name} (lr {lr:g}) {loss:.4f}; "
        f"ratio {ratio:.2f}", math.isfinite(ratio) and ratio <= 1 + margin)


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """On the MLP, by the median (over seeds) mean training loss of each optimizer's best
    learning rate: Adam ≤ 1.1 × the best of all the others, and Adam ≤ the best of the
    non-Adam optimizers (GD, SGD, momentum, Nesterov, Adagrad, RMSprop, Adadelta)."""
    others = tuple(n for n in OPTIMIZERS if n != "Adam")
    classic = tuple(n for n in OPTIMIZERS if n not in ADAM_FAMILY)
    return [
        _compare(results, "MLP", others, MARGIN, "MLP: Adam's best is within 10% of the "
                 "best of the others (mean training loss)"),
        _compare(results, "MLP", classic, 0.0, "MLP: Adam's best beats every optimizer "
                 "outside the Adam family"),
    ]


def plot(directory: str | Path, out: str | Path) -> Path:
    """Training-loss curves of each optimizer at its best learning rate (seed 0), logistic
    regression and MLP side by side -> PNG at ``out``."""

    fig, axes = subplots(1, 2, figsize=(9, 3.4))
    with Store(directory, readonly=True) as store:
        runs = [r["name"] for r in store.runs()]
        run = "kingma2015-optimizers" if "kingma2015-optimizers" in runs else \
            "kingma2015-optimizers (quick)"
        results = Results(store, run)
        for ax, model in zip(axes, ("logreg", "MLP")):
            for i, name in enumerate(OPTIMIZERS):
                lr, _ = best(results, name, model)
                trial = next(iter(results.select(seed=0, **config(name, lr, model))), None)
                if trial is None:
                    continue
                pts = store.metrics(trial["key"]).get("train_loss", [])
                ax.plot(range(1, len(pts) + 1), [v for _, _, v in pts], lw=2.2 if
                        name == "Adam" else 1.2, color=f"C{i}", label=f"{name} ({lr:g})")
            ax.set(title=model, xlabel="epoch (evaluated once per epoch)", yscale="log")
    axes[0].set_ylabel("training loss (seed 0)")
    axes[1].legend(fontsize=7, ncol=2)
    return save(fig, out, dpi=80)

EXPERIMENT = Experiment(
    "kingma2015-optimizers", "Kingma & Ba 2015: every optimizer at its best lr on logistic "
    "regression and an MLP; Adam within 10% of the best", SPEC, verdict)
