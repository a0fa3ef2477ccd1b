"""``saxe2014-orthogonal``: Saxe, McClelland & Ganguli 2014, orthogonal initialisation.

Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of learning in deep
linear neural networks", ICLR 2014 (arXiv:1312.6120), section 3 and figure 6:

* a deep linear network computes the product of its weight matrices. With random orthogonal
  weights the product is orthogonal: every singular value is exactly 1, at any depth. With
  "scaled" Gaussian weights (``N(0, 1/n)``, which preserve the norm of a vector on average) the
  product's singular values spread out (for ``L`` factors their squares follow the Fuss-Catalan
  law: mean 1, mean square ``L + 1``) and most of them collapse toward 0, so most directions
  of the input are lost;
* consequently, with the learning rate scaled as ``1/depth``, a deep linear network with
  orthogonal initialisation learns in about the same number of steps at every depth
  (depth-independent learning time), while one with scaled Gaussian initialisation needs
  more and more steps as depth grows.

Here: products of ``depth`` random ``64 x 64`` matrices (float64; trial kind
``matrix_products``), and deep linear MLPs (``depth`` hidden layers of 64 units, ``linear``
activation) on scikit-learn's digits, trained with plain SGD at lr ``0.3 / depth`` until the
running training loss reaches 0.3, with orthogonal and scaled Gaussian (``lecun``,
``N(0, 1/fan_in)``) initialisation, depths 2, 8, 32 and 64 (2 and 32 with ``--quick``), three
seeds each.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch
from torch import nn

from ...nn import init_weights
from ..spec import Trial
from ..train import TrialResult
from ..plots import grid_and_legend, save, subplots
from ..summary import fmt
from ..verdict import Criterion, Results
from .experiment import Experiment

SPEC = r'''
name = "saxe2014-orthogonal"
description = """Saxe et al. 2014: singular values of products of orthogonal vs scaled \
Gaussian matrices, and steps to a training loss of 0.3 of deep linear nets on digits."""
metrics = ["train_loss", "test_acc", "steps_to_target"]

[base]
data = "digits"
model = "mlp"
width = 64
activation = "linear"
optimizer = "sgd"
batch_size = 64

[[variants]]
name = "product · orthogonal"
kind = "matrix_products"
init = "orthogonal"

[[variants]]
name = "product · Gaussian"
kind = "matrix_products"
init = "lecun"

[[variants]]
name = "linear net · orthogonal"
init = "orthogonal"

[[variants]]
name = "linear net · Gaussian"
init = "lecun"

[grid]
depth = [{ name = "depth 2", depth = 2, lr = 0.15 },
         { name = "depth 8", depth = 8, lr = 0.0375 },
         { name = "depth 32", depth = 32, lr = 0.009375 },
         { name = "depth 64", depth = 64, lr = 0.0046875 }]
seed = [0, 1, 2]

[budget]
steps = 400

[target]
metric = "train_loss"
value = 0.3

[record]
eval_every = 10
grad_every = 20

[quick]
budget = { steps = 250 }
grid = { depth = [{ name = "depth 2", depth = 2, lr = 0.15 },
                  { name = "depth 32", depth = 32, lr = 0.009375 }] }
'''

#: each initialisation's name -> its ``init`` configuration value
INIT_CONFIG = {"orthogonal": "orthogonal", "Gaussian": "lecun"}
INITS = tuple(INIT_CONFIG)


def product(init: str) -> dict[str, str]:
    """Configuration of the matrix-product measurement under initialisation ``init``."""
    return {"kind": "matrix_products", "init": INIT_CONFIG[init]}


def linear_net(init: str) -> dict[str, str]:
    """Configuration of the deep linear net trained from initialisation ``init``."""
    return {"kind": "train", "init": INIT_CONFIG[init]}


def product_singular_values(n: int, depth: int, scheme: str, seed: int = 0) -> torch.Tensor:
    """Singular values (descending, float64) of the product of ``depth`` ``n x n`` matrices
    initialised with ``scheme`` (:func:`gradwell.nn.init_weights`, linear gain) after
    ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    layers = nn.ModuleList(nn.Linear(n, n, bias=False, dtype=torch.float64)
                           for _ in range(depth))
    init_weights(layers, scheme, "linear")
    with torch.no_grad():
        product = torch.eye(n, dtype=torch.float64)
        for layer in layers:
            product = layer.weight @ product
        return torch.linalg.svdvals(product)


def run_products_trial(trial: Trial) -> TrialResult:
    """Trial kind ``matrix_products``: the singular values of a product of ``depth`` random
    ``width x width`` matrices with the configured ``init``."""
    cfg = trial.config
    s = product_singular_values(cfg["width"], cfg["depth"], cfg["init"], cfg["seed"])
    summary = {"singular_values": s.tolist(), "sv_max": s.max().item(),
               "sv_min": s.min().item(), "sv_median": s.median().item(),
               "max_dev_from_1": (s - 1).abs().max().item(),
               "frac_below_0.1": (s < 0.1).double().mean().item()}
    rows = [(0, i, f"sv{i}", "singular_value", v) for i, v in enumerate(s.tolist())]
    return TrialResult(trial.key, summary=summary, layer_stats=rows)


def _depths(results: Results) -> list[int]:
    return sorted({t["config"]["depth"] for t in results.trials})


def steps_to_target(results: Results, init: str, depth: int) -> float | None:
    """Median over seeds of the steps to the target; a seed that never reached it counts as
    infinitely many (so the median is ``inf`` when most seeds never did)."""
    steps = [math.inf if t["summary"].get("steps_to_target") is None
             else float(t["summary"]["steps_to_target"])
             for t in results.select(depth=depth, **linear_net(init))]
    return statistics.median(steps) if steps else None


def _products(results: Results) -> list[Criterion]:
    depths = _depths(results)
    devs = [results.median("max_dev_from_1", depth=d, **product("orthogonal")) for d in depths]
    deep = depths[-1] if depths else 0
    med, frac, smax = (results.median(key, depth=deep, **product("Gaussian"))
                       for key in ("sv_median", "frac_below_0.1", "sv_max"))
    ok_dev = bool(devs) and all(d is not None and d <= 1e-10 for d in devs)
    return [
        Criterion(f"orthogonal products keep every singular value at 1 (depths "
                  f"{', '.join(map(str, depths))})", "max |σ − 1| ≤ 1e-10 at every depth",
                  ", ".join(fmt(d, '.1e') for d in devs), ok_dev),
        Criterion(f"Gaussian products collapse (depth {deep})",
                  "median σ ≤ 0.01 and ≥ 50% of σ below 0.1",
                  f"median σ {fmt(med, '.1e')}, {fmt(None if frac is None else 100 * frac, '.0f')}%"
                  f" below 0.1 (largest {fmt(smax, '.2f')})",
                  med is not None and frac is not None and med <= 0.01 and frac >= 0.5),
    ]


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """Orthogonal products: all σ = 1; Gaussian ones collapse; steps to a training loss of 0.3:
    orthogonal within 1.5x of depth 2's at the deepest depth, Gaussian at least 2x more (and
    growing with depth)."""
    out = _products(results)
    depths = _depths(results)
    if not depths:
        return out
    first, last = depths[0], depths[-1]
    steps = {init: [steps_to_target(results, init, d) for d in depths] for init in INITS}
    text = {init: " → ".join("never" if s is not None and math.isinf(s) else fmt(s, '.0f')
                             for s in v) for init, v in steps.items()}
    o0, o1 = steps["orthogonal"][0], steps["orthogonal"][-1]
    g0, g1 = steps["Gaussian"][0], steps["Gaussian"][-1]
    ortho_ok = None not in (o0, o1) and math.isfinite(o1) and o1 <= 1.5 * o0
    grows = all(a is not None and b is not None and b >= a
                for a, b in zip(steps["Gaussian"], steps["Gaussian"][1:]))
    gauss_ok = None not in (g0, g1) and g1 >= 2 * g0 and grows
    out += [
        Criterion(f"orthogonal init: about the same steps at every depth ({first} → {last})",
                  f"steps at depth {last} ≤ 1.5 × depth {first}'s", text["orthogonal"],
                  ortho_ok),
        Criterion(f"Gaussian init: more and more steps with depth ({first} → {last})",
                  f"non-decreasing, depth {last} ≥ 2 × depth {first}'s", text["Gaussian"],
                  gauss_ok),
    ]
    return out


def plot(directory: str | Path, out: str | Path) -> Path:
    """Regenerate the docs figure from a full run stored in ``directory``: the sorted singular
    values of the products (seed 0) per depth, and the median steps to the target per depth."""

    from ..store import Store

    fig, axes = subplots(1, 2, figsize=(8.5, 3.1))
    with Store(directory, readonly=True) as store:
        results = Results(store, "saxe2014-orthogonal")
        depths = _depths(results)
        for init, ls in zip(INITS, ("-", "--")):
            for d, color in zip(depths, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")):
                t = results.select(depth=d, seed=0, **product(init))
                if t:
                    sv = t[0]["summary"]["singular_values"]
                    axes[0].semilogy(range(1, len(sv) + 1), sv, ls, color=color,
                                     label=f"{init}, {d} matrices")
            budget = max((t["summary"].get("steps", 0) for t in results.trials), default=0)
            steps = [steps_to_target(results, init, d) for d in depths]
            shown = [budget if s is not None and math.isinf(s) else s for s in steps]
            line = axes[1].plot(depths, shown, ls, marker="o", label=init)[0]
            never = [(d, budget) for d, s in zip(depths, steps) if s is not None and math.isinf(s)]
            if never:
                axes[1].plot(*zip(*never), "^", ms=9, color=line.get_color(),
                             label=f"{init}: never (plotted at the budget, {budget})")
    axes[0].set(title="singular values of the product", xlabel="index", ylim=(1e-18, 10))
    axes[1].set(title="steps to training loss 0.3 (median)", xlabel="depth")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xticks(depths, [str(d) for d in depths])
    axes[1].set_ylim(bottom=0)
    grid_and_legend(axes)
    return save(fig, out, dpi=80)


EXPERIMENT = Experiment(
    "saxe2014-orthogonal", "orthogonal products keep σ = 1, Gaussian collapse; deep linear "
    "nets: orthogonal init learns in depth-independent steps, Gaussian slower with depth",
    SPEC, verdict)
