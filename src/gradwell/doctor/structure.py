"""Structural remedies, only where the doctor knows how the model is built: a
:class:`gradwell.nn.MLP` is read back into its constructor arguments and rebuilt with batch
normalisation (Ioffe & Szegedy 2015), residual connections (He et al. 2016) or ReLU with He
initialisation (He et al. 2015)."""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from ..nn import MLP
from ..nn.init import ACTIVATIONS, make_activation
from .candidates import Candidate

__all__ = ["mlp_args", "structural_candidates"]


def _activation_name(module: nn.Module) -> str | None:
    for name in ACTIVATIONS:
        if type(make_activation(name)) is type(module):
            return name
    return None


def mlp_args(model: nn.Module) -> dict[str, Any] | None:
    """The constructor arguments of a :class:`gradwell.nn.MLP` (None for any other model, or
    an MLP whose blocks were changed after construction)."""
    if not isinstance(model, MLP) or not len(model.blocks):
        return None
    first = model.blocks[0]
    act = _activation_name(first.act)
    norm = {nn.Identity: "none", nn.BatchNorm1d: "batch", nn.LayerNorm: "layer"}.get(
        type(first.norm))
    if act is None or norm is None:
        return None
    return {"n_in": first.linear.in_features, "n_out": model.head.out_features,
            "depth": len(model.blocks), "width": first.linear.out_features,
            "activation": act, "norm": norm, "connection": model.connection}


#: (name, overrides of the MLP's arguments, applies when)
_VARIANTS = (
    ("structure: batch norm", {"norm": "batch"}, lambda a: a["norm"] == "none"),
    ("structure: residual connections", {"connection": "residual"},
     lambda a: a["connection"] == "plain"),
    ("structure: ReLU + He init", {"activation": "relu", "init": "he"},
     lambda a: a["activation"] in ("sigmoid", "tanh")),
)


def structural_candidates(model: nn.Module, reason: str) -> list[Candidate]:
    """Rebuilt variants of ``model`` when it is a :class:`gradwell.nn.MLP` (else none)."""
    args = mlp_args(model)
    if args is None:
        return []
    return [Candidate(name, reason, model=partial(MLP, **{**args, **over}))
            for name, over, when in _VARIANTS if when(args)]
