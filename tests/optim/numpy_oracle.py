"""A second, independent reference: each update rule in NumPy, written from its paper.

Every class follows its paper's notation and defaults to the paper's form; the places where
torch.optim departs from the paper are keyword switches, so that one class reproduces either.
No torch code is used here: gradients come from a hand-written NumPy MLP (:func:`mlp_loss_grad`).

=============================  ==============================================================
``Momentum``                   Sutskever, Martens, Dahl & Hinton 2013, eqs. (1)-(4)
``Adagrad``                    Duchi, Hazan & Singer 2011, diagonal update (Sec. 1.1 / Fig. 1)
``RMSprop``                    Tieleman & Hinton 2012, lecture 6e; centred form Graves 2013
``Adadelta``                   Zeiler 2012, Algorithm 1
``Adam``                       Kingma & Ba 2015, Algorithm 1 (+ AMSGrad, Reddi et al. 2018
                               Algorithm 2; + AdamW, Loshchilov & Hutter 2019 Algorithm 2)
=============================  ==============================================================

Shared torch extensions (not in the papers): ``weight_decay`` (coupled L2: ``g + wd * theta``,
added to the gradient first) and ``maximize`` (``g -> -g``).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

Arrays = list[np.ndarray]


def mlp_loss_grad(params: Arrays, x: np.ndarray, y: np.ndarray) -> tuple[float, Arrays]:
    """Mean squared error of ``W2 tanh(W1 x + b1) + b2`` and its gradient (backprop by hand)."""
    w1, b1, w2, b2 = params
    h = np.tanh(x @ w1.T + b1)
    out = h @ w2.T + b2
    d_out = 2.0 * (out - y) / out.size
    d_h = (d_out @ w2) * (1.0 - h * h)
    grads = [d_h.T @ x, d_h.sum(0), d_out.T @ h, d_out.sum(0)]
    return float(np.mean((out - y) ** 2)), grads


class Rule:
    """Common pre-processing torch applies before every rule: maximize, then coupled L2."""

    def __init__(self, weight_decay: float = 0.0, maximize: bool = False) -> None:
        self.weight_decay, self.maximize, self.t, self.state = weight_decay, maximize, 0, None

    def prepare(self, params: Arrays, grads: Arrays) -> Arrays:
        grads = [-g for g in grads] if self.maximize else list(grads)
        return [g + self.weight_decay * p for g, p in zip(grads, params)]

    def step(self, params: Arrays, grads: Arrays) -> None:
        self.t += 1
        if self.state is None:
            self.state = [self.init(p) for p in params]
        grads = self.prepare(params, grads)
        for i, (p, g, s) in enumerate(zip(params, grads, self.state)):
            params[i] = self.update(p, g, s)

    def init(self, p: np.ndarray) -> dict:
        return {}

    def update(self, p: np.ndarray, g: np.ndarray, s: dict) -> np.ndarray:
        raise NotImplementedError


class Momentum(Rule):
    """Sutskever et al. 2013: ``v <- mu v - eps grad f(theta [+ mu v])``, ``theta <- theta + v``.

    ``nesterov=True`` evaluates the gradient at the look-ahead point ``theta + mu v`` (eq. 3-4);
    the caller supplies that gradient: :meth:`lookahead` gives the point. Torch departures:
    ``dampening`` (``(1 - tau)`` on the new gradient) with ``undampened_first_step`` (torch sets
    the buffer to the first gradient, undamped).
    """

    def __init__(self, lr: float, momentum: float, dampening: float = 0.0, nesterov: bool = False,
                 undampened_first_step: bool = True, **kw) -> None:
        super().__init__(**kw)
        self.lr, self.mu, self.tau, self.nesterov = lr, momentum, dampening, nesterov
        self.undampened_first_step = undampened_first_step

    def init(self, p):
        return {"v": np.zeros_like(p)}

    def lookahead(self, params: Arrays) -> Arrays:
        if self.state is None or not self.nesterov:
            return list(params)
        return [p + self.mu * s["v"] for p, s in zip(params, self.state)]

    def update(self, p, g, s):
        scale = 1.0 if (self.t == 1 and self.undampened_first_step) else 1.0 - self.tau
        s["v"] = self.mu * s["v"] - self.lr * scale * g
        return p + s["v"]


class Adagrad(Rule):
    """Duchi et al. 2011: ``theta <- theta - eta g / (delta + sqrt(sum_s g_s^2))``.

    Torch departures: ``lr_decay`` (``eta_t = eta / (1 + (t - 1) lr_decay)``), and the sum may
    start at ``initial_accumulator_value`` instead of 0.
    """

    def __init__(self, lr=0.01, eps=1e-10, lr_decay=0.0, initial_accumulator_value=0.0, **kw):
        super().__init__(**kw)
        self.lr, self.delta, self.lr_decay, self.g0 = lr, eps, lr_decay, initial_accumulator_value

    def init(self, p):
        return {"G": np.full_like(p, self.g0)}

    def update(self, p, g, s):
        s["G"] = s["G"] + g * g
        eta = self.lr / (1.0 + (self.t - 1) * self.lr_decay)
        return p - eta * g / (self.delta + np.sqrt(s["G"]))


class RMSprop(Rule):
    """Tieleman & Hinton 2012: ``MeanSquare = a MeanSquare + (1 - a) g^2``, step ``g / sqrt(MS)``.

    The lecture has no epsilon; ``eps_inside_sqrt`` chooses ``sqrt(MS + eps)`` (Graves 2013,
    TensorFlow) over torch's ``sqrt(MS) + eps``. ``centered`` subtracts the squared mean gradient
    (Graves 2013, eqs. 38-41); ``momentum`` is Graves' ``Delta <- m Delta - lr g / rms``.
    """

    def __init__(self, lr=0.01, alpha=0.9, eps=0.0, centered=False, momentum=0.0,
                 eps_inside_sqrt=False, **kw):
        super().__init__(**kw)
        self.lr, self.alpha, self.eps, self.centered = lr, alpha, eps, centered
        self.momentum, self.eps_inside = momentum, eps_inside_sqrt

    def init(self, p):
        return {"ms": np.zeros_like(p), "mg": np.zeros_like(p), "delta": np.zeros_like(p)}

    def update(self, p, g, s):
        a = self.alpha
        s["ms"] = a * s["ms"] + (1 - a) * g * g
        s["mg"] = a * s["mg"] + (1 - a) * g
        var = s["ms"] - s["mg"] ** 2 if self.centered else s["ms"]
        rms = np.sqrt(var + self.eps) if self.eps_inside else np.sqrt(var) + self.eps
        s["delta"] = self.momentum * s["delta"] - self.lr * g / rms
        return p + s["delta"]


class Adadelta(Rule):
    """Zeiler 2012, Algorithm 1 (no learning rate): ``dx = -RMS[dx]_{t-1} / RMS[g]_t * g``.

    ``RMS[y] = sqrt(E[y^2] + eps)``. Torch departure: ``lr`` multiplies the step applied to the
    parameters; with ``accumulate_scaled=False`` (torch) ``E[dx^2]`` still accumulates the
    unscaled ``dx``, with True it accumulates the step actually taken. ``lr=1`` is the paper.
    """

    def __init__(self, rho=0.95, eps=1e-6, lr=1.0, accumulate_scaled=False, **kw):
        super().__init__(**kw)
        self.rho, self.eps, self.lr, self.accumulate_scaled = rho, eps, lr, accumulate_scaled

    def init(self, p):
        return {"Eg2": np.zeros_like(p), "Edx2": np.zeros_like(p)}

    def update(self, p, g, s):
        rho, eps = self.rho, self.eps
        s["Eg2"] = rho * s["Eg2"] + (1 - rho) * g * g
        dx = -np.sqrt(s["Edx2"] + eps) / np.sqrt(s["Eg2"] + eps) * g
        acc = self.lr * dx if self.accumulate_scaled else dx
        s["Edx2"] = rho * s["Edx2"] + (1 - rho) * acc * acc
        return p + self.lr * dx


class Adam(Rule):
    """Kingma & Ba 2015, Algorithm 1, with AMSGrad and decoupled weight decay as options.

    ``efficient_form=True`` is the paper's Sec. 2 reformulation ``alpha_t = alpha sqrt(1-b2^t) /
    (1-b1^t)`` with eps added to ``sqrt(v)`` before bias correction (torch uses Algorithm 1).
    ``amsgrad`` (Reddi et al. 2018): ``amsgrad_max_of="raw"`` keeps ``max(vmax, v_t)`` and bias-
    corrects it with the current ``1 - b2^t`` (torch); ``"corrected"`` keeps the max of the
    bias-corrected ``v_hat``. ``decoupled`` (Loshchilov & Hutter 2019, Algorithm 2, line 12):
    ``theta <- theta - eta_t (alpha m_hat / (sqrt(v_hat) + eps) + lambda theta)`` with the paper's
    ``lambda`` and schedule multiplier ``eta_t`` (``schedule(t)``); torch multiplies its
    ``weight_decay`` by the full learning rate, i.e. paper lambda = lr * torch weight_decay.
    """

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, amsgrad=False,
                 amsgrad_max_of="raw", efficient_form=False, decoupled_lambda=0.0,
                 schedule: Callable[[int], float] = lambda t: 1.0, **kw):
        super().__init__(**kw)
        self.alpha, (self.b1, self.b2), self.eps = lr, betas, eps
        self.amsgrad, self.max_of, self.efficient = amsgrad, amsgrad_max_of, efficient_form
        self.lam, self.schedule = decoupled_lambda, schedule

    def init(self, p):
        return {"m": np.zeros_like(p), "v": np.zeros_like(p), "vmax": np.zeros_like(p)}

    def update(self, p, g, s):
        t, b1, b2 = self.t, self.b1, self.b2
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        v = s["v"]
        if self.amsgrad and self.max_of == "raw":
            v = s["vmax"] = np.maximum(s["vmax"], s["v"])
        if self.efficient:
            alpha_t = self.alpha * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            step = alpha_t * s["m"] / (np.sqrt(v) + self.eps)
        else:
            v_hat = v / (1 - b2 ** t)
            if self.amsgrad and self.max_of == "corrected":
                v_hat = s["vmax"] = np.maximum(s["vmax"], v_hat)
            step = self.alpha * (s["m"] / (1 - b1 ** t)) / (np.sqrt(v_hat) + self.eps)
        eta = self.schedule(t)
        return p - eta * (step + self.lam * p)
