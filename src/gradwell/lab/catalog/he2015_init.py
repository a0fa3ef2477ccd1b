"""``he2015-init``: He et al. 2015, initialisation of deep rectifier networks.

He, Zhang, Ren & Sun, "Delving Deep into Rectifiers: Surpassing Human-Level Performance on
ImageNet Classification", ICCV 2015, section 2.2 and figure 3. With ReLU, a layer with
``n`` inputs and weight variance ``Var[w]`` multiplies the variance of the pre-activations by
``n Var[w] / 2`` (eq. 10), so the "Xavier" initialisation (``Var[w] = 1/n``, Glorot & Bengio
2010) halves it at every layer: after ``L`` layers the std has shrunk by ``(1/sqrt 2)^L``. Their
initialisation, ``Var[w] = 2/n``, keeps it level. The paper's 30-layer rectifier net initialised
with Xavier "completely stalls" with diminishing gradients, while the same net with theirs
converges.

Here: a 30-layer ReLU MLP (128 units) on scikit-learn's digits with torch's default
initialisation (``U(-1/sqrt n, 1/sqrt n)``, a factor ``1/sqrt 6`` per layer), Xavier (normal) and
He, each measured at initialisation (trial kind ``at_init``: per-layer std of the
pre-activations, back-propagated gradients, relative weight gradients) and trained with SGD +
momentum 0.9 (lr 0.005, as in the paper's momentum SGD), three seeds each.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..plots import grid_and_legend, save, subplots
from ..summary import fmt
from ..verdict import Criterion, Results
from .experiment import Experiment

SPEC = r'''
name = "he2015-init"
description = """He et al. 2015: a 30-layer ReLU MLP on digits with torch's default, Xavier and \
He initialisation, measured at initialisation and trained with momentum SGD."""
metrics = ["test_acc", "train_loss", "steps_to_target", "grad_ratio"]

[base]
data = "digits"
model = "mlp"
depth = 30
width = 128
activation = "relu"
optimizer = "momentum"
momentum = 0.9
lr = 0.005
batch_size = 64

[[variants]]
name = "at init"
kind = "at_init"

[[variants]]
name = "trained"

[grid]
init = [{ name = "torch default", init = "default" },
        { name = "Xavier", init = "xavier_normal" },
        { name = "He", init = "he" }]
seed = [0, 1, 2]

[budget]
epochs = 30

[target]
metric = "test_acc"
value = 0.8

[record]
grad_every = 10

[quick]
budget = { steps = 150 }
record = { eval_every = 50 }
'''

#: each initialisation's name -> its ``init`` configuration value
INIT_CONFIG = {"torch default": "default", "Xavier": "xavier_normal", "He": "he"}
INITS = tuple(INIT_CONFIG)


def at_init(name: str) -> dict[str, str]:
    """Configuration of the at-init measurement of initialisation ``name``."""
    return {"kind": "at_init", "init": INIT_CONFIG[name]}


def trained(name: str) -> dict[str, str]:
    """Configuration of the training run of initialisation ``name``."""
    return {"kind": "train", "init": INIT_CONFIG[name]}
CHANCE_LOSS = math.log(10.0)          # cross-entropy of a uniform guess over 10 classes


def _init_criteria(results: Results) -> list[Criterion]:
    """The forward law at initialisation and the diminishing gradients."""
    xavier = results.select(**at_init("Xavier"))
    depth = xavier[0]["config"]["depth"] if xavier else 30
    expected_ratio = 2.0 ** (-(depth - 1) / 2)
    xf = results.median("act_factor", **at_init("Xavier"))
    xr = results.median("act_ratio", **at_init("Xavier"))
    hf = results.median("act_factor", **at_init("He"))
    g = {name: results.median("grad_rel_median", **at_init(name)) for name in INITS}
    out = [
        Criterion("Xavier: activation std shrinks by 1/√2 = 0.707 per layer",
                  "per-layer factor in [0.67, 0.75]", fmt(xf),
                  xf is not None and 0.67 <= xf <= 0.75),
        Criterion(f"Xavier: std at layer {depth} / layer 1 follows (1/√2)^{depth - 1}",
                  f"within 3x of {expected_ratio:.1e}", fmt(xr, '.1e'),
                  xr is not None and abs(math.log10(xr / expected_ratio)) <= math.log10(3)),
        Criterion("He: activation std stays level", "per-layer factor in [0.95, 1.05]", fmt(hf),
                  hf is not None and 0.95 <= hf <= 1.05),
    ]
    he = g["He"]
    for name in ("torch default", "Xavier"):
        rel = None if he is None or g[name] is None else g[name] / he
        out.append(Criterion(
            f"{name}: diminishing gradients at init",
            "median ‖∇W‖/‖W‖ ≤ 1e-3 × He's",
            f"{fmt(g[name], '.1e')} vs He {fmt(he, '.1e')} (× {fmt(rel, '.1e')})",
            rel is not None and rel <= 1e-3))
    return out


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """Xavier's (1/√2)-per-layer law and He's level std at init; default and Xavier: tiny
    gradients, then training stalls at chance; He trains (test acc ≥ 0.75; 0.4 with
    ``--quick``)."""
    out = _init_criteria(results)
    for name in ("torch default", "Xavier"):
        loss = results.median("final_train_loss", **trained(name))
        acc = results.median("final_test_acc", **trained(name))
        stalled = (loss is not None and acc is not None
                   and loss >= CHANCE_LOSS - 0.05 and acc <= 0.2)
        out.append(Criterion(
            f"{name}: training stalls",
            f"train loss ≥ ln 10 − 0.05 = {CHANCE_LOSS - 0.05:.2f}, test acc ≤ 0.2",
            f"{fmt(loss)}, {fmt(acc)}", stalled))
    floor = 0.4 if quick else 0.75
    acc = results.median("final_test_acc", **trained("He"))
    loss = results.median("final_train_loss", **trained("He"))
    out.append(Criterion("He: trains", f"test acc ≥ {floor}",
                         f"{fmt(acc)} (train loss {fmt(loss)})", acc is not None and acc >= floor))
    return out


def plot(directory: str | Path, out: str | Path) -> Path:
    """Regenerate the docs figure from a full run stored in ``directory``: the activation std
    and the back-propagated gradient per layer at initialisation (seed 0, with the (1/√2)^l
    law), and the median test accuracy over training per initialisation."""

    from ..store import Store

    with Store(directory, readonly=True) as store:
        results = Results(store, "he2015-init")
        fig, axes = subplots(1, 3, figsize=(11, 3.1))
        for name, color, ls in zip(INITS, ("#d62728", "#1f77b4", "#2ca02c"), ("--", "-", "-")):
            t = next((t for t in results.select(**at_init(name)) if t["status"] == "done"),
                     None)
            if t is not None:
                s = t["summary"]
                for ax, key in ((axes[0], "pre_stds"), (axes[1], "back_stds")):
                    ax.semilogy(range(1, len(s[key]) + 1), s[key], ls, color=color, label=name)
                if name == "Xavier":
                    law = [s["pre_stds"][0] * 2 ** (-i / 2) for i in range(len(s["pre_stds"]))]
                    axes[0].semilogy(range(1, len(law) + 1), law, "k:", label="(1/√2)^l law")
            _accuracy_curve(axes[2], store, results.select(**trained(name)), color, name, ls)
    axes[0].set(title="activation std at init", xlabel="layer")
    axes[1].set(title="back-propagated gradient std at init", xlabel="layer")
    axes[2].set(title="test accuracy (median of 3 seeds)", xlabel="step", ylim=(0, 1))
    grid_and_legend(axes)
    return save(fig, out, dpi=80)


def _accuracy_curve(ax: Any, store: Any, trials: list[dict[str, Any]], color: str,
                    name: str, ls: str = "-") -> None:
    import statistics

    curves = [store.metrics(t["key"]).get("test_acc", []) for t in trials]
    if not curves or not curves[0]:
        return
    steps = [s for s, _, _ in curves[0]]
    med = [statistics.median(c[i][2] for c in curves if len(c) > i) for i in range(len(steps))]
    ax.plot(steps, med, ls, color=color, label=name)


EXPERIMENT = Experiment(
    "he2015-init", "30-layer ReLU MLP: default/Xavier init stall, He init trains; "
    "(1/√2)^L std under Xavier", SPEC, verdict)
