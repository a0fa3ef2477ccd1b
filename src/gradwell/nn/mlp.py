"""A configurable deep MLP: the workhorse of gradwell's vanishing-gradient experiments.

Each hidden block is ``Linear -> norm -> activation`` (normalisation before the non-linearity,
as in Ioffe & Szegedy 2015). Three ways to connect the blocks:

* ``plain``: ``h_{l+1} = f_l(h_l)``.
* ``residual`` (He et al. 2016): ``h_{l+1} = h_l + f_l(h_l)`` wherever the widths match (every
  block but the first, unless the input already has ``width`` features).
* ``dense`` (Huang et al. 2017): ``h_{l+1} = f_l([x, h_1, ..., h_l])``: every block sees the
  input and all earlier blocks' outputs, concatenated; so does the output layer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_int
from .init import ACTIVATIONS, check_choice, init_weights, make_activation

__all__ = ["MLP", "Block", "NORMS", "CONNECTIONS", "make_norm"]

NORMS = ("none", "batch", "layer")
CONNECTIONS = ("plain", "residual", "dense")


def make_norm(kind: str, features: int, spatial: bool = False) -> nn.Module:
    """``none`` -> Identity; ``batch`` -> BatchNorm1d/2d (Ioffe & Szegedy 2015);
    ``layer`` -> LayerNorm (Ba et al. 2016), as GroupNorm(1, C) for feature maps."""
    check_choice("norm", kind, NORMS)
    if kind == "batch":
        return nn.BatchNorm2d(features) if spatial else nn.BatchNorm1d(features)
    if kind == "layer":
        return nn.GroupNorm(1, features) if spatial else nn.LayerNorm(features)
    return nn.Identity()


class Block(nn.Module):
    """``act(norm(linear(h)))``, plus ``h`` itself when ``residual``."""

    def __init__(self, n_in: int, n_out: int, activation: str, norm: str, residual: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.norm = make_norm(norm, n_out)
        self.act = make_activation(activation)
        self.residual = residual and n_in == n_out

    def forward(self, h: Tensor) -> Tensor:
        out = self.act(self.norm(self.linear(h)))
        return h + out if self.residual else out


class MLP(nn.Module):
    """``depth`` hidden blocks of ``width`` units, then a linear output layer.

    Args:
        n_in, n_out: input features and outputs (classes, or 1 for regression).
        depth: number of hidden blocks (so ``depth + 1`` Linear layers), >= 1.
        width: units per hidden block (the growth rate for ``dense``), >= 1.
        activation: one of ``sigmoid, tanh, relu, leaky_relu, prelu, elu, gelu, linear``.
        norm: ``none``, ``batch`` or ``layer``.
        connection: ``plain``, ``residual`` or ``dense``.
        init: a scheme of :func:`gradwell.nn.init_weights` (``default`` keeps torch's).
    """

    def __init__(self, n_in: int, n_out: int, depth: int = 20, width: int = 64,
                 activation: str = "relu", norm: str = "none", connection: str = "plain",
                 init: str = "default") -> None:
        super().__init__()
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("connection", connection, CONNECTIONS)
        for name, v in (("n_in", n_in), ("n_out", n_out), ("depth", depth), ("width", width)):
            check_int(name, v)
        self.connection = connection
        dense = connection == "dense"
        sizes = [n_in + i * width if dense else (n_in if i == 0 else width) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(s, width, activation, norm, residual=connection == "residual") for s in sizes)
        self.head = nn.Linear(n_in + depth * width if dense else width, n_out)
        init_weights(self, init, activation)

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(1)
        if self.connection == "dense":
            feats = [h]
            for block in self.blocks:
                feats.append(block(torch.cat(feats, dim=1)))
            return self.head(torch.cat(feats, dim=1))
        for block in self.blocks:
            h = block(h)
        return self.head(h)
