"""Gradient clipping: ``Value``, ``GlobalNorm`` and the adaptive clippers.

Every clipper works in three places: ``gradwell.optim.Adam(..., clip=GlobalNorm(1.0))`` (across
all of the optimizer's parameters, folded into the fused kernel when there is one), as an element
of ``gradwell.optim.chain`` (per parameter group), and on any torch optimizer through
``gradwell.clip.clip_(model.parameters(), clipper)``.
"""

from .base import Clipper, clip_, grad_norms, total_norm
from .global_norm import GlobalNorm
from .value import Value

__all__ = ["Clipper", "clip_", "grad_norms", "total_norm", "GlobalNorm", "Value"]
from .agc import AGC, unit_norms
from .autoclip import AutoClip
from .zclip import ZClip

__all__ += ["AGC", "unit_norms", "AutoClip", "ZClip"]
