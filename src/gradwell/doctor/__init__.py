"""From diagnosis to a measured fix: the learning-rate range test and the doctor.

>>> result = gradwell.lr_find(model, loader, loss_fn, optimizer)   # Smith 2017
>>> result.suggested_lr, result.rule; result.plot("lr.png")
>>> report = gradwell.doctor(make_model, loader, loss_fn)         # this module is callable
>>> report.findings; report.candidates[0].verdict; report.print(); report.write_html("d.html")

Names are imported on first use (``gradwell doctor --help`` needs no torch). ``docs/doctor.md``
has the details.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

#: public name -> the module of this package that defines it
_NAMES = {"doctor": "session", "lr_find": "lrfind", "LRFindResult": "lrfind", "RULES": "lrfind",
          "OPTIMIZERS": "optimizers", "REMEDIES": "candidates", "Candidate": "candidates",
          "reinit": "candidates", "CandidateResult": "report", "Report": "report",
          "VERDICTS": "verdict", "MIN_SEEDS": "verdict", "InitCheck": "initcheck"}

__all__ = list(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """Lets ``gradwell.doctor(...)`` call :func:`doctor` while ``gradwell.doctor.lr_find`` works."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .session import doctor
        return doctor(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
