"""``bengio1994-long-term``: gradient descent cannot learn long-term dependencies in a tanh RNN.

Bengio, Simard & Frasconi 1994, "Learning long-term dependencies with gradient descent is
difficult" (IEEE Transactions on Neural Networks 5(2)). A recurrent net that robustly *latches*
one bit of information (keeps it in the presence of noise) must sit in a region where
``|dh_t/dh_{t-1}| < 1``, so the gradient of the loss with respect to an input ``k`` steps back
decays exponentially with ``k`` (their theorem 4): the influence of early inputs on the
gradient vanishes, and the probability of learning the latching task falls with its length.
The LSTM (Hochreiter & Schmidhuber 1997) carries its cell state additively
(``c_t = f_t c_{t-1} + ...``): with forget gates near 1 the gradient reaches the first step.

Here, the latching problem (:func:`gradwell.lab.data.latch`): a bit ``b = +-1`` at the first
step, then ``T - 1`` steps of Gaussian noise; predict ``b`` from the last hidden state
(predicting 0 scores MSE 1). A tanh RNN and an LSTM (forget-gate bias 1) of the same width,
Adam with gradient-norm clipping, at several ``T``. The trial kind ``latch_train`` trains like the
lab's ``train`` trial and also measures ``||dL/dx_{T-k}||`` for every lag ``k`` on the test
sequences, at initialisation and after training (:func:`input_gradient_by_lag`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from ..plots import grid_and_legend, save, subplots
from ..spec import Trial
from ..train import TrialResult, load_data, run_trial
from ..summary import fmt
from ..verdict import Criterion, Results
from .experiment import Experiment
from .gated_rnn import set_forget_bias
from .pascanu2013_clipping import fit_decay

__all__ = ["input_gradient_by_lag", "latch_trial", "verdict", "plot", "EXPERIMENT", "SUCCESS_MSE"]

#: a run "learned to latch" when its test MSE is below this (predicting 0 scores 1)
SUCCESS_MSE = 0.1
#: sequences of the test set used for the lag measurement
LAG_BATCH = 128


def input_gradient_by_lag(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``g[k]`` = mean over the batch of ``||dL/dx_{T-1-k}||`` for ``k = 0 .. T-1``, ``L`` the
    summed squared error of ``model(x)`` against ``y`` (``x`` is ``(batch, T, features)``).
    ``g[T-1]`` is the gradient reaching the first input, the one the latching task needs."""
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, time, features); got shape {tuple(x.shape)}")
    x = x.detach().clone().requires_grad_(True)
    was = model.training
    model.eval()
    try:
        ((model(x) - y) ** 2).sum().backward()
    finally:
        model.train(was)
        model.zero_grad(set_to_none=True)
    return x.grad.norm(dim=2).mean(dim=0).flip(0).detach()


def _lag_stats(model: nn.Module, x: Tensor, y: Tensor, tag: str) -> tuple[dict, list]:
    g = input_gradient_by_lag(model, x, y)
    ratios = (g / g[0]).numpy() if g[0] > 0 else np.full(len(g), math.nan)
    summary: dict[str, Any] = {f"lag_ratio{tag}": float(ratios[-1])}
    if len(ratios) >= 3 and np.all(ratios > 0) and np.all(np.isfinite(ratios)):
        summary[f"lag_slope{tag}"], summary[f"lag_r2{tag}"] = fit_decay(ratios[1:])
    metrics = [(k, None, f"lag_grad_ratio{tag}", float(r)) for k, r in enumerate(ratios)
               if math.isfinite(r)]
    return summary, metrics


def latch_trial(trial: Trial) -> TrialResult:
    """Trial kind ``latch_train``: the lab's ``train`` trial (LSTM forget-gate bias set to
    ``forget_bias``) plus the gradient by lag on the first :data:`LAG_BATCH` test sequences,
    at initialisation (``lag_*_init``) and after training (``lag_*``); ``g[0]`` is the last
    input's gradient, so ``lag_ratio`` is ``||dL/dx_1|| / ||dL/dx_T||``."""
    data = load_data(trial.config)
    x, y = data.x_test[:LAG_BATCH], data.y_test[:LAG_BATCH]
    kept: dict[str, Any] = {}

    def prepare(model: nn.Module, trial: Trial) -> None:
        if trial.config.get("forget_bias") is not None:
            set_forget_bias(model, float(trial.config["forget_bias"]))
        kept["model"] = model
        kept["init"] = _lag_stats(model, x, y, "_init")

    result = run_trial(trial, prepare=prepare)
    for summary, metrics in (kept["init"], _lag_stats(kept["model"], x, y, "")):
        result.summary.update(summary)
        result.metrics += metrics
    return result


SPEC = r'''
name = "bengio1994-long-term"
description = """Bengio, Simard & Frasconi 1994: on the latching problem a tanh RNN's gradient \
with respect to early inputs decays exponentially with the lag and its success falls with the \
sequence length; an LSTM holds the gradient and latches at T = 50."""
metrics = ["test_loss"]

[base]
kind = "latch_train"
data = "latch"
noise = 0.5
n_train = 1000
n_test = 256
hidden = 16
optimizer = "adam"
lr = 0.01
clip = "global_norm"
clip_value = 1.0
batch_size = 32

[[variants]]
name = "tanh RNN"
model = "rnn"

[[variants]]
name = "LSTM"
model = "lstm"
forget_bias = 3.0

[grid]
seq_len = [5, 20, 50]
seed = [0, 1, 2]

[budget]
steps = 300

[record]
eval_every = 50

[quick]
grid = { seq_len = [5, 20] }
'''

SHORT = 5
#: the slope (log10 per step) and fit quality of an exponential decay
DECAY_SLOPE, DECAY_R2 = -0.1, 0.95
#: the LSTM's gradient ratio at the longest lag, at init, that counts as "held"
HELD = 1e-2
FAILED_MSE = 0.5
#: each variant's name -> its ``model`` configuration value
MODEL = {"tanh RNN": "rnn", "LSTM": "lstm"}


def _per_seed(results: Results, key: str, sel: tuple[str, int], spec: str = ".3g") -> str:
    vals = results.values(key, model=MODEL[sel[0]], seq_len=sel[1])
    return ", ".join(format(v, spec) for v in vals)


def _median(results: Results, key: str, sel: tuple[str, int]) -> float | None:
    return results.median(key, model=MODEL[sel[0]], seq_len=sel[1])


def _successes(results: Results, sel: tuple[str, int]) -> str:
    vals = results.values("final_test_loss", model=MODEL[sel[0]], seq_len=sel[1])
    return f"{sum(v < SUCCESS_MSE for v in vals)}/{len(vals)}"


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """At the longest ``T``: the tanh RNN's gradient by lag at init is exponential (log10-slope
    <= -0.1 per step, R^2 >= 0.95), the LSTM's gradient at the longest lag >= 1e-2 of the last
    input's; the tanh RNN latches at T = 5 (median test MSE <= 0.1) but not at the longest T
    (>= 0.5); the LSTM latches at the longest T (<= 0.1). Medians over seeds."""
    long = max(t["config"]["seq_len"] for t in results.trials)
    rnn, lstm, rnn5 = ("tanh RNN", long), ("LSTM", long), ("tanh RNN", SHORT)
    slope, r2 = _median(results, "lag_slope_init", rnn), _median(results, "lag_r2_init", rnn)
    end = _median(results, "lag_ratio_init", rnn)
    held = _median(results, "lag_ratio_init", lstm)
    short, far, lmse = (_median(results, "final_test_loss", x) for x in (rnn5, rnn, lstm))
    return [
        Criterion(f"tanh RNN, T = {long}: the gradient w.r.t. early inputs decays exponentially",
                  f"log10-slope ≤ {DECAY_SLOPE}/step, R² ≥ {DECAY_R2} (at init)",
                  f"slope {fmt(slope, '.3f')}, R² {fmt(r2, '.3f')}; ‖∂L/∂x₁‖/‖∂L/∂x_T‖ "
                  f"{fmt(end, '.2g')} (per seed: "
                  f"{_per_seed(results, 'lag_ratio_init', rnn, '.2g')})",
                  None not in (slope, r2) and slope <= DECAY_SLOPE and r2 >= DECAY_R2),
        Criterion(f"LSTM, T = {long}: the gradient reaches the first input",
                  f"‖∂L/∂x₁‖/‖∂L/∂x_T‖ ≥ {HELD:g} (at init)",
                  f"{fmt(held, '.2g')} (per seed: "
                  f"{_per_seed(results, 'lag_ratio_init', lstm, '.2g')})",
                  held is not None and held >= HELD),
        Criterion(f"the tanh RNN latches at T = {SHORT}", f"median test MSE ≤ {SUCCESS_MSE}",
                  f"{fmt(short, '.2g')} (successes {_successes(results, rnn5)})",
                  short is not None and short <= SUCCESS_MSE),
        Criterion(f"…but its success falls with the length: not at T = {long}",
                  f"median test MSE ≥ {FAILED_MSE} (predicting 0 scores 1)",
                  f"{fmt(far, '.2g')} (per seed: "
                  f"{_per_seed(results, 'final_test_loss', rnn, '.2g')}; "
                  f"successes {_successes(results, rnn)})",
                  far is not None and far >= FAILED_MSE),
        Criterion(f"the LSTM latches at T = {long}", f"median test MSE ≤ {SUCCESS_MSE}",
                  f"{fmt(lmse, '.2g')} (per seed: "
                  f"{_per_seed(results, 'final_test_loss', lstm, '.2g')})",
                  lmse is not None and lmse <= SUCCESS_MSE),
    ]


def plot(directory: str | Path, out: str | Path, quick: bool = False) -> Path:
    """The docs figure: the gradient ratio by lag at init at the longest ``T`` (median over
    seeds, tanh RNN and LSTM) and the final test MSE against ``T`` (median and each seed)."""
    from ..store import Store

    run = EXPERIMENT.name + (" (quick)" if quick else "")
    fig, (left, right) = subplots(1, 2, figsize=(9, 3.2))
    with Store(directory) as store:
        results = Results(store, run)
        lengths = sorted({t["config"]["seq_len"] for t in results.trials})
        for color, model in (("C3", "tanh RNN"), ("C2", "LSTM")):
            curves = [[v for _, _, v in store.metrics(t["key"]).get("lag_grad_ratio_init", [])]
                      for t in results.select(model=MODEL[model], seq_len=lengths[-1])]
            curves = [c for c in curves if len(c) == lengths[-1]]
            if curves:
                left.semilogy(np.median(np.array(curves), axis=0), color=color,
                              label=f"{model}, T = {lengths[-1]}")
            meds = [results.median("final_test_loss", model=MODEL[model], seq_len=n)
                    for n in lengths]
            right.plot(lengths, meds, "o-", color=color, label=model)
            for n in lengths:
                vals = results.values("final_test_loss", model=MODEL[model], seq_len=n)
                right.scatter([n] * len(vals), vals, color=color, s=10, alpha=0.5)
    left.set(xlabel="lag k", ylabel="‖∂L/∂x_{T-k}‖ / ‖∂L/∂x_T‖",
             title="at initialisation")
    right.axhline(1.0, color="gray", ls="--", lw=1, label="predict 0")
    right.set(xlabel="sequence length T", ylabel="final test MSE", xticks=lengths,
              title="latching, 3 seeds each")
    grid_and_legend((left, right))
    return save(fig, out, dpi=90)


EXPERIMENT = Experiment(
    "bengio1994-long-term",
    "latching: tanh RNN gradients decay exponentially with the lag, it fails at T = 50; LSTM holds",
    SPEC, verdict)
