"""From diagnosis to a measured fix: the learning-rate range test and the doctor.

>>> result = gradwell.lr_find(model, loader, loss_fn, optimizer)   # Smith 2017
>>> result.suggested_lr, result.rule; result.plot("lr.png")

``docs/doctor.md`` has the details.
"""

from __future__ import annotations

from .lrfind import RULES, LRFindResult, lr_find
from .optimizers import OPTIMIZERS

__all__ = ["lr_find", "LRFindResult", "RULES", "OPTIMIZERS"]
