"""Conv weights: the schemes use torch.nn.init's fans (both count the kernel's receptive field)."""

import math

import pytest
import torch
from torch import nn

from gradwell.nn import init_weights


def _torch_fans(w):
    fan_in = w.shape[1] * w[0][0].numel()
    fan_out = w.shape[0] * w[0][0].numel()
    return fan_in, fan_out


@pytest.mark.parametrize("conv", [lambda: nn.Conv1d(64, 128, 7), lambda: nn.Conv2d(64, 128, 5),
                                  lambda: nn.Conv2d(64, 128, 3, groups=4)])
def test_xavier_normal_on_a_conv_matches_torch(conv):
    torch.manual_seed(0)
    mine, ref = conv(), conv()
    init_weights(mine, "xavier_normal")
    nn.init.xavier_normal_(ref.weight)
    fan_in, fan_out = _torch_fans(ref.weight)
    expected = math.sqrt(2.0 / (fan_in + fan_out))
    assert mine.weight.std().item() == pytest.approx(expected, rel=0.03)
    assert mine.weight.std().item() == pytest.approx(ref.weight.std().item(), rel=0.03)


def test_xavier_uniform_bound_on_a_conv_is_glorots():
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 96, 3)
    init_weights(conv, "xavier_uniform")
    bound = math.sqrt(6.0 / (32 * 9 + 96 * 9))
    assert conv.weight.abs().max().item() <= bound
    assert conv.weight.abs().max().item() > 0.98 * bound


def test_conv3d_is_initialised_too():
    torch.manual_seed(0)
    conv = nn.Conv3d(16, 32, 3)
    init_weights(conv, "he")
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / (16 * 27)), rel=0.03)
    assert torch.count_nonzero(conv.bias) == 0
