"""Sequence models: a tanh RNN (Elman 1990), a GRU (Cho et al. 2014; Chung et al. 2014) and an
LSTM (Hochreiter & Schmidhuber 1997), reading ``(batch, time, features)`` and predicting from the
last hidden state.

For a tanh RNN, ``h_t = tanh(W_ih x_t + W_hh h_{t-1} + b)``, the gradient reaching step ``t - k``
is multiplied by ``k`` Jacobians ``diag(1 - h^2) W_hh``: it shrinks exponentially when the largest
singular value of ``W_hh`` is below 1 and may explode when it is above (Pascanu et al. 2013).
``recurrent_gain`` sets that singular value exactly (an orthogonal ``W_hh`` times the gain).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_int, check_number
from .init import check_choice

__all__ = ["RecurrentNet", "CELLS"]

CELLS = ("rnn", "gru", "lstm")


class RecurrentNet(nn.Module):
    """``cell`` over the sequence, then a linear layer on the last hidden state.

    Args:
        cell: ``rnn`` (tanh), ``gru`` or ``lstm``.
        n_in: features per time step; n_out: outputs.
        hidden: hidden units; layers: stacked recurrent layers.
        recurrent_gain: if given, every hidden-to-hidden matrix (each gate block of it, for GRU
            and LSTM) becomes an orthogonal matrix times this gain (Saxe et al. 2014), so its
            singular values all equal the gain. None keeps torch's initialisation.
    """

    def __init__(self, cell: str, n_in: int, n_out: int, hidden: int = 64, layers: int = 1,
                 recurrent_gain: float | None = None) -> None:
        super().__init__()
        check_choice("cell", cell, CELLS)
        check_int("hidden", hidden)
        check_int("layers", layers)
        check_number("recurrent_gain", recurrent_gain, 0, low_open=True,
                     optional="keeps torch's initialisation")
        kind = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
        extra = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = kind(n_in, hidden, num_layers=layers, batch_first=True, **extra)
        self.head = nn.Linear(hidden, n_out)
        self.recurrent_gain = recurrent_gain
        if recurrent_gain is not None:
            self._orthogonal_recurrent(hidden, float(recurrent_gain))

    def _orthogonal_recurrent(self, hidden: int, g: float) -> None:
        with torch.no_grad():
            for name, w in self.rnn.named_parameters():
                if name.startswith("weight_hh"):
                    for block in w.split(hidden, dim=0):
                        nn.init.orthogonal_(block, gain=g)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])
