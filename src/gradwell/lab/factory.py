"""Optimizers and clippers from a trial configuration.

gradwell's drop-in optimizers are used when present (they take ``clip=``); otherwise
torch.optim, with the clipper applied by :func:`gradwell.clip.clip_` before each step.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from .. import clip as gclip

__all__ = ["build_optimizer", "build_clip"]

_CLASSES = {"sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "adagrad": "Adagrad",
            "rmsprop": "RMSprop", "adadelta": "Adadelta", "adam": "Adam", "adamw": "AdamW"}


def build_clip(cfg: dict[str, Any]) -> gclip.Clipper | None:
    """``clip = "global_norm"`` -> ``GlobalNorm(clip_value)``; ``"value"`` -> ``Value(clip_value)``."""
    if cfg.get("clip", "none") == "global_norm":
        return gclip.GlobalNorm(float(cfg["clip_value"]))
    if cfg.get("clip", "none") == "value":
        return gclip.Value(float(cfg["clip_value"]))
    return None


def _optim_class(name: str) -> tuple[type, bool]:
    try:
        from .. import optim as goptim
        cls = getattr(goptim, _CLASSES[name], None)
    except ImportError:  # pragma: no cover - while gradwell.optim is incomplete
        cls = None
    if cls is not None:
        return cls, True
    return getattr(torch.optim, _CLASSES[name]), False


def build_optimizer(cfg: dict[str, Any], params: Iterable[torch.Tensor]
                    ) -> tuple[torch.optim.Optimizer, gclip.Clipper | None]:
    """``(optimizer, clipper to apply by hand or None)`` for ``cfg``'s optimizer, lr, momentum,
    weight_decay and clip. ``momentum``/``nesterov`` are SGD with ``cfg["momentum"]``."""
    name = cfg["optimizer"]
    kw: dict[str, Any] = {"lr": float(cfg["lr"]), "weight_decay": float(cfg.get("weight_decay", 0))}
    if name in ("momentum", "nesterov"):
        kw.update(momentum=float(cfg["momentum"]), nesterov=name == "nesterov")
    clipper = build_clip(cfg)
    cls, native = _optim_class(name)
    if native:
        return cls(params, clip=clipper, **kw), None
    return cls(params, **kw), clipper
