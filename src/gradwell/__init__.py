"""gradwell: find, explain and fix vanishing and exploding gradients in PyTorch.

Sub-packages (imported on first use, so ``import gradwell`` stays light):

=================  ==========================================================================
``optim``          gradient transformations, ``chain``, ``Optimizer`` and drop-in optimizers
``clip``           ``Value``, ``GlobalNorm``, ``AGC``, ``AutoClip``, ``ZClip`` and ``clip_``
``guard``          skipping non-finite steps, spike detection, rollback
``watch``          the monitor: ``mon = gradwell.watch(model)``
``diagnose``       findings with evidence and remedies
``locate``         where a NaN/Inf is born: ``with gradwell.locate(model) as loc: ...``
``nn``             deep MLP/CNN and recurrent building blocks for experiments
``lab``            offline datasets, experiment specs, runner, store and reports
``doctor``         ``lr_find`` (the LR range test) and the doctor that measures remedies
``integrations``   Lightning and Hugging Face Trainer callbacks (extras, imported lazily)
``cli``            the ``gradwell`` command
=================  ==========================================================================
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("optim", "clip", "guard", "watch", "diagnose", "locate", "nn", "lab", "doctor",
                "integrations", "cli")
#: functions exposed at the top level -> the sub-package they live in
_FUNCTIONS = {"lr_find": "doctor"}
__all__ = ["__version__", *_SUBPACKAGES, *_FUNCTIONS]


def __getattr__(name: str) -> Any:
    if name in _FUNCTIONS:
        value = getattr(importlib.import_module(f"{__name__}.{_FUNCTIONS[name]}"), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'gradwell' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBPACKAGES) | set(_FUNCTIONS))
