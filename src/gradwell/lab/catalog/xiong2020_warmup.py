"""``xiong2020-warmup``: a post-LN transformer needs learning-rate warm-up; a pre-LN one does not.

Xiong et al. 2020, "On layer normalization in the transformer architecture" (ICML 2020). In
the original (post-LN) transformer, ``x = LN(x + f(x))``, the gradient of the parameters near
the output is large at initialisation -- for the last feed-forward weight ``W2`` it is
``O(d sqrt(ln d))`` whatever the depth, while with the normalisation moved to the start of
each residual branch (pre-LN, ``x = x + f(LN(x))``) it is ``O(d sqrt(ln d / L))`` (their
theorem 1, figure 3) -- so at the learning rate the rest of the network needs, the first
steps of a post-LN net are too large and training fails without a warm-up of the learning
rate; a pre-LN net trains at the same peak learning rate without one.

Here: a 6-block :class:`~gradwell.nn.TinyTransformer` (width 32, 2 heads) on the copy task
(:func:`gradwell.lab.data.copy`; 4 random tokens, then the same 4 again), Adam at lr 1e-2,
post-LN with and without a linear warm-up over the first 50 steps, and pre-LN without one;
trial kind ``transformer_train`` (:mod:`gradwell.lab.catalog._transformer`), which also
measures ``||dL/dW2||`` of every block at initialisation (``init_ff_grad``). The two
architectures start from the same weights for a given seed.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from ..plots import grid_and_legend, save, subplots
from ..summary import fmt
from ..verdict import Criterion, Results
from .experiment import Experiment

__all__ = ["verdict", "plot", "EXPERIMENT", "VARIANTS"]

SPEC = r'''
name = "xiong2020-warmup"
description = """Xiong et al. 2020: a 6-block post-LN transformer does not train at Adam lr \
1e-2 without learning-rate warm-up, and does with it; pre-LN trains without; at init the last \
blocks' gradients are larger in post-LN."""
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
layers = 6
optimizer = "adam"
lr = 0.01
batch_size = 64

[[variants]]
name = "post-LN, no warm-up"
norm_position = "post"

[[variants]]
name = "post-LN, warm-up"
norm_position = "post"
warmup = 50

[[variants]]
name = "pre-LN, no warm-up"
norm_position = "pre"

[grid]
seed = [0, 1, 2, 3, 4]

[budget]
steps = 300

[record]
eval_every = 25

[quick]
grid = { seed = [0, 1, 2] }
budget = { steps = 150 }
'''

#: each variant's name -> its configuration (where the LayerNorm sits, warm-up steps)
CONFIG: dict[str, dict[str, object]] = {
    "post-LN, no warm-up": {"norm_position": "post", "warmup": 0},
    "post-LN, warm-up": {"norm_position": "post", "warmup": 50},
    "pre-LN, no warm-up": {"norm_position": "pre", "warmup": 0}}
VARIANTS = tuple(CONFIG)
#: ln(16) = 2.77 is the loss of a model that learned nothing; "did not train": at least this
FAILED_LOSS = 2.5
#: the copy task's best loss is 3 ln(16) / 7 = 1.19; "trained": at most this
TRAINED_LOSS = 1.5
#: post-LN's last-block W2 gradient at init, over pre-LN's (same weights): at least this
GRAD_RATIO = 1.15


def _loss(results: Results, label: str) -> tuple[float | None, str]:
    vals = results.values("final_train_loss", **CONFIG[label])
    med = results.median("final_train_loss", **CONFIG[label])
    return med, ", ".join(f"{v:.3f}" for v in vals)


def _grad_ratios(results: Results, layer: int) -> list[float]:
    """Per seed: post-LN's init ``||dL/dW2||`` of block ``layer`` over pre-LN's."""
    post = {t["config"]["seed"]: t["summary"].get("init_ff_grad")
            for t in results.select(**CONFIG[VARIANTS[0]])}
    pre = {t["config"]["seed"]: t["summary"].get("init_ff_grad")
           for t in results.select(**CONFIG[VARIANTS[2]])}
    return [post[s][layer] / pre[s][layer] for s in sorted(post)
            if post[s] and pre.get(s) and pre[s][layer] > 0]


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """Post-LN without warm-up: median final training loss >= 2.5 (ln 16 = 2.77: nothing
    learned); post-LN with warm-up and pre-LN without: <= 1.5 (best possible 1.19); at init,
    post-LN's last-block ``||dL/dW2||`` >= 1.15x pre-LN's (median over seeds of the per-seed
    ratio, same weights) and that ratio is larger at the last block than at the first."""
    out = []
    loss, vals = _loss(results, VARIANTS[0])
    diverged = sum(t["status"] == "diverged" for t in results.select(**CONFIG[VARIANTS[0]]))
    out.append(Criterion("post-LN without warm-up does not train",
                         f"median final train loss ≥ {FAILED_LOSS} (ln 16 = 2.77)",
                         f"{fmt(loss)} (per seed: {vals}; diverged {diverged})",
                         loss is not None and loss >= FAILED_LOSS))
    for name, claim in ((VARIANTS[1], "post-LN with warm-up trains at the same peak LR"),
                        (VARIANTS[2], "pre-LN trains without warm-up")):
        loss, vals = _loss(results, name)
        out.append(Criterion(claim, f"median final train loss ≤ {TRAINED_LOSS} (best 1.19)",
                             f"{fmt(loss)} (per seed: {vals})",
                             loss is not None and loss <= TRAINED_LOSS))
    last, first = _grad_ratios(results, -1), _grad_ratios(results, 0)
    r_last = statistics.median(last) if last else None
    r_first = statistics.median(first) if first else None
    out.append(Criterion("at init, the last block's gradient is larger in post-LN",
                         f"‖dL/dW2‖ of the last block, post-LN / pre-LN ≥ {GRAD_RATIO}",
                         f"{fmt(r_last)} (per seed: {', '.join(f'{v:.3f}' for v in last)})",
                         r_last is not None and r_last >= GRAD_RATIO))
    out.append(Criterion("…and the gap grows toward the output",
                         "that ratio at the last block > at the first",
                         f"{fmt(r_last)} vs {fmt(r_first)}",
                         None not in (r_last, r_first) and r_last > r_first))
    return out


def plot(directory: str | Path, out: str | Path, quick: bool = False) -> Path:
    """The docs figure: ``||dL/dW2||`` per block at initialisation (post-LN and pre-LN, each
    seed and the median) and the training loss of every trial."""
    from ..store import Store

    run = EXPERIMENT.name + (" (quick)" if quick else "")
    fig, (left, right) = subplots(1, 2, figsize=(9, 3.4))
    colors = dict(zip(VARIANTS, ("C3", "C1", "C0")))
    with Store(directory) as store:
        results = Results(store, run)
        for name in (VARIANTS[0], VARIANTS[2]):
            grads = [t["summary"]["init_ff_grad"] for t in results.select(**CONFIG[name])
                     if t["summary"].get("init_ff_grad")]
            for g in grads:
                left.plot(range(1, len(g) + 1), g, color=colors[name], lw=0.6, alpha=0.4)
            if grads:
                left.plot(range(1, len(grads[0]) + 1), np.median(np.array(grads), axis=0),
                          color=colors[name], marker="o", label=name.split(",")[0])
        for name, color in colors.items():
            for j, t in enumerate(results.select(**CONFIG[name])):
                m = [(s, v) for s, _, v in store.metrics(t["key"]).get("train_loss", [])
                     if v is not None and math.isfinite(v)]
                if m:
                    right.plot(*zip(*m), color=color, lw=1, label=name if j == 0 else None)
    left.set(xlabel="block (input → output)", ylabel="‖dL/dW2‖ at init",
             title="feed-forward output weight, at init")
    right.axhline(math.log(16), color="0.5", ls=":", lw=1)
    right.set(xlabel="step", ylabel="training loss (running mean)",
              title="6 blocks, Adam lr 1e-2, copy task")
    grid_and_legend((left, right))
    return save(fig, out, dpi=90)


EXPERIMENT = Experiment(
    "xiong2020-warmup",
    "6-block transformer at Adam lr 1e-2: post-LN fails without warm-up, trains with it; "
    "pre-LN needs none",
    SPEC, verdict)
