"""Structural remedies, only where the doctor knows how the model is built. A
:class:`gradwell.nn.MLP` or :class:`gradwell.nn.CNN` is read back into its constructor
arguments and rebuilt with batch normalisation (Ioffe & Szegedy 2015), residual connections
(He et al. 2016) or ReLU with He initialisation (He et al. 2015); a tanh
:class:`gradwell.nn.RecurrentNet` is rebuilt with gated cells, a GRU (Cho et al. 2014) and an
LSTM (Hochreiter & Schmidhuber 1997), whose additive state updates keep the gradient through
time from vanishing (Bengio et al. 1994; Chung et al. 2014). Against attention-logit growth a
:class:`gradwell.nn.TinyTransformer` is rebuilt with QK-layernorm (:data:`QK_BUILDERS`:
LayerNorm on each head's queries and keys bounds ``|q.k| / sqrt(d)``; Dehghani et al. 2023,
Wortsman et al. 2023)."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from torch import nn

from ..nn import CNN, MLP, ConvBlock, RecurrentNet, TinyTransformer
from ..nn.init import ACTIVATIONS, make_activation
from .candidates import Candidate

__all__ = ["mlp_args", "cnn_args", "rnn_args", "transformer_args", "structural_candidates",
           "BUILDERS", "QK_BUILDERS"]

_NORMS = {nn.Identity: "none", nn.BatchNorm1d: "batch", nn.LayerNorm: "layer",
          nn.BatchNorm2d: "batch", nn.GroupNorm: "layer"}


def _activation_name(module: nn.Module) -> str | None:
    for name in ACTIVATIONS:
        if type(make_activation(name)) is type(module):
            return name
    return None


def mlp_args(model: nn.Module) -> dict[str, Any] | None:
    """The constructor arguments of a :class:`gradwell.nn.MLP` (None for any other model, or
    an MLP whose blocks were changed after construction)."""
    if type(model) is not MLP or not len(model.blocks):
        return None
    first = model.blocks[0]
    act, norm = _activation_name(first.act), _NORMS.get(type(first.norm))
    if act is None or norm is None:
        return None
    return {"n_in": first.linear.in_features, "n_out": model.head.out_features,
            "depth": len(model.blocks), "width": first.linear.out_features,
            "activation": act, "norm": norm, "connection": model.connection}


def cnn_args(model: nn.Module) -> dict[str, Any] | None:
    """The constructor arguments of a :class:`gradwell.nn.CNN` (a ResNet is one), or None.
    Stages start at the stride-2 blocks; the net is residual when any block adds its input."""
    if type(model) is not CNN:
        return None
    stem, *blocks = list(model.features)
    if not isinstance(stem, nn.Conv2d) or not blocks or \
            not all(isinstance(b, ConvBlock) for b in blocks):
        return None
    stages = 1 + sum(b.conv.stride[0] == 2 for b in blocks)
    act, norm = _activation_name(blocks[0].act), _NORMS.get(type(blocks[0].norm))
    if act is None or norm is None or len(blocks) % stages:
        return None
    return {"input_shape": tuple(model.input_shape), "n_out": model.head.out_features,
            "channels": stem.out_channels, "stages": stages, "blocks": len(blocks) // stages,
            "activation": act, "norm": norm,
            "connection": "residual" if any(b.residual for b in blocks) else "plain"}


def rnn_args(model: nn.Module) -> dict[str, Any] | None:
    """The constructor arguments of a :class:`gradwell.nn.RecurrentNet`, or None."""
    if type(model) is not RecurrentNet:
        return None
    rnn = model.rnn
    cell = {nn.GRU: "gru", nn.LSTM: "lstm"}.get(type(rnn))
    if cell is None and type(rnn) is nn.RNN and rnn.nonlinearity == "tanh":
        cell = "rnn"
    if cell is None:
        return None
    return {"cell": cell, "n_in": rnn.input_size, "n_out": model.head.out_features,
            "hidden": rnn.hidden_size, "layers": rnn.num_layers,
            "recurrent_gain": model.recurrent_gain}


def transformer_args(model: nn.Module) -> dict[str, Any] | None:
    """The constructor arguments of a :class:`gradwell.nn.TinyTransformer`, or None (also when
    its blocks differ from each other: changed after construction)."""
    if type(model) is not TinyTransformer or not len(model.blocks):
        return None
    blocks = [(b.pre, b.attn.heads, b.ff1.out_features, type(b.attn.q_norm), type(b.attn.k_norm))
              for b in model.blocks]
    pre, heads, ff, qn, kn = blocks[0]
    if any(b != blocks[0] for b in blocks) or qn is not kn \
            or qn not in (nn.Identity, nn.LayerNorm):
        return None
    return {"vocab": model.embed.num_embeddings, "seq_len": model.pos.shape[0],
            "d_model": model.embed.embedding_dim, "heads": heads, "layers": len(blocks),
            "ff": ff, "norm": "pre" if pre else "post", "qk_norm": qn is nn.LayerNorm}


_FEEDFORWARD = (
    ("structure: batch norm", {"norm": "batch"}, lambda a: a["norm"] == "none"),
    ("structure: residual connections", {"connection": "residual"},
     lambda a: a["connection"] == "plain"),
    ("structure: ReLU + He init", {"activation": "relu", "init": "he"},
     lambda a: a["activation"] in ("sigmoid", "tanh")),
)
_RECURRENT = (
    ("structure: GRU cells", {"cell": "gru"}, lambda a: a["cell"] == "rnn"),
    ("structure: LSTM cells", {"cell": "lstm"}, lambda a: a["cell"] == "rnn"),
)

#: the models the doctor can rebuild: (reads the arguments back, the class, its variants as
#: (name, argument overrides, applies when))
BUILDERS: tuple[tuple[Callable[[nn.Module], dict | None], type, tuple], ...] = (
    (mlp_args, MLP, _FEEDFORWARD),
    (cnn_args, CNN, _FEEDFORWARD),
    (rnn_args, RecurrentNet, _RECURRENT),
)


_QK = (("structure: QK-layernorm", {"qk_norm": True}, lambda a: not a["qk_norm"]),)
#: the models the doctor can give QK-layernorm (the ``attention_logits`` finding's remedy), as
#: :data:`BUILDERS`
QK_BUILDERS: tuple[tuple[Callable[[nn.Module], dict | None], type, tuple], ...] = (
    (transformer_args, TinyTransformer, _QK),
)


def structural_candidates(model: nn.Module, reason: str, builders: tuple = BUILDERS
                          ) -> list[Candidate]:
    """Rebuilt variants of ``model`` when it is one of ``builders``' classes (else none)."""
    for read, cls, variants in builders:
        args = read(model)
        if args is not None:
            return [Candidate(name, reason, model=partial(cls, **{**args, **over}))
                    for name, over, when in variants if when(args)]
    return []
