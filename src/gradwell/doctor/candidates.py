"""The remedies the doctor can apply by itself, and which findings call for which.

A :class:`Candidate` is one change to the baseline: a re-initialisation of every weight matrix
(``nn.Linear``, ``nn.Conv*``, recurrent ``weight_ih``/``weight_hh``, attention ``in_proj``), another
optimizer, another learning rate, another Adam epsilon, a clipper, a linear warm-up, a z-loss on
the logits, or a different model (a structural variant of the models :mod:`.structure` can
rebuild -- QK-layernorm for :class:`gradwell.nn.TinyTransformer` among them -- or a variant the
user passes). :data:`REMEDIES` is the table from finding kinds to remedy families.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .. import clip as gclip
from ..nn import init as ginit
from ..watch.layers import LayerIndex

__all__ = ["Candidate", "REMEDIES", "reinit", "dominant_activation", "make_clipper", "warmup",
           "ZLoss", "Z_LOSS", "SMALL_EPS"]

#: finding kind -> remedy families tried for it, most specific first. Kinds not listed here
#: (new ones included) call for nothing the doctor can apply mechanically.
REMEDIES: dict[str, tuple[str, ...]] = {
    "vanishing": ("init", "structure", "lr", "optimizer"),
    "saturation": ("init", "structure", "lr"),
    "dead_units": ("init", "lr", "optimizer"),
    "exploding": ("clip", "lr", "warmup"),
    "nonfinite": ("clip", "lr", "warmup"),
    "divergence": ("lr", "clip", "warmup"),
    "attention_logits": ("qk_norm", "lr", "warmup"),
    "output_logits": ("z_loss", "lr", "warmup"),
    "adam_epsilon": ("eps",),
}

#: the z-loss coefficient: ``Z_LOSS * mean(log^2 Z)`` is added to the loss (PaLM, Chowdhery et
#: al. 2022; Wortsman et al. 2023), as the ``output_logits`` finding recommends
Z_LOSS = 1e-4
#: Adam's epsilon for the ``adam_epsilon`` finding (Wortsman et al. 2023, "AdamW epsilon")
SMALL_EPS = 1e-15

#: activation family -> initialisation schemes worth trying (gradwell.nn.init names)
INIT_SCHEMES = {"relu": ("he", "orthogonal"), "leaky_relu": ("he", "orthogonal"),
                "sigmoid": ("xavier_normal", "orthogonal"), "tanh": ("xavier_normal", "orthogonal"),
                "linear": ("xavier_normal", "orthogonal")}
INIT_NAMES = {"he": "He (kaiming normal)", "xavier_normal": "Glorot normal",
              "orthogonal": "orthogonal"}

_ACT_TYPES = ((nn.ReLU, "relu"), (nn.ReLU6, "relu"), (nn.GELU, "relu"), (nn.ELU, "relu"),
              (nn.SiLU, "relu"), (nn.LeakyReLU, "leaky_relu"), (nn.PReLU, "leaky_relu"),
              (nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh"))


@dataclass(frozen=True)
class Candidate:
    """One change to the baseline (``None`` fields keep the baseline's choice).

    Attributes:
        name: what it is, e.g. ``"re-init: He (kaiming normal)"``.
        reason: the finding kinds (or ``"user variant"``) it answers.
        init: a :mod:`gradwell.nn.init` scheme applied to every weight matrix after building.
        optimizer: a name of :data:`gradwell.doctor.OPTIMIZERS`.
        lr: learning rate (group 0; other groups keep their ratios).
        clip: ``"global_norm"`` (with ``clip_value``) or ``"zclip"``.
        warmup: steps of linear learning-rate warm-up (0 = none).
        model: builds the model instead of ``make_model`` (structural variants).
        eps: Adam's epsilon, set in every parameter group of the optimizer (Adam family).
        z_loss: coefficient ``c`` of a z-loss ``c * mean(logsumexp(logits, -1)^2)`` added to
            the training loss, on the output of the module named ``logits`` (0 = none).
        logits: the qualified module name whose output is the logits (as ``gradwell.watch``
            names it: the ``output_logits`` finding's layer).

    ``eps``, ``z_loss`` and ``logits`` enter :meth:`config` only when set, so the store keys of
    the other candidates stay what they were (a stopped run resumes).
    """

    name: str
    reason: str = ""
    init: str | None = None
    optimizer: str | None = None
    lr: float | None = None
    clip: str | None = None
    clip_value: float | None = None
    warmup: int = 0
    model: Callable[[], nn.Module] | None = field(default=None, compare=False)
    eps: float | None = None
    z_loss: float = 0.0
    logits: str | None = None

    def config(self) -> dict[str, Any]:
        """The JSON-able description (store key and report)."""
        d = {k: v for k, v in asdict(self).items() if k != "model"
             and (k not in _OPTIONAL or v != _OPTIONAL[k])}
        d["model"] = None if self.model is None else self.name
        return d


#: fields that :meth:`Candidate.config` leaves out at these (default) values
_OPTIONAL: dict[str, Any] = {"eps": None, "z_loss": 0.0, "logits": None}


def dominant_activation(model: nn.Module) -> str:
    """The activation family most modules of ``model`` use (``"linear"`` when none)."""
    counts: dict[str, int] = {}
    for m in model.modules():
        for cls, fam in _ACT_TYPES:
            if isinstance(m, cls):
                counts[fam] = counts.get(fam, 0) + 1
                break
    return max(counts, key=counts.get) if counts else "linear"


def _init_matrix(w: torch.Tensor, scheme: str, gain: float) -> None:
    with torch.no_grad():
        if scheme == "he":
            w.normal_(0.0, gain / math.sqrt(w[0].numel()))
        elif scheme == "xavier_normal":
            nn.init.xavier_normal_(w)
        else:
            nn.init.orthogonal_(w, gain=gain)


def reinit(model: nn.Module, scheme: str, activation: str) -> int:
    """Re-initialise every weight matrix of ``model`` with ``scheme`` (``he``, ``xavier_normal``,
    ``orthogonal``) for ``activation``'s gain; zero their biases. Linear and Conv1d/2d go
    through :func:`gradwell.nn.init_weights`; recurrent and attention input matrices are set
    the same way per matrix. Returns how many matrices changed."""
    ginit.check_choice("scheme", scheme, tuple(INIT_NAMES))
    ginit.init_weights(model, scheme, activation)
    done = sum(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) for m in model.modules())
    gain = ginit.gain(activation)
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            _init_matrix(m.weight, scheme, gain)
            done += 1
        if isinstance(m, (nn.RNNBase, nn.MultiheadAttention)):
            for pname, p in m.named_parameters(recurse=False):
                if p.dim() >= 2 and ("weight" in pname):
                    _init_matrix(p, scheme, 1.0 if isinstance(m, nn.RNNBase) else gain)
                    done += 1
                elif "bias" in pname:
                    nn.init.zeros_(p)
    return done


def make_clipper(cand: Candidate) -> gclip.Clipper | None:
    """The candidate's clipper: ``GlobalNorm(clip_value)`` or ``ZClip()`` (defaults of Kumar et
    al. 2025), or None."""
    if cand.clip == "global_norm":
        return gclip.GlobalNorm(float(cand.clip_value))
    if cand.clip == "zclip":
        return gclip.ZClip()
    return None


def warmup(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Linear warm-up: the learning rate times ``min(1, (t + 1) / steps)`` at step ``t``."""
    if steps <= 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / steps))


class ZLoss:
    """The z-loss of PaLM (Chowdhery et al. 2022), as Wortsman et al. 2023 use it against
    output-logit divergence: ``coef * mean(log^2 Z)``, ``log Z = logsumexp(logits, -1)`` at
    every position of the output of ``model``'s module ``name`` (the logits module: its last
    dimension is the classes or the vocabulary, as ``gradwell.watch`` measures ``log_z_rms``).

    A forward hook keeps that output while gradients are on; :meth:`take` returns the penalty
    of the forward passes since the last call (their mean, if the module ran more than once).
    """

    def __init__(self, model: nn.Module, name: str, coef: float) -> None:
        module = LayerIndex(model, logits=False).by_name.get(name)
        if module is None:
            raise ValueError(f"z-loss: the model has no module named {name!r} (the logits "
                             "module the output_logits finding names)")
        self.name, self.coef = name, float(coef)
        self._seen: list[torch.Tensor] = []
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        t = output[0] if isinstance(output, (tuple, list)) and output else output
        if torch.is_grad_enabled() and isinstance(t, torch.Tensor) and t.is_floating_point():
            self._seen.append(t)

    def take(self) -> torch.Tensor:
        """The penalty of the forward passes since the last call (then forgotten)."""
        seen, self._seen = self._seen, []
        if not seen:
            raise RuntimeError(f"z-loss: module {self.name!r} produced no floating-point "
                               "output in this forward pass")
        terms = [torch.logsumexp(t.float(), dim=-1).square().mean() for t in seen]
        return self.coef * torch.stack(terms).mean()

    def close(self) -> None:
        """Remove the hook."""
        self._handle.remove()
        self._seen = []
