"""A deep residual MLP whose branches can start at zero: Fixup and SkipInit, against BN.

``h_{l+1} = h_l + f_l(h_l)`` with two-layer branches ``f(h) = W2 act(W1 h)``. Without
normalisation and with He init (``Var[w] = 2/n``) a ReLU branch adds twice the second moment
``h`` already has (``E[f(h)^2] = 2 E[h^2]``, the cross term is 0), so ``E[h_L^2] = 3^L E[h_0^2]``:
the signal and the gradients grow exponentially with depth and the net cannot be trained at
ordinary learning rates. Remedies:

* ``norm="batch"``: batch norm after each branch layer (He et al. 2016): ``BN(W2 act(BN(W1 h)))``.
* ``scheme="fixup"`` (Zhang, Dauphin & Ma 2019, "Fixup initialization", section 3): the last
  layer of every branch and the classifier start at 0, the other branch layers are He-initialised
  and scaled by ``L^{-1/(2m-2)}`` (``L^{-1/2}`` for the ``m = 2`` layers here); every branch gets a
  scalar multiplier (init 1) and scalar biases (init 0) before each linear layer and activation:
  ``f(h) = s * W2 act(W1 (h + a1) + a2) + a3`` (+ ``a4``, the bias before the next block).
* ``scheme="skipinit"`` (De & Smith 2020, "Batch normalization biases residual blocks towards
  the identity function in deep networks"): ``h + alpha f(h)`` with a scalar ``alpha`` that
  starts at 0.

At initialisation Fixup and SkipInit nets compute the identity in every block, so the signal
keeps its scale at any depth.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._checks import check_int
from .init import check_choice, gain, make_activation
from .mlp import make_norm

__all__ = ["ResidualMLP", "ResidualBlock", "BRANCH_SCHEMES"]

BRANCH_SCHEMES = ("he", "fixup", "skipinit")


class ResidualBlock(nn.Module):
    """``h + f(h)``, ``f(h) = norm(W2 act(norm(W1 h)))``; see the module docstring for the
    ``fixup`` and ``skipinit`` forms."""

    def __init__(self, width: int, activation: str, norm: str, scheme: str) -> None:
        super().__init__()
        check_choice("scheme", scheme, BRANCH_SCHEMES)
        self.scheme = scheme
        fixup = scheme == "fixup"
        self.fc1 = nn.Linear(width, width, bias=not fixup)
        self.norm1 = make_norm(norm, width)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(width, width, bias=not fixup)
        self.norm2 = make_norm(norm, width)
        if fixup:
            self.biases = nn.Parameter(torch.zeros(4))
            self.scale = nn.Parameter(torch.ones(()))
        if scheme == "skipinit":
            self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, h: Tensor) -> Tensor:
        if self.scheme == "fixup":
            a = self.biases
            branch = self.scale * self.fc2(self.act(self.fc1(h + a[0]) + a[1]) + a[2]) + a[3]
            return h + branch
        branch = self.norm2(self.fc2(self.act(self.norm1(self.fc1(h)))))
        return h + (self.alpha * branch if self.scheme == "skipinit" else branch)


class ResidualMLP(nn.Module):
    """``Linear(n_in, width) -> act``, ``depth`` residual blocks, ``Linear(width, n_out)``.

    Args:
        n_in, n_out: input features and outputs.
        depth: residual blocks ``L`` (``2 L + 2`` linear layers), >= 1.
        width: units, >= 1.
        activation: as for :class:`gradwell.nn.MLP` (its He gain is used).
        norm: ``none``, ``batch`` or ``layer``, after each branch layer.
        scheme: ``he`` (every layer He-initialised, biases 0), ``fixup`` or ``skipinit``.
    """

    def __init__(self, n_in: int, n_out: int, depth: int = 16, width: int = 64,
                 activation: str = "relu", norm: str = "none", scheme: str = "he") -> None:
        super().__init__()
        check_choice("scheme", scheme, BRANCH_SCHEMES)
        for name, v in (("n_in", n_in), ("n_out", n_out), ("depth", depth), ("width", width)):
            check_int(name, v)
        self.stem = nn.Linear(n_in, width)
        self.act = make_activation(activation)
        self.blocks = nn.ModuleList(ResidualBlock(width, activation, norm, scheme)
                                    for _ in range(depth))
        self.head = nn.Linear(width, n_out)
        self._init(scheme, gain(activation), depth)

    def _init(self, scheme: str, g: float, depth: int) -> None:
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, g / math.sqrt(m.in_features))   # He et al. 2015
                    if m.bias is not None:
                        m.bias.zero_()
            if scheme == "fixup":
                for b in self.blocks:
                    b.fc1.weight.mul_(depth ** -0.5)      # L^{-1/(2m-2)}, m = 2
                    b.fc2.weight.zero_()
                self.head.weight.zero_()

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.stem(x.flatten(1)))
        for block in self.blocks:
            h = block(h)
        return self.head(h)
