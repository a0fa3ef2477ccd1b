"""``he2016-degradation``: deeper plain nets train worse; residual connections fix it.

He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR 2016), figures
1 and 4: with batch normalisation and He init, a 34-layer plain net has *higher training error*
than an 18-layer one throughout training -- the degradation problem. It is not overfitting (the
training error is the one that is higher) and, with BN, not vanishing gradients either (they
checked that the backward gradients keep healthy norms); the residual version of the deep net
(``h + F(h)``) trains better than the shallow one.

Here: an MLP on scikit-learn's digits, ReLU, He init, batch norm, SGD + momentum 0.9 (lr 0.005),
at depths 3, 10 and 20 (hidden blocks of 64 units), plain and residual, the same number of epochs
for every net. The criterion is on the training loss (running mean over the last epoch).
"""

from __future__ import annotations

from pathlib import Path

from ..plots import save, subplots
from ..summary import fmt
from ..verdict import Criterion, Results
from .experiment import Experiment

__all__ = ["verdict", "plot", "EXPERIMENT", "SHALLOW", "DEEP"]

SHALLOW, DEEP = 3, 20

SPEC = r'''
name = "he2016-degradation"
description = """He et al. 2016: at a fixed budget a deep plain net (20 blocks, BN, He init) has \
a higher training loss than a shallow one (3 blocks); its residual version does not."""
metrics = ["train_loss", "test_acc", "grad_ratio"]

[base]
data = "digits"
model = "mlp"
width = 64
activation = "relu"
init = "he"
norm = "batch"
optimizer = "momentum"
lr = 0.005
batch_size = 64

[grid]
connection = ["plain", "residual"]
depth = [3, 10, 20]
seed = [0, 1, 2]

[budget]
epochs = 10

[quick]
grid = { depth = [3, 20] }
budget = { epochs = 5 }
'''


def _loss(results: Results, connection: str, depth: int) -> tuple[float | None, str]:
    vals = results.values("final_train_loss", connection=connection, depth=depth)
    med = results.median("final_train_loss", connection=connection, depth=depth)
    return med, ", ".join(f"{v:.3f}" for v in vals)


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """Deep plain: median training loss at least 2x the shallow plain net's, with gradients that
    do not vanish (first/last ratio > 1e-2: BN keeps them healthy, so this is not vanishing);
    deep residual: median training loss not above the shallow plain net's."""
    shallow, s_vals = _loss(results, "plain", SHALLOW)
    deep, d_vals = _loss(results, "plain", DEEP)
    res, r_vals = _loss(results, "residual", DEEP)
    ratio = results.median("grad_ratio", connection="plain", depth=DEEP)
    have = None not in (shallow, deep, res)
    return [
        Criterion(f"degradation: the plain depth-{DEEP} net trains worse than depth {SHALLOW}",
                  f"train loss(depth {DEEP}) ≥ 2 × train loss(depth {SHALLOW})",
                  f"{fmt(deep)} vs {fmt(shallow)} (per seed: {d_vals} vs {s_vals})",
                  have and deep >= 2 * shallow),
        Criterion("…and not because its gradients vanish (BN)",
                  f"plain depth-{DEEP} ‖g₁‖/‖g_L‖ > 1e-2", fmt(ratio, '.2g'),
                  ratio is not None and ratio > 1e-2),
        Criterion(f"the residual depth-{DEEP} net does not degrade",
                  f"train loss(residual depth {DEEP}) ≤ train loss(plain depth {SHALLOW})",
                  f"{fmt(res)} vs {fmt(shallow)} (per seed: {r_vals})",
                  have and res <= shallow),
    ]


def plot(directory: str | Path, out: str | Path, quick: bool = False) -> Path:
    """The docs figure: final training loss vs depth, plain and residual (median and each
    seed), and the training-loss curves of seed 0."""

    from ..store import Store

    run = EXPERIMENT.name + (" (quick)" if quick else "")
    fig, (left, right) = subplots(1, 2, figsize=(9, 3.2))
    with Store(directory, readonly=True) as store:
        results = Results(store, run)
        depths = sorted({t["config"]["depth"] for t in results.trials})
        for color, conn in (("C3", "plain"), ("C0", "residual")):
            meds = [results.median("final_train_loss", connection=conn, depth=d) for d in depths]
            left.semilogy(depths, meds, "o-", color=color, label=conn)
            for d in depths:
                vals = results.values("final_train_loss", connection=conn, depth=d)
                left.scatter([d] * len(vals), vals, color=color, s=8, alpha=0.5)
            for i, d in enumerate(depths):
                t = results.select(connection=conn, depth=d, seed=0)[0]
                m = store.metrics(t["key"])["train_loss"]
                right.semilogy([s for s, _, _ in m], [v for _, _, v in m], color=color,
                               alpha=0.35 + 0.65 * i / max(1, len(depths) - 1),
                               label=f"{conn}, depth {d}")
    left.set(xlabel="depth (hidden blocks)", ylabel="final training loss", xticks=depths,
             title="digits, BN + He init, same epochs")
    left.legend(fontsize=8)
    right.set(xlabel="step", ylabel="training loss", title="seed 0")
    right.legend(fontsize=7)
    return save(fig, out, dpi=90)


EXPERIMENT = Experiment(
    "he2016-degradation",
    "BN + He MLP on digits: deep plain trains worse than shallow, deep residual does not",
    SPEC, verdict)
