"""``zhang2019-fixup``: a deep residual net trains without normalisation when its branches
start at zero.

Zhang, Dauphin & Ma 2019, "Fixup initialization: residual learning without normalization"
(ICLR 2019): with standard (He) initialisation the output variance of a residual net grows
exponentially with depth, so without normalisation it cannot be trained at ordinary learning
rates; rescaling the branches' weights by ``L^{-1/(2m-2)}`` and starting their last layer (and the
classifier) at zero -- Fixup -- trains it as well as batch normalisation does. De & Smith 2020
("Batch normalization biases residual blocks towards the identity function in deep networks")
reach the same with one scalar per branch that starts at 0 (SkipInit). Normalisation is not the
only remedy: what matters is that the residual blocks start near the identity.

Here: a residual MLP (:class:`gradwell.nn.ResidualMLP`, 32 two-layer ReLU branches of 32 units,
66 linear layers) on scikit-learn's digits, SGD with momentum 0.9, four ways: He init without
normalisation, He init with batch norm, Fixup and SkipInit (both without normalisation). The
trial kind ``fixup_train`` is the lab's ``train`` trial building that model, and recording the
standard deviation of the logits at initialisation.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...nn import ResidualMLP
from ..data import Dataset
from ..plots import grid_and_legend, save, subplots
from ..spec import Trial
from ..train import Hooks, TrialResult, load_data, run_trial
from ..summary import fmt
from ..verdict import Criterion, Results
from .experiment import Experiment

__all__ = ["build_residual_mlp", "fixup_trial", "verdict", "plot", "EXPERIMENT"]


def build_residual_mlp(cfg: dict[str, Any], data: Dataset) -> nn.Module:
    """The :class:`~gradwell.nn.ResidualMLP` a configuration asks for (``depth`` blocks of
    ``width`` units, ``activation``, ``norm``, ``scheme``), sized for ``data``."""
    return ResidualMLP(data.n_in, data.n_out, cfg["depth"], cfg["width"], cfg["activation"],
                       cfg["norm"], cfg["scheme"])


def fixup_trial(trial: Trial) -> TrialResult:
    """Trial kind ``fixup_train``: train a residual MLP; the summary adds ``init_logit_std``
    (std of the logits on the test set at initialisation) and ``init_loss``."""
    data = load_data(trial.config)
    init: dict[str, float] = {}

    def prepare(model: nn.Module, trial: Trial) -> None:
        with torch.no_grad():          # a copy in train mode: BN normalises with batch stats
            out = copy.deepcopy(model).train()(data.x_test)
            init["init_logit_std"] = out.std().item()
            init["init_loss"] = nn.functional.cross_entropy(out, data.y_test).item()

    result = run_trial(trial, hooks=Hooks(build=build_residual_mlp, prepare=prepare))
    result.summary.update(init)
    return result


SPEC = r'''
name = "zhang2019-fixup"
description = """Zhang et al. 2019 / De & Smith 2020: a 32-block residual MLP without \
normalisation diverges under He init (its logits start ~1e7); Fixup and SkipInit, also without \
normalisation, train it as well as batch norm does."""
metrics = ["test_acc", "train_loss"]

[base]
kind = "fixup_train"
data = "digits"
depth = 32
width = 32
activation = "relu"
optimizer = "momentum"
lr = 0.05
batch_size = 64

[[variants]]
name = "He, no norm"
scheme = "he"

[[variants]]
name = "He + BN"
scheme = "he"
norm = "batch"

[[variants]]
name = "Fixup, no norm"
scheme = "fixup"

[[variants]]
name = "SkipInit, no norm"
scheme = "skipinit"

[grid]
seed = [0, 1, 2]

[budget]
epochs = 8

[quick]
base = { depth = 16 }
budget = { epochs = 3 }
'''

#: each variant's name -> its configuration (initialisation scheme, normalisation)
CONFIG: dict[str, dict[str, str]] = {
    "He, no norm": {"scheme": "he", "norm": "none"},
    "He + BN": {"scheme": "he", "norm": "batch"},
    "Fixup, no norm": {"scheme": "fixup", "norm": "none"},
    "SkipInit, no norm": {"scheme": "skipinit", "norm": "none"}}
VARIANTS = tuple(CONFIG)
#: signal growth: logit std at init of the He net without normalisation (the others are ~1)
EXPLODED_STD = 100.0
FAILED_ACC = 0.2
TRAINED_ACC, TRAINED_ACC_QUICK = 0.9, 0.8
#: how far below batch norm's median test accuracy Fixup and SkipInit may end
BN_MARGIN = 0.03


def _acc(results: Results, label: str) -> tuple[float | None, str]:
    vals = ", ".join(f"{v:.3f}" for v in results.values("final_test_acc", **CONFIG[label]))
    return results.median("final_test_acc", **CONFIG[label]), vals


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """He without normalisation: logit std at init >= 100 and median test accuracy <= 0.2; BN,
    Fixup, SkipInit: median test accuracy >= 0.9 (0.8 with ``--quick``); Fixup and SkipInit
    within 0.03 of BN."""
    plain = CONFIG[VARIANTS[0]]
    std = results.median("init_logit_std", **plain)
    stds = ", ".join(f"{v:.2g}" for v in results.values("init_logit_std", **plain))
    acc, vals = _acc(results, VARIANTS[0])
    diverged = sum(t["status"] == "diverged" for t in results.select(**plain))
    out = [
        Criterion("He init without normalisation: the signal explodes with depth",
                  f"logit std at init ≥ {EXPLODED_STD:g}", f"{fmt(std, '.3g')} (per seed: {stds})",
                  std is not None and std >= EXPLODED_STD),
        Criterion("…and the net does not train", f"median test acc ≤ {FAILED_ACC}",
                  f"{fmt(acc)} (per seed: {vals}; diverged {diverged}/"
                  f"{len(results.select(**plain))})", acc is not None and acc <= FAILED_ACC),
    ]
    floor = TRAINED_ACC_QUICK if quick else TRAINED_ACC
    bn, _ = _acc(results, VARIANTS[1])
    for name in VARIANTS[1:]:
        acc, vals = _acc(results, name)
        out.append(Criterion(f"{name} trains", f"median test acc ≥ {floor}",
                             f"{fmt(acc)} (per seed: {vals})", acc is not None and acc >= floor))
    for name in VARIANTS[2:]:
        acc, _ = _acc(results, name)
        out.append(Criterion(f"normalisation is not the only remedy: {name} matches BN",
                             f"median test acc ≥ BN's − {BN_MARGIN}", f"{fmt(acc)} vs {fmt(bn)}",
                             None not in (acc, bn) and acc >= bn - BN_MARGIN))
    return out


def plot(directory: str | Path, out: str | Path, quick: bool = False) -> Path:
    """The docs figure: training loss vs step of every trial (one colour per variant; the He
    net without normalisation diverges within its first epoch) and final test accuracy."""
    from ..store import Store

    run = EXPERIMENT.name + (" (quick)" if quick else "")
    fig, (left, right) = subplots(1, 2, figsize=(9, 3.2))
    with Store(directory) as store:
        results = Results(store, run)
        for i, (color, name) in enumerate(zip(("C3", "C0", "C2", "C1"), VARIANTS)):
            for j, t in enumerate(results.select(**CONFIG[name])):
                m = [(s, v) for s, _, v in store.metrics(t["key"]).get("train_loss", [])
                     if v is not None and math.isfinite(v)]
                if m:
                    left.semilogy(*zip(*m), color=color, lw=1, label=name if j == 0 else None)
            vals = results.values("final_test_acc", **CONFIG[name])
            right.scatter([i] * len(vals), vals, color=color, s=14)
            med = results.median("final_test_acc", **CONFIG[name])
            if med is not None:
                right.hlines(med, i - 0.3, i + 0.3, color=color)
    depth = 16 if quick else 32
    left.set(xlabel="step", ylabel="training loss (running mean)",
             title=f"residual MLP, {depth} blocks, digits")
    right.set(xticks=range(len(VARIANTS)), ylabel="final test accuracy", ylim=(0, 1),
              title="3 seeds (bar: median)")
    right.set_xticklabels(VARIANTS, fontsize=7, rotation=15)
    grid_and_legend((left, right))
    return save(fig, out, dpi=90)


EXPERIMENT = Experiment(
    "zhang2019-fixup",
    "32-block residual MLP, no normalisation: He init diverges; Fixup and SkipInit train like BN",
    SPEC, verdict)
