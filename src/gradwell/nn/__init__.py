"""Building blocks for gradient experiments.

* :class:`MLP`: depth, width, activation, normalisation, plain/residual/dense connections, init.
* :class:`CNN` and :func:`ResNet`: small convolutional nets for small images.
* :class:`ResidualMLP`: a deep residual MLP with He, Fixup or SkipInit branches, BN optional.
* :class:`TinyTransformer`: a small causal transformer LM, post-LN or pre-LN, QK-layernorm.
* :class:`RecurrentNet`: tanh RNN, GRU and LSTM sequence models.
* :func:`init_weights`, :func:`make_activation`, :func:`gain`: the initialisation schemes.
"""

from .conv import CNN, ConvBlock, ResNet
from .fixup import BRANCH_SCHEMES, ResidualBlock, ResidualMLP
from .init import ACTIVATIONS, INITS, gain, init_weights, make_activation
from .mlp import CONNECTIONS, MLP, NORMS, Block, make_norm
from .recurrent import CELLS, RecurrentNet
from .transformer import NORM_POSITIONS, CausalSelfAttention, TinyTransformer, TransformerBlock

__all__ = ["MLP", "Block", "CNN", "ConvBlock", "ResNet", "ResidualMLP", "ResidualBlock",
           "BRANCH_SCHEMES", "RecurrentNet", "init_weights",
           "make_activation", "make_norm", "gain", "ACTIVATIONS", "INITS", "NORMS", "CONNECTIONS",
           "CELLS", "TinyTransformer", "TransformerBlock", "CausalSelfAttention", "NORM_POSITIONS"]
