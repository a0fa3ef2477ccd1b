"""Optimizers and clippers from a trial configuration: gradwell's drop-in optimizers, with the
clipper passed as ``clip=`` (applied inside the optimizer step)."""

from __future__ import annotations

from typing import Any, Iterable

import torch

from .. import clip as gclip
from .. import optim as goptim

__all__ = ["build_optimizer", "build_clip"]

_CLASSES = {"sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "adagrad": "Adagrad",
            "rmsprop": "RMSprop", "adadelta": "Adadelta", "adam": "Adam", "adamw": "AdamW"}


def build_clip(cfg: dict[str, Any]) -> gclip.Clipper | None:
    """``clip = "global_norm"`` -> ``GlobalNorm(clip_value)``; ``"value"`` ->
    ``Value(clip_value)``; ``"none"`` -> None."""
    if cfg.get("clip", "none") == "global_norm":
        return gclip.GlobalNorm(float(cfg["clip_value"]))
    if cfg.get("clip", "none") == "value":
        return gclip.Value(float(cfg["clip_value"]))
    return None


def build_optimizer(cfg: dict[str, Any], params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names, with its lr, momentum, weight_decay and clip.
    ``momentum``/``nesterov`` are SGD with ``cfg["momentum"]``; ``sgd`` has no momentum."""
    name = cfg["optimizer"]
    kw: dict[str, Any] = {"lr": float(cfg["lr"]), "weight_decay": float(cfg.get("weight_decay", 0))}
    if name in ("momentum", "nesterov"):
        kw.update(momentum=float(cfg["momentum"]), nesterov=name == "nesterov")
    return getattr(goptim, _CLASSES[name])(params, clip=build_clip(cfg), **kw)
