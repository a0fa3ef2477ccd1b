"""Optimizers built from composable gradient transformations.

Transformations (one algorithm per module, maths and paper in each docstring):
``trace`` (momentum, Nesterov), ``add_decayed_weights`` (L2 and decoupled decay),
``scale_by_adagrad``, ``scale_by_rms`` (RMSprop), ``scale_by_adadelta``, ``scale_by_adam``
(AMSGrad), composed with ``chain`` and applied by ``Optimizer``.

Drop-in replacements for torch.optim with the same signatures, defaults and numbers, plus
``clip=`` and ``skip_nonfinite=``: ``SGD``, ``Adagrad``, ``RMSprop``, ``Adadelta``, ``Adam``,
``AdamW``.
"""

from .adadelta import Adadelta, scale_by_adadelta
from .adagrad import Adagrad, scale_by_adagrad
from .adam import Adam, AdamW, scale_by_adam
from .base import Chain, Transform, chain
from .momentum import trace
from .optimizer import Optimizer
from .rmsprop import RMSprop, scale_by_rms
from .sgd import SGD
from .weight_decay import add_decayed_weights

__all__ = [
    "Transform", "Chain", "chain", "Optimizer",
    "trace", "add_decayed_weights", "scale_by_adagrad", "scale_by_rms", "scale_by_adadelta",
    "scale_by_adam",
    "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW",
]
