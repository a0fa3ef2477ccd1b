"""``pascanu2013-clipping``: vanishing and exploding gradients in a tanh RNN, and clipping.

Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural networks"
(ICML 2013). For ``h_t = tanh(W_hh h_{t-1} + W_ih x_t + b)`` the gradient reaching step ``t - k``
is multiplied by ``k`` Jacobians ``W_hh^T diag(1 - h^2)``, each of norm at most ``sigma_max(W_hh)``
(``|tanh'| <= 1``): when the largest singular value is below 1 the back-propagated gradient decays
at least as fast as ``sigma_max^k`` -- exponentially in the time lag (their section 2.1); above 1
it may explode. Exploding gradients show up as sudden spikes of the gradient norm ("cliffs"),
which wreck plain SGD; rescaling the gradient when its norm exceeds a threshold (section 3.2)
makes training succeed where it otherwise fails.

Two measurements:

* trial kind ``rnn_gradient_lag``: ``||dL/dh_{T-k}|| / ||dL/dh_T||`` for every lag ``k`` in a tanh
  RNN whose ``W_hh`` is orthogonal times ``recurrent_gain`` (so every singular value equals the
  gain), on a batch of adding-problem sequences; a least-squares fit of ``log10`` ratio vs lag.
* training runs on the adding problem (SGD + momentum, a learning rate at which plain SGD hits
  the cliffs), with and without ``GlobalNorm(1.0)`` clipping; the pre-clipping gradient norm is
  recorded every other step.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...nn import RecurrentNet
from ..data import adding_problem
from ..spec import Trial
from ..train import TrialResult
from ..plots import save, subplots
from ..summary import fmt
from ..verdict import Criterion, Results
from .experiment import Experiment

__all__ = ["lag_gradient_norms", "fit_decay", "lag_trial", "spike_ratio", "verdict", "plot",
           "EXPERIMENT"]

#: Spikes are counted from this step on. All steps count: the initial transient (the output
#: bias fitting the target's mean) reaches only ~10-25x the median, far below the threshold 100.
SPIKE_FROM_STEP = 1
#: A run "succeeds" when its final test MSE is below this (the constant prediction 1 scores 1/6).
SUCCESS_MSE = 0.1
LAG_BATCH = 64


def lag_gradient_norms(model: RecurrentNet, x: Tensor, y: Tensor) -> Tensor:
    """``g[k]`` = mean over the batch of ``||dL/dh_{T-k}||`` for ``k = 0 .. T-1`` (``L`` the
    summed squared error of the prediction from ``h_T``), by unrolling the model's single tanh
    layer by hand so that every hidden state's gradient can be read."""
    rnn = model.rnn
    if rnn.num_layers != 1 or rnn.mode != "RNN_TANH":
        raise ValueError("lag_gradient_norms needs a one-layer tanh RNN")
    w_ih, w_hh = rnn.weight_ih_l0, rnn.weight_hh_l0
    bias = rnn.bias_ih_l0 + rnn.bias_hh_l0
    h = torch.zeros(x.shape[0], w_hh.shape[0])
    states = []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ w_ih.T + h @ w_hh.T + bias)
        h.retain_grad()
        states.append(h)
    ((model.head(h) - y) ** 2).sum().backward()
    return torch.stack([s.grad.norm(dim=1).mean() for s in reversed(states)]).detach()


def fit_decay(ratios: np.ndarray) -> tuple[float, float]:
    """Least-squares line through ``(k, log10 ratios[k])``: ``(slope per step, R^2)``."""
    k = np.arange(len(ratios), dtype=float)
    logs = np.log10(np.asarray(ratios, dtype=float))
    slope, intercept = np.polyfit(k, logs, 1)
    resid = logs - (slope * k + intercept)
    total = ((logs - logs.mean()) ** 2).sum()
    return float(slope), float(1.0 - (resid ** 2).sum() / total) if total > 0 else 1.0


def lag_trial(trial: Trial) -> TrialResult:
    """Trial kind ``rnn_gradient_lag``: the gradient ratio at every time lag, at initialisation
    (``seq_len`` steps, ``hidden`` units, ``recurrent_gain`` = every singular value of W_hh)."""
    cfg = trial.config
    torch.manual_seed(cfg["seed"])
    model = RecurrentNet("rnn", 2, 1, cfg["hidden"], 1, cfg.get("recurrent_gain"))
    x, y = adding_problem(LAG_BATCH, cfg["seq_len"], np.random.default_rng(cfg["seed"]))
    norms = lag_gradient_norms(model, x, y)
    ratios = (norms / norms[0]).numpy()
    slope, r2 = fit_decay(ratios)
    gain = cfg.get("recurrent_gain")
    summary = {"grad_ratio": float(ratios[-1]), "lag_slope": slope, "lag_r2": r2,
               "bound_slope": math.log10(gain) if gain else None, "max_lag": len(ratios) - 1}
    metrics = [(k, None, "lag_grad_ratio", float(r)) for k, r in enumerate(ratios)]
    return TrialResult(trial.key, summary=summary, metrics=metrics)


SPEC = r'''
name = "pascanu2013-clipping"
description = """Pascanu et al. 2013: in a tanh RNN the back-propagated gradient decays \
exponentially with the time lag when sigma_max(W_hh) < 1; on the adding problem (T = 10) \
plain SGD + momentum hits gradient-norm spikes and fails, clipping the global norm at 1 succeeds."""
metrics = ["test_loss", "grad_ratio"]

[base]
data = "adding"
model = "rnn"
seq_len = 10
n_train = 2000
n_test = 500
hidden = 32
recurrent_gain = 1.0
optimizer = "momentum"
lr = 0.1
batch_size = 64
clip_value = 1.0

[[variants]]
name = "lag, sigma_max 0.5"
kind = "rnn_gradient_lag"
seq_len = 50
recurrent_gain = 0.5

[[variants]]
name = "lag, sigma_max 0.9"
kind = "rnn_gradient_lag"
seq_len = 50
recurrent_gain = 0.9

[[variants]]
name = "lag, sigma_max 1.5"
kind = "rnn_gradient_lag"
seq_len = 50
recurrent_gain = 1.5

[[variants]]
name = "momentum SGD, unclipped"
clip = "none"

[[variants]]
name = "momentum SGD, clipped at 1"
clip = "global_norm"

[grid]
seed = [0, 1, 2, 3, 4]

[budget]
steps = 800

[record]
grad_every = 2
eval_every = 100

[quick]
grid = { seed = [0, 1, 2] }
budget = { steps = 500 }
'''

UNCLIPPED, CLIPPED = "momentum SGD, unclipped", "momentum SGD, clipped at 1"
#: the training runs' names -> their configuration
TRAIN_CONFIG = {UNCLIPPED: {"kind": "train", "clip": "none"},
                CLIPPED: {"kind": "train", "clip": "global_norm"}}


def lag(gain: float) -> dict[str, Any]:
    """Configuration of the gradient-by-lag measurement at ``recurrent_gain = gain``."""
    return {"kind": "rnn_gradient_lag", "recurrent_gain": gain}


def spike_ratio(norms: list[tuple[int, float | None]], from_step: int = SPIKE_FROM_STEP
                ) -> float | None:
    """``max / median`` of the finite recorded gradient norms at steps ``>= from_step``."""
    vals = [v for s, v in norms if s >= from_step and v is not None and math.isfinite(v)]
    return max(vals) / statistics.median(vals) if len(vals) >= 2 else None


def _spikes(results: Results, name: str) -> list[float]:
    out = []
    for t in results.select(**TRAIN_CONFIG[name]):
        m = results.store.metrics(t["key"]).get("grad_norm_total", [])
        r = spike_ratio([(s, v) for s, _, v in m])
        if r is not None:
            out.append(r)
    return out


def _successes(results: Results, name: str) -> tuple[int, int]:
    trials = results.select(**TRAIN_CONFIG[name])
    ok = [t for t in trials if t["status"] == "done"
          and (t["summary"].get("final_test_loss") or math.inf) < SUCCESS_MSE]
    return len(ok), len(trials)


def _lag_criteria(results: Results) -> list[Criterion]:
    out = []
    for gain in (0.5, 0.9):
        slope, r2, end = (results.median(key, **lag(gain))
                          for key in ("lag_slope", "lag_r2", "grad_ratio"))
        bound = math.log10(gain)
        ok = None not in (slope, r2, end) and slope <= bound and r2 >= 0.98 and end < 1e-3
        out.append(Criterion(
            f"σ_max = {gain}: the gradient decays exponentially with the lag (T = 50)",
            f"log10-slope ≤ log10 σ = {bound:.3f}/step, R² ≥ 0.98, ratio at lag 49 < 1e-3",
            f"slope {fmt(slope, '.3f')}, R² {fmt(r2, '.3f')}, ratio {fmt(end, '.1e')}", ok))
    end = results.median("grad_ratio", **lag(1.5))
    out.append(Criterion("σ_max = 1.5 (contrast): the gradient does not vanish",
                         "ratio at lag 49 ≥ 1", fmt(end, '.2g'), end is not None and end >= 1))
    return out


def verdict(results: Results, quick: bool) -> list[Criterion]:
    """Exponential decay below sigma_max 1 (at least as fast as the ``sigma^k`` bound), none
    above; unclipped spikes (median over seeds of max/median gradient norm) >= 100; clipping
    succeeds (test MSE < 0.1) in a majority of seeds and at least as often as no clipping; the
    clipped runs' median test MSE <= 0.05 (0.08 with ``--quick``)."""
    out = _lag_criteria(results)
    spikes = _spikes(results, UNCLIPPED)
    spike = statistics.median(spikes) if spikes else None
    out.append(Criterion("unclipped SGD hits gradient-norm spikes far above the median",
                         "median over seeds of max/median ‖g‖ ≥ 100",
                         f"{fmt(spike, '.3g')} (per seed: {', '.join(f'{s:.3g}' for s in spikes)})",
                         spike is not None and spike >= 100))
    clip_ok, n_clip = _successes(results, CLIPPED)
    plain_ok, n_plain = _successes(results, UNCLIPPED)
    out.append(Criterion("clipping succeeds at least as often (success: test MSE < 0.1)",
                         "clipped ≥ unclipped successes, clipped in a majority of seeds",
                         f"clipped {clip_ok}/{n_clip}, unclipped {plain_ok}/{n_plain}",
                         n_clip > 0 and clip_ok >= plain_ok and 2 * clip_ok > n_clip))
    mse = results.median("final_test_loss", **TRAIN_CONFIG[CLIPPED])
    cap = 0.08 if quick else 0.05
    out.append(Criterion("clipped runs solve the adding problem (baseline MSE 1/6 ≈ 0.167)",
                         f"median test MSE ≤ {cap}", fmt(mse, '.4f'),
                         mse is not None and mse <= cap))
    return out


def plot(directory: str | Path, out: str | Path, quick: bool = False) -> Path:
    """The docs figure from a run stored in ``directory``: gradient ratio vs lag (median over
    seeds, with the ``sigma^k`` bounds) and the pre-clipping gradient norm of seed 0's runs."""

    from ..store import Store

    run = EXPERIMENT.name + (" (quick)" if quick else "")
    with Store(directory, readonly=True) as store:
        results = Results(store, run)
        fig, (left, right) = subplots(1, 2, figsize=(9, 3.2))
        for gain in (0.5, 0.9, 1.5):
            curves = [[v for _, _, v in store.metrics(t["key"])["lag_grad_ratio"]]
                      for t in results.select(**lag(gain))]
            med = np.median(np.array(curves), axis=0)
            line, = left.semilogy(med, label=f"σ_max = {gain}")
            left.semilogy(gain ** np.arange(len(med)), ls=":", color=line.get_color())
        left.set(xlabel="time lag k", ylabel="‖∂L/∂h_{T-k}‖ / ‖∂L/∂h_T‖", ylim=(1e-17, 1e3),
                 title="tanh RNN at init (dotted: σ^k)")
        left.legend(fontsize=8)
        for label in (UNCLIPPED, CLIPPED):
            t = results.select(seed=0, **TRAIN_CONFIG[label])[0]
            m = [(s, v) for s, _, v in store.metrics(t["key"])["grad_norm_total"]
                 if v is not None and 0 < v < 1e12]
            right.semilogy(*zip(*m), label=label, lw=0.8)
        right.set(xlabel="step", ylabel="gradient norm (before clipping)", ylim=(1e-2, 1e12),
                  title="adding problem T = 10, seed 0")
        right.legend(fontsize=8)
    return save(fig, out, dpi=90)


EXPERIMENT = Experiment(
    "pascanu2013-clipping",
    "tanh RNN: gradient decays exponentially with the lag when σ_max < 1; clipping tames spikes",
    SPEC, verdict)
