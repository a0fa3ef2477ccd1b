"""Which modules of a model the monitor watches, and what it knows about each of them.

* A *layer* is a module that owns parameters directly (``recurse=False``) that require gradients:
  ``Linear``, ``Conv2d``, ``BatchNorm1d``, ``GRU`` ... named by its qualified name. Tied parameters
  count once, for the first module that owns them.
* An *activation* is a module whose type is a known non-linearity (``nn.Sigmoid``, ``nn.Tanh``,
  ``nn.ReLU`` ..., and Hugging Face ``transformers.activations`` classes such as
  ``GELUActivation``, ``NewGELUActivation``, ``SiLUActivation``, matched by class name so
  transformers is never imported) or that declares ``gradwell_activation = "tanh"`` (or
  ``"sigmoid"``, ``"relu"``, ``"other"``) as an attribute, so custom blocks can take part.
* Wrappers are unwrapped so names are the model's own: ``DistributedDataParallel`` /
  ``DataParallel`` (``module.``) and ``torch.compile`` (``_orig_mod.``, also on compiled
  submodules).
* :data:`ROW` is the one description of a recorded row: the statistics in order, each with
  whose columns it has; :meth:`LayerIndex.columns` and ``row.finalize`` both follow it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import invalid, one_of
from .._modules import ROOT, clean_name, is_compiled, unwrap

from .sites import Site, find_attention, find_logits

__all__ = ["LayerInfo", "LayerIndex", "activation_kind", "is_compiled", "ROW"]

#: Saturating non-linearities (Glorot & Bengio 2010; Karpathy's tanh |a| > 0.97).
_SATURATING: dict[type, str] = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
#: ReLU-family units that output exactly zero for negative inputs, so they can die.
_RECTIFIED: tuple[type, ...] = (nn.ReLU, nn.ReLU6)
_OTHER: tuple[type, ...] = (nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                            nn.Mish, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
                            nn.LogSigmoid, nn.Softsign, nn.Tanhshrink, nn.RReLU)
#: Hugging Face ``transformers.activations`` classes, by class name (GELU variants, SiLU, ...),
#: and the activation modules some model files define for themselves.
_HF_ACTIVATIONS: dict[str, str] = {
    "GELUActivation": "other", "NewGELUActivation": "other", "FastGELUActivation": "other",
    "QuickGELUActivation": "other", "AccurateGELUActivation": "other",
    "ClippedGELUActivation": "other", "GELUTanh": "other", "PytorchGELUTanh": "other",
    "SiLUActivation": "other", "MishActivation": "other", "LaplaceActivation": "other",
    "SqrtSoftplusActivation": "other", "XIELUActivation": "other",
    "ReLUSquaredActivation": "relu",
    "BloomGelu": "other", "GeLU": "other"}          # model files' own: BLOOM's, LXMERT's
_KINDS = ("sigmoid", "tanh", "relu", "other")
_NORMS = ("BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm", "LocalResponseNorm")
_RECURRENT = ("RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell")
_RESIDUAL_BLOCKS = ("TransformerEncoderLayer", "TransformerDecoderLayer", "BasicBlock",
                    "Bottleneck")


def activation_kind(module: nn.Module) -> str | None:
    """``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"other"`` for an activation module, else None."""
    declared = getattr(module, "gradwell_activation", None)
    if declared is not None:
        if declared not in _KINDS:
            raise invalid(f"{type(module).__name__}.gradwell_activation", one_of(_KINDS), declared)
        return declared
    for cls, kind in _SATURATING.items():
        if isinstance(module, cls):
            return kind
    if isinstance(module, _RECTIFIED) or (isinstance(module, nn.Threshold)
                                          and module.value == 0):
        return "relu"
    if isinstance(module, _OTHER):
        return "other"
    if type(module).__module__.startswith("transformers."):
        return _HF_ACTIVATIONS.get(type(module).__name__)
    return None


#: The layout of one recorded row, in order: statistic -> whose columns it has
#: (``"loss"``, ``"total"``: a single column of that name, ``"layers"``, ``"params"``,
#: ``"tracked"`` = layers and activations, ``"saturating"``, ``"rectified"``, ``"logits"``: the
#: logits module, ``"attention"``: the attention sites) -> when it is recorded (``""``:
#: always, ``"activations"``: with ``activations=True``, ``"adam"``: with an Adam-family
#: ``optimizer=``).
ROW: tuple[tuple[str, str, str], ...] = (
    ("loss", "loss", ""), ("total_grad_norm", "total", ""), ("grad_norm", "layers", ""),
    ("weight_norm", "layers", ""), ("update_ratio", "layers", ""),
    ("param_grad_norm", "params", ""), ("out_grad_rms", "layers", "activations"),
    ("out_mean", "tracked", "activations"), ("out_std", "tracked", "activations"),
    ("saturated", "saturating", "activations"), ("dead", "rectified", "activations"),
    ("log_z_rms", "logits", "activations"), ("attention_logit_max", "attention", "activations"),
    ("adam_eps_share", "layers", "adam"), ("update_cosine", "total", "adam"))


@dataclass
class LayerInfo:
    """One watched module: its name, type and role."""

    name: str
    type: str
    params: list[str] = field(default_factory=list)   # qualified parameter names it owns
    numel: int = 0
    weight_ndim: int = 0      # largest ndim among its parameters (2+ = a weight matrix/kernel)
    activation: str | None = None
    #: other modules that hold one of its parameters (tied weights: T5's ``shared`` and each
    #: stack's ``embed_tokens``, GPT-2's ``wte`` and ``lm_head``); their calls are not its calls
    tied: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "params": self.params, "numel": self.numel,
                "weight_ndim": self.weight_ndim, "activation": self.activation,
                "tied": self.tied}


class LayerIndex:
    """The watched layers, activations and parameters of a model, in registration order."""

    def __init__(self, model: nn.Module, logits: str | bool | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError("model must be a torch.nn.Module, got "
                            f"{type(model).__module__}.{type(model).__qualname__}")
        self.compiled = is_compiled(model) or any(is_compiled(m) for m in model.modules())
        self.model = unwrap(model)
        self.layers: list[LayerInfo] = []          # modules with parameters
        self.activations: list[LayerInfo] = []     # activation modules
        self.modules: dict[str, nn.Module] = {}
        self.params: list[Tensor] = []
        self.param_names: list[str] = []
        owner = self._collect()
        if not self.params:
            raise ValueError("model has no parameters that require gradients, so there are no "
                             "gradients to watch; pass a model with trainable parameters")
        self.owner = torch.tensor(owner, dtype=torch.long)
        #: every module whose output is summarised: layers and activations, without repeats
        self.tracked: list[str] = list(dict.fromkeys(
            [x.name for x in self.layers] + [x.name for x in self.activations]))
        self.saturating = [a.name for a in self.activations if a.activation in ("sigmoid", "tanh")]
        self.rectified = [a.name for a in self.activations if a.activation == "relu"]
        self.layer_names = [x.name for x in self.layers]
        self._transformer_parts(logits)
        pos = {n: i for i, n in enumerate(self.tracked)}
        self._host = {"owner": self.owner,
                      "saturating_pos": torch.tensor([pos[n] for n in self.saturating],
                                                     dtype=torch.long)}
        self._cache: dict[Any, Tensor] = {}

    def _collect(self) -> list[int]:
        """Fill the layers (first owners of trainable parameters; a tied one counts once, for
        the first module holding it, which lists the others in ``tied``), the activations and
        the parameters, in registration order; returns each parameter's layer index."""
        owner: list[int] = []
        seen: dict[int, LayerInfo] = {}
        for name, mod in self.model.named_modules():
            if is_compiled(mod):
                continue                  # its _orig_mod is listed next, with the same params
            name = clean_name(name)
            mine = [(n, p) for n, p in mod.named_parameters(recurse=False) if p.requires_grad]
            for first in {id(seen[id(p)]): seen[id(p)] for _, p in mine if id(p) in seen}.values():
                first.tied.append(name)
            own = [(n, p) for n, p in mine if id(p) not in seen]
            kind = activation_kind(mod)
            if own:
                info = LayerInfo(name, type(mod).__name__, activation=kind)
                for n, p in own:
                    seen[id(p)] = info
                    info.params.append(f"{name}.{n}" if name != ROOT else n)
                    info.numel += p.numel()
                    info.weight_ndim = max(info.weight_ndim, p.dim())
                    owner.append(len(self.layers))
                    self.params.append(p)
                self.param_names.extend(info.params)
                self.layers.append(info)
                self.modules[name] = mod
            if kind is not None:
                self.activations.append(LayerInfo(name, type(mod).__name__, activation=kind))
                self.modules[name] = mod
        return owner

    def _transformer_parts(self, logits: str | bool | None) -> None:
        names = {id(m): clean_name(n) for n, m in self.model.named_modules()
                 if not is_compiled(m)}
        #: the module whose output is the logits (0 or 1 name), see sites.find_logits
        self.logits = _logits_module(self.model, names, logits)
        #: the attention modules whose queries and keys are read (sites.find_attention)
        self.attention: list[Site] = find_attention(self.model, names)
        #: every module by its clean qualified name (where the logit hooks go)
        self.by_name = {names[id(m)]: m for m in self.model.modules() if id(m) in names}

    def on_device(self, key: str, device: torch.device) -> Tensor:
        """A constant index tensor (``"owner"``, ``"saturating_pos"``) on ``device``, cached."""
        if (key, device) not in self._cache:
            self._cache[(key, device)] = self._host[key].to(device)
        return self._cache[(key, device)]

    def zeros(self, device: torch.device) -> Tensor:
        """A float64 zero vector of length 3 on ``device`` (cached; never written to)."""
        if ("zeros", device) not in self._cache:
            self._cache[("zeros", device)] = torch.zeros(3, dtype=torch.float64, device=device)
        return self._cache[("zeros", device)]

    def segments(self, layout: tuple[tuple[int, int], ...], device: torch.device) -> Tensor:
        """Module id of every ReLU unit, from ``(module id, units)`` runs; cached per layout."""
        key = ("segments", device, layout)
        if key not in self._cache:
            ids = torch.tensor([i for i, _ in layout], dtype=torch.long)
            sizes = torch.tensor([n for _, n in layout], dtype=torch.long)
            self._cache[key] = torch.repeat_interleave(ids, sizes).to(device)
        return self._cache[key]

    def columns(self, activations: bool, adam: bool = False) -> dict[str, list[str]]:
        """The statistics recorded per step (:data:`ROW`), each with the names of its columns."""
        whose = {"loss": ["loss"], "total": ["total"], "layers": self.layer_names,
                 "params": self.param_names, "tracked": self.tracked,
                 "saturating": self.saturating, "rectified": self.rectified,
                 "logits": self.logits, "attention": [s.name for s in self.attention]}
        on = {"": True, "activations": activations, "adam": adam}
        return {stat: list(whose[group]) for stat, group, when in ROW if on[when]}

    def meta(self) -> dict[str, Any]:
        """A JSON-able description of the model (saved with the history)."""
        mods = list(self.model.modules())
        model_types = sorted({type(m).__name__ for m in mods})
        return {"layers": [x.to_dict() for x in self.layers],
                "activations": [x.to_dict() for x in self.activations],
                "norm_layers": any(t.startswith(_NORMS) for t in model_types),
                "recurrent": any(t in _RECURRENT for t in model_types),
                "residual": any(_residual(m) for m in mods),
                "attention": any("Attention" in t for t in model_types),
                "post_ln": any(_post_ln(m) for m in mods),
                "logits": self.logits[0] if self.logits else None,
                "attention_sites": [s.to_dict() for s in self.attention],
                "compiled": self.compiled}


def _logits_module(model: nn.Module, names: dict[int, str],
                   logits: str | bool | None) -> list[str]:
    if logits is None or logits is True:
        found = find_logits(model, names)
        return [found] if found is not None else []
    if logits is False:
        return []
    if not isinstance(logits, str) or logits not in set(names.values()):
        raise invalid("logits", "the qualified name of a module of the model, None (find it) or "
                      "False (none)", logits)
    return [logits]


#: Hugging Face layers that normalise after each residual sum: BART and the models that keep its
#: post-LN layers (mBART, Pegasus and Blenderbot moved the norms first), and wav2vec 2.0's and
#: HuBERT's encoder layers (their ``...StableLayerNorm`` variants normalise first)
_POST_LN_HF = frozenset(["BartEncoderLayer", "BartDecoderLayer", "MarianEncoderLayer",
                         "MarianDecoderLayer", "PLBartEncoderLayer", "PLBartDecoderLayer",
                         "BlenderbotSmallEncoderLayer", "BlenderbotSmallDecoderLayer",
                         "Wav2Vec2EncoderLayer", "HubertEncoderLayer"])


def _post_ln(module: nn.Module) -> bool:
    """A transformer layer that normalises after the residual sum, the original post-LN of
    Vaswani et al. 2017, which needs warm-up (Xiong et al. 2020): torch's layers with
    ``norm_first=False``; in Hugging Face models BERT's ``...Output`` modules (``dense`` then
    ``LayerNorm(x + residual)``: BERT, RoBERTa, ELECTRA, DeBERTa, ...), ALBERT's layer
    (``full_layer_layer_norm``), DistilBERT's block (``output_layer_norm``), the BART-family
    layers of :data:`_POST_LN_HF` and OPT's with ``do_layer_norm_before=False`` (OPT-350m)."""
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        return not module.norm_first
    if not type(module).__module__.startswith("transformers."):
        return False
    kids, name = dict(module.named_children()), type(module).__name__
    return (name in _POST_LN_HF or getattr(module, "do_layer_norm_before", None) is False
            or name.endswith("Output") and "dense" in kids and "LayerNorm" in kids
            or "full_layer_layer_norm" in kids or "output_layer_norm" in kids)


def _residual(module: nn.Module) -> bool:
    """Whether ``module`` adds its input to its output: it says so (``gradwell_residual`` or a
    ``residual`` flag, as gradwell.nn blocks do), or it is a transformer block (torch's
    ``TransformerEncoderLayer``/``DecoderLayer``, a Hugging Face ``...Block``/``...Layer``) or
    a ResNet block (``BasicBlock``, ``Bottleneck``)."""
    for attr in ("gradwell_residual", "residual"):
        flag = getattr(module, attr, None)
        if isinstance(flag, bool):
            return flag
    name = type(module).__name__
    if name in _RESIDUAL_BLOCKS:
        return True
    return (type(module).__module__.startswith("transformers.")
            and name.endswith(("Block", "DecoderLayer", "EncoderLayer", "Layer"))
            and not name.endswith(("Norm", "Embedding")))
