"""The remedies the doctor can apply by itself, and which findings call for which.

A :class:`Candidate` is one change to the baseline: a re-initialisation of every weight matrix
(``nn.Linear``, ``nn.Conv*``, recurrent ``weight_ih``/``weight_hh``, attention ``in_proj``), another
optimizer, another learning rate, a clipper, a linear warm-up, or a different model (a structural
variant: only for :class:`gradwell.nn.MLP` models, rebuilt by :mod:`.structure`, or a variant the
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

__all__ = ["Candidate", "REMEDIES", "reinit", "dominant_activation", "make_clipper", "warmup"]

#: finding kind -> remedy families tried for it, most specific first. Kinds not listed here
#: (new ones included) call for nothing the doctor can apply mechanically.
REMEDIES: dict[str, tuple[str, ...]] = {
    "vanishing": ("init", "structure", "lr", "optimizer"),
    "saturation": ("init", "structure", "lr"),
    "dead_units": ("init", "lr", "optimizer"),
    "exploding": ("clip", "lr", "warmup"),
    "nonfinite": ("clip", "lr", "warmup"),
    "divergence": ("lr", "clip", "warmup"),
}

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

    def config(self) -> dict[str, Any]:
        """The JSON-able description (store key and report)."""
        d = {k: v for k, v in asdict(self).items() if k != "model"}
        d["model"] = None if self.model is None else self.name
        return d


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
