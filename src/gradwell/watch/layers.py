"""Which modules of a model the monitor watches, and what it knows about each of them.

* A *layer* is a module that owns parameters directly (``recurse=False``) that require gradients:
  ``Linear``, ``Conv2d``, ``BatchNorm1d``, ``GRU`` ... named by its qualified name. Tied parameters
  count once, for the first module that owns them.
* An *activation* is a module whose type is a known non-linearity (``nn.Sigmoid``, ``nn.Tanh``,
  ``nn.ReLU`` ...) or that declares ``gradwell_activation = "tanh"`` (or ``"sigmoid"``,
  ``"relu"``, ``"other"``) as an attribute, so custom blocks can take part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["LayerInfo", "LayerIndex", "activation_kind"]

#: Saturating non-linearities (Glorot & Bengio 2010; Karpathy's tanh |a| > 0.97).
_SATURATING: dict[type, str] = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
#: ReLU-family units that output exactly zero for negative inputs, so they can die.
_RECTIFIED: tuple[type, ...] = (nn.ReLU, nn.ReLU6)
_OTHER: tuple[type, ...] = (nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                            nn.Mish, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
                            nn.LogSigmoid, nn.Softsign, nn.Tanhshrink, nn.RReLU)
_KINDS = ("sigmoid", "tanh", "relu", "other")
_NORMS = ("BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm", "LocalResponseNorm")
_RECURRENT = ("RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell")


def activation_kind(module: nn.Module) -> str | None:
    """``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"other"`` for an activation module, else None."""
    declared = getattr(module, "gradwell_activation", None)
    if declared is not None:
        if declared not in _KINDS:
            raise ValueError(f"{type(module).__name__}.gradwell_activation must be one of "
                             f"{_KINDS}, got {declared!r}")
        return declared
    for cls, kind in _SATURATING.items():
        if isinstance(module, cls):
            return kind
    if isinstance(module, _RECTIFIED) or (isinstance(module, nn.Threshold)
                                          and module.value == 0):
        return "relu"
    if isinstance(module, _OTHER):
        return "other"
    return None


@dataclass
class LayerInfo:
    """One watched module: its name, type and role."""

    name: str
    type: str
    params: list[str] = field(default_factory=list)   # qualified parameter names it owns
    numel: int = 0
    weight_ndim: int = 0      # largest ndim among its parameters (2+ = a weight matrix/kernel)
    activation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "params": self.params, "numel": self.numel,
                "weight_ndim": self.weight_ndim, "activation": self.activation}


class LayerIndex:
    """The watched layers, activations and parameters of a model, in registration order."""

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError("model must be a torch.nn.Module, got "
                            f"{type(model).__module__}.{type(model).__qualname__}")
        self.model = _unwrap(model)
        self.layers: list[LayerInfo] = []          # modules with parameters
        self.activations: list[LayerInfo] = []     # activation modules
        self.modules: dict[str, nn.Module] = {}
        self.params: list[Tensor] = []
        self.param_names: list[str] = []
        owner: list[int] = []
        seen: set[int] = set()
        for name, mod in self.model.named_modules():
            name = name or "(model)"
            own = [(n, p) for n, p in mod.named_parameters(recurse=False)
                   if p.requires_grad and id(p) not in seen]
            kind = activation_kind(mod)
            if own:
                info = LayerInfo(name, type(mod).__name__, activation=kind)
                for n, p in own:
                    seen.add(id(p))
                    info.params.append(f"{name}.{n}" if name != "(model)" else n)
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
        pos = {n: i for i, n in enumerate(self.tracked)}
        self._host = {"owner": self.owner,
                      "saturating_pos": torch.tensor([pos[n] for n in self.saturating],
                                                     dtype=torch.long)}
        self._cache: dict[Any, Tensor] = {}

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

    def columns(self, activations: bool) -> dict[str, list[str]]:
        """The statistics recorded per step, each with the names of its columns."""
        layer_names = [x.name for x in self.layers]
        cols = {"loss": ["loss"], "total_grad_norm": ["total"], "grad_norm": layer_names,
                "weight_norm": layer_names, "update_ratio": layer_names,
                "param_grad_norm": list(self.param_names)}
        if activations:
            cols.update({"out_grad_rms": layer_names, "out_mean": list(self.tracked),
                         "out_std": list(self.tracked), "saturated": list(self.saturating),
                         "dead": list(self.rectified)})
        return cols

    def meta(self) -> dict[str, Any]:
        """A JSON-able description of the model (saved with the history)."""
        model_types = sorted({type(m).__name__ for m in self.model.modules()})
        return {"layers": [x.to_dict() for x in self.layers],
                "activations": [x.to_dict() for x in self.activations],
                "norm_layers": any(t.startswith(_NORMS) for t in model_types),
                "recurrent": any(t in _RECURRENT for t in model_types)}


def _unwrap(model: nn.Module) -> nn.Module:
    """``DistributedDataParallel`` / ``DataParallel`` -> the wrapped module (names without
    the ``module.`` prefix, so every rank and a single-process run see the same names)."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model
