"""gradwell.lr_find against known behaviour: a copy is trained (the user's objects are untouched
bit for bit), the schedule is Smith's geometric one with param groups scaled together, the
divergence point of a quadratic is its stability limit, and on digits the suggestion lies where
a 1-epoch run actually trains best."""

from __future__ import annotations

import copy
import math
import statistics

import pytest
import torch
from torch import nn

import gradwell
from gradwell.lab import data

LOSS = nn.CrossEntropyLoss()


def _digits_batches(seed: int, bs: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    d = data.digits()
    perm = torch.randperm(len(d.y_train), generator=torch.Generator().manual_seed(seed))
    return [(d.x_train[perm[i:i + bs]], d.y_train[perm[i:i + bs]])
            for i in range(0, len(perm), bs)]


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def _same(a: object, b: object) -> bool:
    """Bit-for-bit equality of nested state (tensors compared exactly, NaN included)."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(a.reshape(-1).view(torch.uint8) if a.dtype != torch.bool else a,
                                b.reshape(-1).view(torch.uint8) if b.dtype != torch.bool else b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


@pytest.mark.parametrize("kind", ["torch", "gradwell"])
def test_model_optimizer_and_rng_are_untouched_bit_for_bit(kind: str) -> None:
    model = _mlp(0)
    groups = [{"params": list(model[0].parameters()), "lr": 1e-3},
              {"params": list(model[2].parameters()) + list(model[4].parameters())}]
    opt = (torch.optim.Adam(groups, lr=1e-4) if kind == "torch"
           else gradwell.optim.Adam(groups, lr=1e-4, clip=gradwell.clip.ZClip()))
    batches = _digits_batches(0)
    for x, y in batches[:3]:                        # real optimizer state (moments, step, ZClip)
        opt.zero_grad()
        LOSS(model(x), y).backward()
        opt.step()
    model.eval()
    before = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    result = gradwell.lr_find(model, batches, LOSS, opt, steps=30)
    assert len(result.lrs) >= 10
    assert _same(model.state_dict(), before[0]) and _same(opt.state_dict(), before[1])
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert not model.training                      # the copy trained, not the model
    assert torch.equal(torch.get_rng_state(), rng)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for p in model.parameters()}


def test_schedule_is_geometric_and_param_groups_keep_their_ratio() -> None:
    seen: list[list[float]] = []

    def factory(params):                   # two groups (first layer at 10x), hook to observe
        params = list(params)
        opt = torch.optim.SGD([{"params": params[:2], "lr": 0.1},
                               {"params": params[2:], "lr": 0.01}])
        opt.register_step_post_hook(lambda o, *_: seen.append([g["lr"] for g in o.param_groups]))
        return opt

    result = gradwell.lr_find(_mlp(0), _digits_batches(0), LOSS, factory, start=1e-5, end=1e-1,
                              steps=20, diverge=1e9)
    expected = [1e-5 * (1e-1 / 1e-5) ** (i / 19) for i in range(20)]   # Smith's schedule
    assert result.lrs == pytest.approx(expected, rel=1e-12)
    assert [a for a, _ in seen] == pytest.approx(expected, rel=1e-12)
    assert [b / a for a, b in seen] == pytest.approx([0.1] * 20, rel=1e-12)
    assert result.group_ratios == pytest.approx([1.0, 0.1])


def test_divergence_point_on_least_squares_matches_the_closed_form() -> None:
    """Least squares with one weight, full batch, SGD: w_{t+1} - w* = (1 - lr_t L)(w_t - w*)
    with curvature L = 2 mean(x^2). The loss can only blow up past the stability limit 2 / L,
    and the test must stop where the closed-form losses, smoothed as documented, cross 4x."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, generator=g, dtype=torch.float64)
    y = 2 * x + 0.5 * torch.randn(256, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.zero_()
    result = gradwell.lr_find(model, [(x, y)], nn.MSELoss(), "sgd", start=1e-3, end=100.0,
                              steps=100)
    curv = 2 * x.pow(2).mean().item()
    w_star = ((x * y).mean() / x.pow(2).mean()).item()
    w, m, best, expected = 0.0, 0.0, math.inf, []
    for i, lr in enumerate(result.lrs):
        loss = ((w * x - y) ** 2).mean().item()
        expected.append(loss)
        m = 0.8 * m + 0.2 * loss
        smooth = m / (1 - 0.8 ** (i + 1))
        if smooth > 4 * best:
            break
        best = min(best, smooth)
        w = w_star + (1 - lr * curv) * (w - w_star)
    assert result.losses == pytest.approx(expected, rel=1e-6)  # rounding grows as w explodes
    assert result.divergence_lr == result.lrs[len(expected) - 1] > 2 / curv
    assert result.suggested_lr < 2 / curv


def test_suggestion_lies_where_one_epoch_trains_best_on_digits() -> None:
    """The test's own 1-epoch grid (Adam, 3 seeds): the "good" range holds the learning rates
    whose median test loss is within 1.5x of the best; the suggestion must fall inside it."""
    d = data.digits()

    def one_epoch(lr: float, seed: int) -> float:
        model = _mlp(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for x, y in _digits_batches(seed):
            opt.zero_grad()
            LOSS(model(x), y).backward()
            opt.step()
        with torch.no_grad():
            return LOSS(model(d.x_test), d.y_test).item()

    grid = [10 ** e for e in (-3.5, -3, -2.5, -2, -1.5, -1, -0.5)]
    med = {lr: statistics.median(one_epoch(lr, s) for s in range(3)) for lr in grid}
    best = min(med.values())
    good = [lr for lr in grid if med[lr] <= 1.5 * best]
    assert best < 0.7 and len(good) < len(grid) - 2     # the grid discriminates
    for seed in range(3):
        r = gradwell.lr_find(_mlp(seed), _digits_batches(seed), LOSS, "adam")
        assert r.rule == "steepest" and "steepest" in r.explanation
        assert min(good) <= r.suggested_lr <= max(good), (r.suggested_lr, med)
        assert r.divergence_lr is None or r.divergence_lr > r.suggested_lr


def test_divergence_rule_is_a_tenth_of_the_divergence_lr() -> None:
    r = gradwell.lr_find(_mlp(0), _digits_batches(0), LOSS, "adam", rule="divergence")
    assert r.divergence_lr is not None
    assert r.rule == "divergence" and r.suggested_lr == pytest.approx(r.divergence_lr / 10)


def test_transformer_encoder_with_a_gradwell_optimizer_and_the_plot(tmp_path) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.1, batch_first=True)
    enc = nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                        nn.Flatten(), nn.Linear(16 * 6, 3))
    x = torch.randn(64, 6, 16)
    y = (x[:, 0, 0] > 0).long() + (x[:, 1, 0] > 0).long()
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    before = copy.deepcopy(enc.state_dict())
    opt = gradwell.optim.AdamW(enc.parameters(), lr=1e-3, clip=gradwell.clip.GlobalNorm(1.0))
    r = gradwell.lr_find(enc, batches, LOSS, opt, start=1e-6, end=1.0, steps=40)
    assert _same(enc.state_dict(), before) and opt.state == {}
    assert 1e-6 <= r.suggested_lr <= 1.0 and len(r.smoothed) == len(r.lrs)
    out = r.plot(tmp_path / "lr $x^$ [b].png")       # a path with mathtext/markup characters
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "suggested" in str(r)


@pytest.mark.parametrize("kwargs, match", [
    ({"start": 1.0, "end": 0.1}, r"end must be a number in \(1, inf\) \(above start=1.0\)"),
    ({"steps": 1}, "steps"),
    ({"beta": 1.0}, "beta"),
    ({"diverge": 1.0}, "diverge"),
    ({"rule": "valley"}, "rule"),
    ({"optimizer": "adamax"}, "optimizer must be one of"),
])
def test_bad_arguments_say_what_is_allowed(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gradwell.lr_find(_mlp(0), _digits_batches(0)[:2], LOSS, **kwargs)


def test_bad_loader_and_foreign_optimizer() -> None:
    model = _mlp(0)
    with pytest.raises(TypeError, match="one-pass iterator"):
        gradwell.lr_find(model, iter(_digits_batches(0)), LOSS)
    with pytest.raises(ValueError, match="none of the model's parameters"):
        gradwell.lr_find(model, _digits_batches(0), LOSS,
                         torch.optim.SGD(_mlp(1).parameters(), lr=0.1))
    with pytest.raises(ValueError, match="no batches"):
        gradwell.lr_find(model, [], LOSS)
    with pytest.raises(TypeError, match="pair"):
        gradwell.lr_find(model, [torch.zeros(2, 64)], LOSS)
    assert math.isfinite(gradwell.lr_find(model, _digits_batches(0)[:1], LOSS,
                                          steps=8).suggested_lr)
