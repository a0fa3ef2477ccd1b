"""``founding-claims``: the founding articles' advice on vanishing gradients, measured.

The founding articles (five Chinese blog-style articles on vanishing and exploding gradients)
claim that:

1. adaptive optimizers (Adam, RMSprop, Adagrad) and gradient clipping solve the vanishing
   gradient problem, alongside residual connections and batch normalisation;
2. Leaky ReLU and Parametric ReLU (He et al. 2015) mitigate the problem of ReLU units whose
   gradient is 0 ("dead" units);
3. a good learning rate can be found by random search (Bergstra & Bengio 2012 argue it needs
   fewer trials than a grid);
4. an exponentially decaying learning rate helps.

Each is tested on scikit-learn's digits, with the numbers beside the answer. The verdict holds
when every measured answer agrees with the calibrated one (supported or not supported).
Claim 1 uses ordinary training trials; claims 2-4 use the trial kind ``founding`` defined
here (the lab's training loop, also measuring dead units and decaying the learning rate per
epoch, or a whole learning-rate search inside one trial).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..spec import Trial
from ..store import Store
from ..train import Hooks, TrialResult, load_data
from ..train import run_trial as run_train_trial
from ..plots import save, subplots
from ..verdict import Criterion, Results
from .experiment import Experiment

__all__ = ["EXPERIMENT", "SPEC", "verdict", "run_trial", "dead_share", "search_lrs",
           "expected_grid_trials", "plot", "c1", "c2", "c3", "c4"]

#: the learning-rate search range (SGD, log-uniform) and a "good" result
LR_RANGE = (1e-3, 10.0)


def dead_share(model: nn.Module, x: torch.Tensor) -> float:
    """Share of hidden units (inputs of each block's activation) that are <= 0 on every row
    of ``x``: for ReLU these units get no gradient at all."""
    maxima: list[torch.Tensor] = []
    hooks = [m.act.register_forward_pre_hook(
        lambda _m, inp: maxima.append(inp[0].amax(0))) for m in model.modules()
        if hasattr(m, "act")]
    try:
        with torch.no_grad():
            model.eval()
            model(x)
            model.train()
    finally:
        for h in hooks:
            h.remove()
    units = torch.cat(maxima)
    return float((units <= 0).float().mean())


def search_lrs(search: str, n: int, seed: int) -> list[float]:
    """``n`` learning rates in :data:`LR_RANGE`: log-spaced (grid, ascending) or log-uniform
    samples under ``seed`` (random)."""
    lo, hi = (math.log10(v) for v in LR_RANGE)
    if search == "grid":
        return [10 ** (lo + (hi - lo) * i / (n - 1)) for i in range(n)]
    rng = np.random.default_rng(seed)      # (torch generators with neighbouring seeds start
    return [float(10 ** u) for u in rng.uniform(lo, hi, n)]  # with near-identical values)


def expected_grid_trials(n: int, good: int) -> float:
    """Expected trials until the first good point when ``n`` grid points, ``good`` of them
    good, are tried in random order: ``(n + 1) / (good + 1)`` (inf when none is good)."""
    return (n + 1) / (good + 1) if good else math.inf


def _hooks(cfg: dict[str, Any], epochs: int, kept: dict[str, Any] | None = None) -> Hooks:
    """The ``train`` loop's hooks for a ``founding`` trial of ``epochs`` epochs: the learning
    rate decays by ``decay_to ** (1 / epochs)`` per epoch; the model is kept in ``kept``."""
    decay = cfg["decay_to"] ** (1 / epochs) if cfg["decay_to"] != 1.0 else 1.0
    prepare = None if kept is None else (lambda model, _trial: kept.update(model=model))
    return Hooks(prepare=prepare, epoch_decay=decay)


def _search(trial: Trial) -> dict[str, Any]:
    """One whole learning-rate search: train every candidate for ``search_epochs`` epochs
    with the ``train`` loop, note the first good one (a diverged candidate scores 0)."""
    cfg = trial.config
    lrs = search_lrs(cfg["search"], cfg["n_search"], cfg["seed"])
    epochs = cfg["search_epochs"]
    accs = []
    for lr in lrs:
        candidate = dataclasses.replace(trial, config={**cfg, "lr": lr},
                                        budget={"epochs": epochs})
        r = run_train_trial(candidate, hooks=_hooks(cfg, epochs))
        accs.append(r.summary["final_test_acc"] if r.status == "done" else 0.0)
    good = [a >= cfg["good_acc"] for a in accs]
    first = next((i + 1 for i, g in enumerate(good) if g), None)
    trials = expected_grid_trials(len(lrs), sum(good)) if cfg["search"] == "grid" else (
        first if first is not None else math.inf)
    return {"trials_to_good": None if math.isinf(trials) else trials, "n_good": sum(good),
            "n": len(lrs),
            "best_acc": max(accs), "lrs": lrs, "accs": accs}


def run_trial(trial: Trial) -> TrialResult:
    """A trial of kind ``founding``: probe ``train`` is the lab's ``train`` trial (learning
    rate decayed to ``decay_to`` times its start over the epochs) plus the share of dead units
    at the end; ``lr_search`` runs a whole search."""
    cfg = trial.config
    if cfg["probe"] == "lr_search":
        return TrialResult(trial.key, summary=_search(trial))
    kept: dict[str, Any] = {}
    result = run_train_trial(trial, hooks=_hooks(cfg, trial.budget.get("epochs", 1), kept))
    result.summary["dead_share"] = dead_share(kept["model"], load_data(cfg).x_train)
    return result


def _variant(name: str, **keys: Any) -> str:
    body = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in keys.items())
    return f'[[variants]]\nname = "{name}"\n{body}\n'


_SIG = {"depth": 20, "activation": "sigmoid"}
_C1 = [("SGD", dict(_SIG, optimizer="sgd", lr=0.03)),
       ("Adam", dict(_SIG, optimizer="adam", lr=1e-3)),
       ("RMSprop", dict(_SIG, optimizer="rmsprop", lr=1e-3)),
       ("Adagrad", dict(_SIG, optimizer="adagrad", lr=0.01)),
       ("SGD + clipping", dict(_SIG, optimizer="sgd", lr=0.03, clip="global_norm")),
       ("ReLU + He", dict(depth=20, activation="relu", init="he", optimizer="sgd", lr=0.03)),
       ("BN", dict(_SIG, norm="batch", optimizer="sgd", lr=0.03)),
       ("residual", dict(_SIG, connection="residual", optimizer="sgd", lr=0.03))]
C1_RESCUES = ("Adam", "RMSprop", "Adagrad", "SGD + clipping")
C1_REMEDIES = ("ReLU + He", "BN", "residual")
_SMALL = {"kind": "founding", "depth": 4, "init": "he", "optimizer": "sgd"}
C2_ACTS = ("relu", "leaky_relu", "prelu")
HIGH_LR, GOOD_LR = 0.8, 0.1
C4_RUNS = ((GOOD_LR, 1.0), (GOOD_LR, 0.1), (HIGH_LR, 0.1))     # (lr, decay_to)


_SEARCH = dict(kind="founding", probe="lr_search", depth=2, activation="relu", init="he",
               optimizer="sgd", good_acc=0.8)
#: the defaults the claim-1 variants leave out, pinned so that "SGD" selects plain SGD only
_PLAIN = {"kind": "train", "clip": "none", "norm": "none", "connection": "plain"}


def c1(name: str) -> dict[str, Any]:
    """Configuration of claim 1's 20-layer net ``name`` (a row of ``_C1``)."""
    return {**_PLAIN, **dict(_C1)[name]}


def c2(activation: str) -> dict[str, Any]:
    """Configuration of claim 2's 4-layer net with ``activation`` at the high lr, no decay."""
    return c4(HIGH_LR, 1.0, activation)


def c4(lr: float, decay_to: float, activation: str = "relu") -> dict[str, Any]:
    """Configuration of claim 4's 4-layer net at ``lr``, decayed to ``decay_to`` x in training."""
    return {**_SMALL, "probe": "train", "activation": activation, "lr": lr, "decay_to": decay_to}


def c3(search: str) -> dict[str, Any]:
    """Configuration of claim 3's learning-rate search ``search`` ("grid" or "random")."""
    return {"kind": "founding", "probe": "lr_search", "search": search}


def _c1_name(name: str) -> str:
    return f"sigmoid-20 · {name}" if name not in C1_REMEDIES else f"{name} · SGD"


def _variants() -> str:
    out = [_variant(f"C1 {_c1_name(n)}", **k) for n, k in _C1]
    out += [_variant(f"C2 {a} · lr {HIGH_LR:g}", **_SMALL, activation=a, lr=HIGH_LR)
            for a in C2_ACTS]
    out += [_variant(f"C4 relu · lr {lr:g}{' · decay' if d < 1 else ''}", **_SMALL,
                     activation="relu", lr=lr, decay_to=d)
            for lr, d in C4_RUNS]
    out += [_variant("C3 search · grid", **_SEARCH, search="grid", n_search=9),
            _variant("C3 search · random", **_SEARCH, search="random", n_search=18)]
    return "\n".join(out)


SPEC = r"""
name = "founding-claims"
description = "The founding articles' claims on vanishing gradients, tested on digits."
metrics = ["test_acc", "test_loss", "grad_ratio"]

[base]
data = "digits"
width = 64
batch_size = 64

""" + _variants() + r"""
[grid]
seed = [0, 1, 2]

[budget]
epochs = 20

[record]
grad_every = 10

[quick]
budget = { epochs = 8 }
grid = { seed = [0] }
"""


def _med(results: Results, config: dict[str, Any], key: str,
         diverged: float | None = None) -> float:
    """Median of ``summary[key]`` over the seeds of ``config`` (a diverged run counts as
    ``diverged`` when given); nan without values."""
    vals = []
    for t in results.select(**config):
        v = diverged if t["status"] == "diverged" and diverged is not None else \
            t["summary"].get(key)
        if v is not None:
            vals.append(v)
    return statistics.median(vals) if vals else math.nan


def _answer(supported: bool) -> str:
    return "supported" if supported else "not supported"


def _claim1(results: Results, quick: bool) -> list[Criterion]:
    accs = {n: _med(results, c1(n), "final_test_acc") for n in C1_RESCUES}
    rescued = [n for n, a in accs.items() if a > 0.2]
    out = [Criterion(
        "founding articles: Adam, RMSprop, Adagrad and clipping rescue a vanishing 20-layer sigmoid "
        "net", "not supported: each stays at chance (test acc ≤ 0.2)",
        ", ".join(f"{n} {a:.3f}" for n, a in accs.items()) + f" → {_answer(bool(rescued))}",
        not rescued and not any(math.isnan(a) for a in accs.values()))]
    floor = 0.25 if quick else 0.6
    rem = {n: (_med(results, c1(n), "final_test_acc"),
               _med(results, c1(n), "grad_ratio")) for n in C1_REMEDIES}
    out.append(Criterion(
        "founding articles: ReLU + He, BN and residual connections do rescue it (SGD)",
        f"supported: test acc ≥ {floor} and ‖g₁‖/‖g_L‖ > 1e-3 for each",
        ", ".join(f"{n} {a:.3f} ({r:.1e})" for n, (a, r) in rem.items()),
        all(a >= floor and r > 1e-3 for a, r in rem.values())))
    return out


def _claim2(results: Results) -> list[Criterion]:
    """At a learning rate that kills ReLU units: does Leaky ReLU / PReLU prevent it?"""
    dead = {a: _med(results, c2(a), "dead_share") for a in C2_ACTS}
    acc = {a: _med(results, c2(a), "final_test_acc", diverged=0.0) for a in C2_ACTS}
    prelu = results.select(**c2("prelu"))
    n_div, n = sum(t["status"] == "diverged" for t in prelu), len(prelu)
    leaky_helps = dead["leaky_relu"] < 0.5 * dead["relu"] or acc["leaky_relu"] > 0.5
    return [
        Criterion(f"the problem: at lr {HIGH_LR:g} ReLU units die and the net fails",
                  "≥ 30 % of units ≤ 0 on every input, test acc ≤ 0.5",
                  f"{dead['relu']:.1%} of units, acc {acc['relu']:.3f}",
                  dead["relu"] >= 0.3 and acc["relu"] <= 0.5),
        Criterion(f"founding articles: Leaky ReLU reduces dead units (lr {HIGH_LR:g})",
                  "not supported: units ≤ 0 on every input stay ≥ half of ReLU's, acc ≤ 0.5",
                  f"units ≤ 0: leaky {dead['leaky_relu']:.1%} (ReLU {dead['relu']:.1%}); "
                  f"acc {acc['leaky_relu']:.3f} → {_answer(leaky_helps)}", not leaky_helps),
        Criterion(f"founding articles: PReLU reduces dead units (lr {HIGH_LR:g})",
                  "not supported: most PReLU runs diverge (loss NaN)",
                  f"{n_div}/{n} diverged, acc {acc['prelu']:.3f}", n > 0 and 2 * n_div > n),
    ]


def _claim3(results: Results) -> Criterion:
    grid, rand = results.select(**c3("grid")), results.select(**c3("random"))
    g_good = statistics.median(t["summary"]["n_good"] for t in grid) if grid else 0
    n_grid = grid[0]["summary"]["n"] if grid else 0
    p = sum(t["summary"]["n_good"] for t in rand) / max(1, sum(t["summary"]["n"] for t in rand))
    e_grid = expected_grid_trials(n_grid, round(g_good))
    e_rand = 1 / p if p else math.inf
    faster = e_rand < 0.8 * e_grid
    return Criterion(
        "founding articles: random search finds a good lr in fewer trials than a grid",
        "not supported for one hyperparameter: random ≥ 0.8 × grid's expected trials",
        f"expected trials to test acc ≥ 0.8: grid {e_grid:.1f} ({round(g_good)}/{n_grid} "
        f"good), random {e_rand:.1f} (p = {p:.2f}) → {_answer(faster)}",
        grid != [] and rand != [] and math.isfinite(e_grid) and not faster)


def _claim4(results: Results) -> list[Criterion]:
    def acc(lr: float, decay_to: float) -> float:
        return _med(results, c4(lr, decay_to), "final_test_acc", diverged=0.0)

    good, good_d = acc(GOOD_LR, 1.0), acc(GOOD_LR, 0.1)
    high, high_d = acc(HIGH_LR, 1.0), acc(HIGH_LR, 0.1)
    return [
        Criterion(f"founding articles: exponential lr decay helps (lr {HIGH_LR:g}, too high)",
                  "supported: decay to 0.1x raises test acc by ≥ 0.1",
                  f"constant {high:.3f}, decay {high_d:.3f}", high_d >= high + 0.1),
        Criterion(f"founding articles: exponential lr decay helps (lr {GOOD_LR:g}, tuned)",
                  "not supported: decay gains ≤ 0.01 test acc",
                  f"constant {good:.3f}, decay {good_d:.3f}", good_d <= good + 0.01),
    ]


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """Each claim: the measured answer (supported / not supported) against the calibrated one;
    medians over seeds."""
    return [*_claim1(results, quick), *_claim2(results), _claim3(results), *_claim4(results)]


EXPERIMENT = Experiment(
    "founding-claims", "the founding articles' claims: optimizers and clipping vs "
    "architecture fixes, Leaky ReLU/PReLU, random lr search, lr decay", SPEC, verdict)


def plot(directory: str | Path, out: str | Path) -> Path:
    """Three panels from the stored run in ``directory`` (full when present, else quick):
    claim 1's test accuracies, claims 2 and 4 (accuracy and units ≤ 0), and claim 3's searched
    learning rates -> PNG at ``out``."""

    with Store(directory, readonly=True) as store:
        runs = [r["name"] for r in store.runs()]
        run = "founding-claims" if "founding-claims" in runs else "founding-claims (quick)"
        results = Results(store, run)
    fig, axes = subplots(1, 3, figsize=(12, 3.6))
    c1s = [n for n, _ in _C1 if results.select(**c1(n))]
    axes[0].barh([_c1_name(n) for n in c1s], [_med(results, c1(n), "final_test_acc")
                                              for n in c1s],
                 color=["C2" if n in C1_REMEDIES else "C3" for n in c1s])
    axes[0].set(title="claim 1: 20-layer net, test acc", xlim=(0, 1))
    axes[0].invert_yaxis()
    c24 = [(f"{a} · lr {HIGH_LR:g}", c2(a)) for a in C2_ACTS]
    c24 += [(f"relu · lr {lr:g}{' · decay' if d < 1 else ''}", c4(lr, d)) for lr, d in C4_RUNS]
    c24 = [(name, cfg, results.select(**cfg)) for name, cfg in c24]
    c24 = [row for row in c24 if row[2]]
    y = range(len(c24))
    axes[1].barh([i - 0.2 for i in y], [_med(results, cfg, "final_test_acc", 0.0)
                                        for _, cfg, _ in c24], 0.4, label="test acc")
    axes[1].barh([i + 0.2 for i in y], [_med(results, cfg, "dead_share") for _, cfg, _ in c24],
                 0.4, label="units ≤ 0 on all inputs")
    div = [2 * sum(t["status"] == "diverged" for t in ts) > len(ts) for _, _, ts in c24]
    axes[1].set_yticks(list(y), [name + (" (diverged)" if d else "")
                                 for (name, _, _), d in zip(c24, div)])
    axes[1].set(title="claims 2 and 4: 4-layer net, SGD", xlim=(0, 1))
    axes[1].invert_yaxis()
    axes[1].legend(fontsize=7, loc="lower right")
    for search, marker in (("grid", "o"), ("random", ".")):
        pts = [(lr, a) for t in results.select(**c3(search))
               for lr, a in zip(t["summary"]["lrs"], t["summary"]["accs"])]
        axes[2].scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=search)
    axes[2].axhline(0.8, color="grey", lw=0.6, ls=":")
    axes[2].set(title="claim 3: test acc after 3 epochs", xscale="log", xlabel="SGD lr")
    axes[2].legend(fontsize=7)
    return save(fig, out, dpi=80)
