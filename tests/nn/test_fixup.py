"""``ResidualMLP``: each form of the residual block against torch's functional ops, the
identity at initialisation under Fixup and SkipInit, and the ``3^L`` growth of the second
moment under He init without normalisation (the formula in the module docstring)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gradwell.nn import ResidualBlock, ResidualMLP


def _randomise(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)


@pytest.mark.parametrize("scheme", ["he", "fixup", "skipinit"])
def test_block_matches_the_formula_in_torch_functional(scheme):
    torch.manual_seed(0)
    block = ResidualBlock(6, "relu", "none", scheme).double()
    _randomise(block)                            # so that zero-initialised pieces matter
    h = torch.randn(5, 6, dtype=torch.float64)
    w1, w2 = block.fc1.weight, block.fc2.weight
    if scheme == "fixup":
        a, s = block.biases, block.scale
        ref = h + s * F.linear(F.relu(F.linear(h + a[0], w1) + a[1]) + a[2], w2) + a[3]
    else:
        branch = F.linear(F.relu(F.linear(h, w1, block.fc1.bias)), w2, block.fc2.bias)
        ref = h + (block.alpha * branch if scheme == "skipinit" else branch)
    torch.testing.assert_close(block(h), ref)


def test_batch_norm_block_matches_torch_batch_norm():
    torch.manual_seed(1)
    block = ResidualBlock(6, "relu", "batch", "he").double()
    h = torch.randn(32, 6, dtype=torch.float64)
    s = F.batch_norm(F.linear(h, block.fc1.weight, block.fc1.bias), None, None, training=True)
    ref = h + F.batch_norm(F.linear(F.relu(s), block.fc2.weight, block.fc2.bias), None, None,
                           training=True)
    torch.testing.assert_close(block(h), ref)


@pytest.mark.parametrize("scheme", ["fixup", "skipinit"])
def test_fixup_and_skipinit_blocks_start_as_the_identity(scheme):
    torch.manual_seed(2)
    model = ResidualMLP(10, 3, depth=8, width=16, scheme=scheme)
    h = torch.randn(4, 16)
    for block in model.blocks:
        torch.testing.assert_close(block(h), h)
    if scheme == "fixup":                          # the classifier starts at 0 too
        assert torch.count_nonzero(model(torch.randn(4, 10))) == 0


def test_fixup_scales_the_first_branch_layer_by_depth_to_the_minus_half():
    torch.manual_seed(3)
    depth, width = 16, 256
    model = ResidualMLP(8, 2, depth=depth, width=width, scheme="fixup")
    std = torch.cat([b.fc1.weight.flatten() for b in model.blocks]).std().item()
    assert std == pytest.approx(math.sqrt(2 / width) / math.sqrt(depth), rel=0.02)
    assert all(torch.count_nonzero(b.fc2.weight) == 0 for b in model.blocks)


def test_he_without_normalisation_grows_the_second_moment_by_three_per_block():
    torch.manual_seed(4)
    depth, width = 4, 1024
    model = ResidualMLP(width, 2, depth=depth, width=width, scheme="he").double()
    x = torch.randn(512, width, dtype=torch.float64)
    h0 = F.relu(model.stem(x))
    h = h0
    for block in model.blocks:
        h = block(h)
    ratio = h.pow(2).mean() / h0.pow(2).mean()
    assert ratio.item() == pytest.approx(3.0 ** depth, rel=0.15)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="scheme"):
        ResidualMLP(4, 2, scheme="zero")
    with pytest.raises(ValueError, match="depth"):
        ResidualMLP(4, 2, depth=0)
