"""A small CNN and ResNet for small images (8x8 digits, 28x28 MNIST).

Stages of ``blocks`` conv blocks (``conv3x3 -> norm -> activation``); each stage after the first
halves the resolution with a stride-2 convolution and doubles the channels. With
``connection="residual"`` every block whose shape is unchanged adds its input (He et al. 2016):
``h + f(h)``. Global average pooling and a linear layer give the logits.
"""

from __future__ import annotations

from torch import Tensor, nn

from .._checks import check_int
from .init import check_choice, init_weights, make_activation
from .mlp import make_norm

__all__ = ["CNN", "ResNet", "ConvBlock"]


class ConvBlock(nn.Module):
    """``act(norm(conv3x3(h)))`` (+ ``h`` when residual and the shape is kept)."""

    def __init__(self, c_in: int, c_out: int, stride: int, activation: str, norm: str,
                 residual: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.norm = make_norm(norm, c_out, spatial=True)
        self.act = make_activation(activation)
        self.residual = residual and c_in == c_out and stride == 1

    def forward(self, h: Tensor) -> Tensor:
        out = self.act(self.norm(self.conv(h)))
        return h + out if self.residual else out


class CNN(nn.Module):
    """A small convolutional classifier over flat or image-shaped input.

    Args:
        input_shape: ``(channels, height, width)``; flat input is reshaped to it.
        n_out: classes.
        channels: channels of the first stage (doubled at each later stage).
        stages: number of stages (resolution halves from the second on), >= 1.
        blocks: conv blocks per stage, >= 1.
        activation, norm, init: as for :class:`gradwell.nn.MLP`.
        connection: ``plain`` or ``residual``.
    """

    def __init__(self, input_shape: tuple[int, int, int], n_out: int, channels: int = 16,
                 stages: int = 2, blocks: int = 2, activation: str = "relu", norm: str = "batch",
                 connection: str = "plain", init: str = "default") -> None:
        super().__init__()
        check_choice("connection", connection, ("plain", "residual"))
        for name, v in (("channels", channels), ("stages", stages), ("blocks", blocks)):
            check_int(name, v)
        self.input_shape = tuple(input_shape)
        layers: list[nn.Module] = [nn.Conv2d(input_shape[0], channels, 3, padding=1)]
        c = channels
        for s in range(stages):
            for b in range(blocks):
                c_out = c * 2 if (s > 0 and b == 0) else c
                stride = 2 if (s > 0 and b == 0) else 1
                layers.append(ConvBlock(c, c_out, stride, activation, norm,
                                        connection == "residual"))
                c = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, n_out)
        init_weights(self, init, activation)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x.reshape(x.shape[0], *self.input_shape))
        return self.head(h.mean(dim=(2, 3)))


def ResNet(input_shape: tuple[int, int, int], n_out: int, **kwargs) -> CNN:  # noqa: N802
    """A :class:`CNN` with residual connections and batch normalisation (He et al. 2016)."""
    kwargs.setdefault("norm", "batch")
    return CNN(input_shape, n_out, connection="residual", **kwargs)
