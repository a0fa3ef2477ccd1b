"""``gated-rnn``: gated recurrent units learn long time lags where a tanh RNN does not.

Hochreiter & Schmidhuber 1997, "Long short-term memory" (Neural Computation 9(8)): the adding
problem (their experiment 4) cannot be learned by a plain recurrent net because the error signal
vanishes over the time lag, while the LSTM's additive cell state carries it; Chung, Gulcehre, Cho
& Bengio 2014, "Empirical evaluation of gated recurrent neural networks on sequence modeling":
the GRU (Cho et al. 2014) does as well as the LSTM and both beat the tanh RNN.

Here: the adding problem at T = 100 (T = 50 with ``--quick``); a tanh RNN, a GRU and an LSTM of
the same width, trained with Adam (lr 0.02; 0.05 for the LSTM) and gradient-norm clipping.
Predicting the constant 1 scores MSE 1/6; the gated nets go far below it, the tanh RNN stays near
it. The LSTM's forget gate bias starts at 1 (Gers, Schmidhuber & Cummins 2000; Jozefowicz et
al. 2015), so it remembers by default: with torch's zero-mean init the forget gate starts at 0.5
and the LSTM needs several times more steps to leave the baseline plateau than this budget
allows.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..spec import Trial
from ..plots import save, subplots
from ..train import TrialResult, run_trial
from ..summary import fmt
from ..verdict import Criterion, Results
from .experiment import Experiment

__all__ = ["set_forget_bias", "gated_trial", "verdict", "plot", "EXPERIMENT", "BASELINE"]

#: MSE of predicting the constant 1 (the target is the sum of two U(0, 1) values).
BASELINE = 1 / 6


def set_forget_bias(model: torch.nn.Module, value: float) -> int:
    """Set the forget-gate bias of every ``nn.LSTM`` in ``model`` to ``value`` (``b_ih`` holds
    it, ``b_hh``'s forget block becomes 0; torch orders the gates i, f, g, o). Returns the
    number of layers changed."""
    changed = 0
    with torch.no_grad():
        for lstm in (m for m in model.modules() if isinstance(m, torch.nn.LSTM)):
            h = lstm.hidden_size
            for layer in range(lstm.num_layers):
                getattr(lstm, f"bias_ih_l{layer}")[h:2 * h].fill_(value)
                getattr(lstm, f"bias_hh_l{layer}")[h:2 * h].zero_()
                changed += 1
    return changed


def gated_trial(trial: Trial) -> TrialResult:
    """Trial kind ``gated_train``: the lab's ``train`` trial, with the LSTM forget-gate bias
    set to ``forget_bias`` after the model is built (the optimizer holds the same tensors)."""
    return run_trial(trial, prepare=_forget_bias)


def _forget_bias(model: nn.Module, trial: Trial) -> None:
    if trial.config.get("forget_bias") is not None:
        set_forget_bias(model, float(trial.config["forget_bias"]))


SPEC = r'''
name = "gated-rnn"
description = """Hochreiter & Schmidhuber 1997 / Chung et al. 2014: on the adding problem \
(T = 100) LSTM and GRU drive the MSE far below the constant-prediction baseline 1/6, a tanh RNN \
stays near it."""
metrics = ["test_loss", "steps_to_target", "grad_ratio"]

[base]
kind = "gated_train"
data = "adding"
seq_len = 100
n_train = 2000
n_test = 500
hidden = 32
optimizer = "adam"
lr = 0.02
clip = "global_norm"
clip_value = 1.0
batch_size = 64

[[variants]]
name = "tanh RNN"
model = "rnn"

[[variants]]
name = "GRU"
model = "gru"

[[variants]]
name = "LSTM"
model = "lstm"
forget_bias = 1.0
lr = 0.05

[grid]
seed = [0, 1, 2]

[budget]
steps = 600

[target]
metric = "test_loss"
value = 0.0167

[record]
eval_every = 50
grad_every = 10

[quick]
base = { seq_len = 50 }
budget = { steps = 400 }
'''

FAR_BELOW, NEAR = 0.1, 0.8     # fractions of the baseline
#: each model's name -> its ``model`` configuration value
MODEL = {"tanh RNN": "rnn", "GRU": "gru", "LSTM": "lstm"}


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """GRU and LSTM: median test MSE below 10 % of the baseline 1/6; tanh RNN: median test MSE
    at least 80 % of it."""
    out = []
    for name in ("GRU", "LSTM"):
        mse = results.median("final_test_loss", model=MODEL[name])
        vals = ", ".join(f"{v:.4f}" for v in results.values("final_test_loss",
                                                             model=MODEL[name]))
        out.append(Criterion(f"{name} drives the error far below the baseline 1/6",
                             f"median test MSE ≤ {FAR_BELOW * BASELINE:.4f} (10 % of baseline)",
                             f"{fmt(mse, '.4f')} (per seed: {vals})",
                             mse is not None and mse <= FAR_BELOW * BASELINE))
    rnn = MODEL["tanh RNN"]
    mse = results.median("final_test_loss", model=rnn)
    vals = ", ".join(f"{v:.4f}" for v in results.values("final_test_loss", model=rnn))
    out.append(Criterion("the tanh RNN stays near the baseline 1/6",
                         f"median test MSE ≥ {NEAR * BASELINE:.4f} (80 % of baseline)",
                         f"{fmt(mse, '.4f')} (per seed: {vals})",
                         mse is not None and mse >= NEAR * BASELINE))
    return out


def plot(directory: str | Path, out: str | Path, quick: bool = False) -> Path:
    """The docs figure: test MSE vs step of every trial (one colour per model), log scale, with
    the constant-prediction baseline."""

    from ..store import Store

    run = EXPERIMENT.name + (" (quick)" if quick else "")
    fig, ax = subplots(figsize=(5.5, 3.2))
    with Store(directory, readonly=True) as store:
        results = Results(store, run)
        for color, name in zip(("C3", "C0", "C2"), MODEL):
            for i, t in enumerate(results.select(model=MODEL[name])):
                m = store.metrics(t["key"])["test_loss"]
                ax.semilogy([s for s, _, _ in m], [v for _, _, v in m], color=color, lw=1,
                            label=name if i == 0 else None)
    ax.axhline(BASELINE, color="gray", ls="--", lw=1, label="predict 1 (MSE 1/6)")
    ax.set(xlabel="step", ylabel="test MSE", title="adding problem, T = "
           f"{50 if quick else 100} (3 seeds each)")
    ax.legend(fontsize=8)
    return save(fig, out, dpi=90)


EXPERIMENT = Experiment(
    "gated-rnn", "adding problem T=100: LSTM and GRU far below the 1/6 baseline, tanh RNN near it",
    SPEC, verdict)
