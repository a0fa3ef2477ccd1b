"""Where was the NaN born? ``gradwell.locate(model)`` names the op and module.

>>> with gradwell.locate(model) as loc:     # this module is callable: locate.locate(model)
...     loss = loss_fn(model(x), y); loss.backward()
>>> loc.origin      # None, or Origin(phase, module, op, kind, dtype, inputs, ...)

Cheap while armed; op by op (a replay of the step) only when the step ends non-finite. See
``docs/locate.md``.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from torch import nn

from .locator import Locator, locate
from .origin import PHASES, Origin, remedy_for

__all__ = ["locate", "Locator", "Origin", "PHASES", "remedy_for"]


class _CallableModule(types.ModuleType):
    """Lets ``gradwell.locate(model)`` call :func:`locate` while ``gradwell.locate.Origin`` works."""

    def __call__(self, model: nn.Module, **kwargs: Any) -> Locator:
        return locate(model, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
