"""Callbacks for the frameworks people train with (optional extras, imported lazily).

=====================================  ======================================================
``gradwell.integrations.lightning``     ``GradwellCallback`` for ``lightning.pytorch.Trainer``
                                        (``pip install gradwell[lightning]``)
``gradwell.integrations.transformers``  ``GradwellCallback`` for ``transformers.Trainer``
                                        (``pip install gradwell[transformers]``)
=====================================  ======================================================

Both attach :func:`gradwell.watch` (and, with ``guard=True``, a :class:`gradwell.guard.Guard`)
at the one point of the framework's step where gradients are final: after backward (and the
gradient all-reduce under DDP), after AMP unscaling, *before* the framework clips them. See
``docs/integrations.md``. Importing this package imports neither framework.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = ("lightning", "transformers")
__all__ = list(_MODULES)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'gradwell.integrations' has no attribute {name!r}")
