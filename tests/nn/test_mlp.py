"""The deep MLP: connections against their definitions, normalisation, and the textbook
vanishing-gradient result (Glorot & Bengio 2010)."""

import pytest
import torch

from gradwell.nn import MLP, Block


def _x(n=16, d=8, seed=0):
    torch.manual_seed(seed)
    return torch.randn(n, d)


def test_plain_mlp_is_the_composition_of_its_layers():
    net = MLP(8, 3, depth=3, width=5, activation="tanh")
    x = _x()
    h = x
    for b in net.blocks:
        h = torch.tanh(h @ b.linear.weight.T + b.linear.bias)
    expected = h @ net.head.weight.T + net.head.bias
    assert torch.allclose(net(x), expected, atol=1e-6)
    assert sum(isinstance(m, torch.nn.Linear) for m in net.modules()) == 4


def test_residual_block_output_is_x_plus_f_x():
    block = Block(6, 6, "sigmoid", "none", residual=True)
    x = _x(d=6)
    f = torch.sigmoid(x @ block.linear.weight.T + block.linear.bias)
    assert torch.allclose(block(x), x + f, atol=1e-6)


def test_residual_mlp_skips_only_where_widths_match():
    net = MLP(8, 3, depth=3, width=5, activation="relu", connection="residual")
    assert [b.residual for b in net.blocks] == [False, True, True]
    x = _x()
    h = torch.relu(net.blocks[0].linear(x))
    for b in net.blocks[1:]:
        h = h + torch.relu(b.linear(h))
    assert torch.allclose(net(x), net.head(h), atol=1e-6)


def test_dense_mlp_feeds_every_block_all_earlier_features():
    net = MLP(8, 3, depth=3, width=5, activation="relu", connection="dense")
    assert [b.linear.in_features for b in net.blocks] == [8, 13, 18]
    assert net.head.in_features == 8 + 3 * 5
    x = _x()
    feats = [x]
    for b in net.blocks:
        feats.append(torch.relu(b.linear(torch.cat(feats, 1))))
    assert torch.allclose(net(x), net.head(torch.cat(feats, 1)), atol=1e-6)


def test_batch_norm_standardises_each_unit_over_the_batch_before_the_activation():
    net = MLP(8, 3, depth=1, width=5, activation="linear", norm="batch").train()
    out = net.blocks[0](_x(n=64) * 7 + 3)          # BN's affine starts at gamma=1, beta=0
    assert torch.allclose(out.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(out.var(0, unbiased=False), torch.ones(5), atol=1e-3)


def test_layer_norm_standardises_each_sample():
    net = MLP(8, 3, depth=1, width=5, activation="linear", norm="layer")
    out = net.blocks[0](_x(n=4) * 7 + 3)
    assert torch.allclose(out.mean(1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(out.var(1, unbiased=False), torch.ones(4), atol=1e-3)


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": 0}, "depth"), ({"width": -1}, "width"), ({"connection": "skip"}, "connection"),
    ({"norm": "group"}, "norm"), ({"activation": "swish"}, "activation")])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLP(4, 2, **kwargs)


def _grad_ratio(**kwargs):
    torch.manual_seed(0)
    net = MLP(64, 10, depth=20, width=64, **kwargs)
    x = torch.rand(128, 64)
    y = torch.randint(0, 10, (128,))
    torch.nn.functional.cross_entropy(net(x), y).backward()
    first, last = net.blocks[0].linear.weight.grad, net.head.weight.grad
    return (first.norm() / last.norm()).item()


def test_deep_sigmoid_gradients_vanish_and_remedies_keep_them():
    """Glorot & Bengio 2010: each sigmoid layer scales the back-propagated gradient by at most
    sigmoid'(0) * ||W|| = 0.25 * ~0.6, so 20 layers shrink it below 1e-10; ReLU + He init,
    batch norm and residual connections keep the first/last ratio within a few orders."""
    assert _grad_ratio(activation="sigmoid") < 0.25 ** 15
    assert 1e-2 < _grad_ratio(activation="relu", init="he") < 1e2
    assert 1e-2 < _grad_ratio(activation="sigmoid", norm="batch") < 1e2
    assert _grad_ratio(activation="sigmoid", connection="residual") > 1e-3
