"""``vanishing``: the flagship experiment and ``gradwell demo``.

A depth-20 MLP on scikit-learn's digits, plain sigmoid and tanh nets against four remedies
(ReLU + He init, He et al. 2015; batch normalisation, Ioffe & Szegedy 2015; residual
connections, He et al. 2016; all three), each trained with SGD and with Adam. In the plain
sigmoid net the back-propagated gradient shrinks by roughly ``max sigmoid' * ||W|| ~ 0.25 * 0.6``
per layer (Glorot & Bengio 2010), so the first layer's gradient is ~1e-17 of the last one's and
the net stays at chance; every remedy keeps the ratio near 1 and learns.
"""

from __future__ import annotations

from ..summary import fmt
from ..verdict import Criterion, Results
from .experiment import Experiment

SPEC = r'''
name = "vanishing"
description = """A depth-20 MLP on digits: plain sigmoid and tanh against ReLU + He init, \
batch normalisation and residual connections, each with SGD and Adam."""

[base]
data = "digits"
model = "mlp"
depth = 20
width = 64
batch_size = 64
seed = 0

[[variants]]
name = "sigmoid plain"
activation = "sigmoid"

[[variants]]
name = "tanh plain"
activation = "tanh"

[[variants]]
name = "ReLU + He"
activation = "relu"
init = "he"

[[variants]]
name = "sigmoid + BN"
activation = "sigmoid"
norm = "batch"

[[variants]]
name = "sigmoid + residual"
activation = "sigmoid"
connection = "residual"

[[variants]]
name = "ReLU + BN + residual"
activation = "relu"
norm = "batch"
connection = "residual"
init = "he"

[grid]
optimizer = [{ name = "SGD", optimizer = "sgd", lr = 0.03 },
             { name = "Adam", optimizer = "adam", lr = 0.001 }]

[budget]
epochs = 30

[target]
metric = "test_acc"
value = 0.9

[record]
grad_every = 10
eval_every = 10      # steps-to-target on a fixed 10-step grid, finer than an epoch (22 steps)

[quick]
budget = { epochs = 8 }
'''

#: each variant's name -> its architecture, every key pinned (the variants overlap otherwise:
#: "sigmoid plain" sets only the activation)
ARCH = {name: dict(zip(("activation", "norm", "connection", "init"), values)) for name, values in {
    "sigmoid plain": ("sigmoid", "none", "plain", "default"),
    "tanh plain": ("tanh", "none", "plain", "default"),
    "ReLU + He": ("relu", "none", "plain", "he"),
    "sigmoid + BN": ("sigmoid", "batch", "plain", "default"),
    "sigmoid + residual": ("sigmoid", "none", "residual", "default"),
    "ReLU + BN + residual": ("relu", "batch", "residual", "he")}.items()}
REMEDIES = ("ReLU + He", "sigmoid + BN", "sigmoid + residual", "ReLU + BN + residual")
#: the grid's optimizer names -> their ``optimizer`` configuration value
OPTIMIZERS = {"SGD": "sgd", "Adam": "adam"}


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """Plain sigmoid: near chance and a first/last gradient ratio below 1e-10 (medians over
    both optimizers: each is shown in the table). Every remedy, judged *per optimizer* so a
    median never hides a failing run: ratio above 1e-3 and test accuracy at least 0.5
    (0.25 with ``--quick``: 2.5x chance after 8 epochs); the measured column also says whether
    and when it reached the 0.9 target."""
    acc = results.median("final_test_acc", **ARCH["sigmoid plain"])
    ratio = results.median("grad_ratio", **ARCH["sigmoid plain"])
    out = [
        Criterion("plain sigmoid stays near chance (0.1)", "test acc ≤ 0.2", fmt(acc),
                  acc is not None and acc <= 0.2),
        Criterion("plain sigmoid gradients vanish", "‖g₁‖/‖g_L‖ < 1e-10", fmt(ratio, '.1e'),
                  ratio is not None and ratio < 1e-10),
    ]
    floor = 0.25 if quick else 0.5
    for name in REMEDIES:
        for opt in OPTIMIZERS:
            label, config = f"{name} · {opt}", {**ARCH[name], "optimizer": OPTIMIZERS[opt]}
            acc = results.median("final_test_acc", **config)
            ratio = results.median("grad_ratio", **config)
            steps = results.median("steps_to_target", **config)
            reached = "never reached 0.9" if steps is None else f"0.9 at step {steps:.0f}"
            out.append(Criterion(f"{label}: gradients flow and it learns",
                                 f"‖g₁‖/‖g_L‖ > 1e-3, test acc ≥ {floor}",
                                 f"{fmt(ratio, '.1e')}, {fmt(acc)} ({reached})",
                                 acc is not None and ratio is not None
                                 and acc >= floor and ratio > 1e-3))
    return out


EXPERIMENT = Experiment(
    "vanishing", "depth-20 MLP on digits: sigmoid/tanh vs ReLU+He, BN, residual; SGD and Adam",
    SPEC, verdict)
