"""Conv weights: the schemes use torch.nn.init's fans (both count the kernel's receptive field)."""

import math

import pytest
import torch
from torch import nn

from gradwell.nn import init_weights


def _torch_fans(w):
    """torch.nn.init's own fans (the function its xavier_* and kaiming_* call)."""
    return nn.init._calculate_fan_in_and_fan_out(w)


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


def test_the_doctors_init_check_quotes_glorots_std_with_torchs_fans():
    """The doctor's init table quotes He and Glorot references for each weight: for a conv both
    fans count the kernel, as torch.nn.init does."""
    from gradwell.doctor.initcheck import _scales
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3)
    conv(torch.randn(2, 8, 6, 6)).sum().backward()
    (row,) = _scales(conv)
    fan_in, fan_out = _torch_fans(conv.weight)
    assert row.glorot_std == pytest.approx(math.sqrt(2.0 / (fan_in + fan_out)))
    assert row.he_std == pytest.approx(math.sqrt(2.0 / fan_in))
