"""Activations and weight initialisation schemes for gradwell's experiment models.

Initialisations (``W`` of shape ``(fan_out, fan_in)``; for a convolution of kernel size ``k``
``fan_in = C_in/groups * k`` and ``fan_out = C_out * k``, as in torch.nn.init; biases are zeroed
by every named scheme):

* ``default``: whatever torch does (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for ``nn.Linear``,
  i.e. std ``1/sqrt(3 fan_in)``).
* ``xavier_normal`` / ``glorot_normal``: ``N(0, 2/(fan_in+fan_out))``; ``xavier_uniform`` /
  ``glorot_uniform``: ``U(-a, a)``, ``a = sqrt(6/(fan_in+fan_out))`` (Glorot & Bengio 2010).
* ``kaiming`` / ``he``: ``N(0, gain^2/fan_in)`` with ``gain = sqrt(2)`` for ReLU,
  ``sqrt(2/(1+a^2))`` for leaky ReLU/PReLU (He et al. 2015), torch's gain for the others.
* ``lecun``: ``N(0, 1/fan_in)`` (LeCun et al. 1998, "Efficient BackProp").
* ``orthogonal``: a random orthogonal matrix times ``gain`` (Saxe, McClelland & Ganguli 2014).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_choice

__all__ = ["ACTIVATIONS", "INITS", "make_activation", "gain", "init_weights", "fans"]

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "gelu", "linear")
INITS = ("default", "xavier_normal", "xavier_uniform", "glorot_normal", "glorot_uniform",
         "kaiming", "he", "lecun", "orthogonal")

#: negative slopes of the leaky activations (torch's defaults; PReLU starts at 0.25).
_SLOPES = {"leaky_relu": 0.01, "prelu": 0.25}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    check_choice("activation", name, ACTIVATIONS)
    return {
        "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU,
        "leaky_relu": lambda: nn.LeakyReLU(_SLOPES["leaky_relu"]),
        "prelu": lambda: nn.PReLU(init=_SLOPES["prelu"]), "elu": nn.ELU, "gelu": nn.GELU,
        "linear": nn.Identity,
    }[name]()


def gain(activation: str) -> float:
    """The variance-preserving gain of ``activation`` (torch.nn.init.calculate_gain's values).

    ELU and GELU have no closed form in torch; they take ReLU's ``sqrt(2)``, the usual choice.
    """
    check_choice("activation", activation, ACTIVATIONS)
    if activation in _SLOPES:
        return math.sqrt(2.0 / (1.0 + _SLOPES[activation] ** 2))
    if activation in ("relu", "elu", "gelu"):
        return math.sqrt(2.0)
    if activation == "linear":
        return 1.0
    return nn.init.calculate_gain(activation)


def fans(w: torch.Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a Linear or Conv weight; both count the kernel's receptive field
    (torch.nn.init's convention, Glorot & Bengio 2010 for convolutions)."""
    receptive = w[0][0].numel()
    return w.shape[1] * receptive, w.shape[0] * receptive


def _init_tensor(w: torch.Tensor, scheme: str, g: float) -> None:
    fan_in, fan_out = fans(w)
    with torch.no_grad():
        if scheme in ("xavier_normal", "glorot_normal"):
            w.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)))
        elif scheme in ("xavier_uniform", "glorot_uniform"):
            a = math.sqrt(6.0 / (fan_in + fan_out))
            w.uniform_(-a, a)
        elif scheme in ("kaiming", "he"):
            w.normal_(0.0, g / math.sqrt(fan_in))
        elif scheme == "lecun":
            w.normal_(0.0, 1.0 / math.sqrt(fan_in))
        elif scheme == "orthogonal":
            nn.init.orthogonal_(w, gain=g)


def init_weights(module: nn.Module, scheme: str = "default", activation: str = "relu") -> None:
    """Initialise every Linear/Conv1d/2d/3d weight in ``module`` with ``scheme``; zero biases.

    ``activation`` selects the gain of ``kaiming``/``he`` and ``orthogonal``. Normalisation layers,
    PReLU slopes and recurrent cells keep torch's initialisation (see
    :class:`gradwell.nn.RecurrentNet` for those). ``default`` changes nothing.
    """
    check_choice("init", scheme, INITS)
    if scheme == "default":
        return
    g = gain(activation)
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            _init_tensor(m.weight, scheme, g)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
