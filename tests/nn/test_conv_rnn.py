"""Small CNN/ResNet and the recurrent models against their definitions."""

import math

import pytest
import torch

from gradwell.nn import CNN, ConvBlock, RecurrentNet, ResNet


def test_residual_conv_block_is_x_plus_f_x_and_stride_two_halves_resolution():
    torch.manual_seed(0)
    block = ConvBlock(4, 4, 1, "relu", "none", residual=True)
    x = torch.randn(2, 4, 8, 8)
    f = torch.relu(block.conv(x))
    assert torch.allclose(block(x), x + f, atol=1e-6)
    down = ConvBlock(4, 8, 2, "relu", "batch", residual=True)
    assert not down.residual
    assert down(x).shape == (2, 8, 4, 4)


def test_cnn_reads_flat_or_image_input_and_resnet_is_residual():
    torch.manual_seed(0)
    net = CNN((1, 8, 8), 10, channels=4, stages=2, blocks=2)
    x = torch.randn(3, 64)
    assert torch.equal(net(x), net(x.view(3, 1, 8, 8)))
    res = ResNet((1, 8, 8), 10, channels=4)
    blocks = [m for m in res.modules() if isinstance(m, ConvBlock)]
    assert [b.residual for b in blocks] == [True, True, False, True]
    assert res(x).shape == (3, 10)


def test_tanh_rnn_matches_the_elman_recurrence():
    torch.manual_seed(0)
    net = RecurrentNet("rnn", 3, 2, hidden=5)
    x = torch.randn(4, 6, 3)
    r = net.rnn
    h = torch.zeros(4, 5)
    for t in range(6):
        h = torch.tanh(x[:, t] @ r.weight_ih_l0.T + r.bias_ih_l0 + h @ r.weight_hh_l0.T
                       + r.bias_hh_l0)
    assert torch.allclose(net(x), net.head(h), atol=1e-6)


@pytest.mark.parametrize("cell, blocks", [("rnn", 1), ("gru", 3), ("lstm", 4)])
def test_recurrent_gain_sets_every_singular_value(cell, blocks):
    net = RecurrentNet(cell, 2, 1, hidden=16, recurrent_gain=0.7)
    w = net.rnn.weight_hh_l0.detach().double()
    assert w.shape == (16 * blocks, 16)
    for block in w.split(16):
        s = torch.linalg.svdvals(block)
        assert torch.allclose(s, torch.full_like(s, 0.7), atol=1e-5)


def test_rnn_gradient_decays_exponentially_with_the_time_lag_below_unit_gain():
    """Pascanu et al. 2013: with sigma_max(W_hh) = 0.5 < 1 the gradient reaching step T - k is
    bounded by 0.5^k times the one at step T (tanh' <= 1)."""
    torch.manual_seed(0)
    net = RecurrentNet("rnn", 2, 1, hidden=32, recurrent_gain=0.5)
    x = torch.randn(8, 30, 2, requires_grad=True)
    net(x).sum().backward()
    g = x.grad.norm(dim=(0, 2))
    assert g[0] / g[-1] < 0.5 ** 25 * 10
    assert math.isfinite(g[0].item())
    for cell in ("gru", "lstm"):
        assert RecurrentNet(cell, 2, 1, hidden=8)(x.detach()).shape == (8, 1)
