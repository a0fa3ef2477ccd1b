"""The module a user hands in, without the wrappers around it, and its names without theirs.

``DistributedDataParallel`` / ``DataParallel`` keep the model as ``.module`` and
``torch.compile`` as ``._orig_mod`` (an ``OptimizedModule``); their qualified names gain
``module.`` and ``_orig_mod.``. The monitor and the locator name modules as the user's own
model does, so every rank, a compiled and a plain run see the same names.
"""

from __future__ import annotations

from torch import nn

__all__ = ["unwrap", "is_compiled", "clean_name", "ROOT"]

#: the name of the model itself (its own parameters form a layer of that name)
ROOT = "(model)"


def is_compiled(module: nn.Module) -> bool:
    """True for the ``OptimizedModule`` that ``torch.compile(module)`` returns."""
    return type(module).__name__ == "OptimizedModule" and hasattr(module, "_orig_mod")


def unwrap(model: nn.Module) -> nn.Module:
    """``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile`` -> the wrapped module."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif is_compiled(model):
            model = model._orig_mod
        else:
            return model


def clean_name(name: str) -> str:
    """A qualified name without the ``_orig_mod`` of compiled submodules (:data:`ROOT` for the
    root)."""
    parts = [p for p in name.split(".") if p != "_orig_mod"]
    return ".".join(parts) or ROOT
