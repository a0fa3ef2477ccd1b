"""The classic pathologies, trained on scikit-learn's digits, and the healthy controls."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradwell
from watch_helpers import kinds, mlp, resnet, train

ALARMS = {"vanishing", "exploding", "nonfinite"}


def _one(mon, kind: str):
    found = [f for f in mon.findings() if f.kind == kind]
    assert len(found) == 1, mon.findings()
    return found[0]


def test_deep_sigmoid_mlp_vanishes_toward_the_input() -> None:
    """Glorot & Bengio 2010: 20 sigmoid layers with standard init; sigmoid' <= 1/4."""
    mon = train(mlp(20, 64, nn.Sigmoid), steps=20, lr=0.1)
    f = _one(mon, "vanishing")
    assert f.step == 0 and f.severity == "error"
    assert f.layer in ("0", "2", "4")                        # the layers nearest the input
    rel = f.evidence["relative_grad"]
    assert rel["0"] < rel["20"] < rel["36"] < rel["40"]      # shrinking with depth
    assert set(f.evidence["relative_grad_vs_reference"]) >= {"0", "2", "4", "6", "8", "10"}
    assert f.evidence["backprop_grad_first_over_last_hidden"] < 1e-3
    assert any("ReLU" in r and "He" in r for r in f.remedies)
    assert any("BatchNorm" in r for r in f.remedies) and any("residual" in r for r in f.remedies)
    assert "exploding" not in kinds(mon)


def test_deep_relu_net_with_too_large_init_explodes() -> None:
    """He et al. 2015: std 3x the He scale multiplies the signal by ~3 per layer."""
    mon = train(mlp(10, 64, nn.ReLU, weight_std=3 * 2 ** 0.5), steps=12, lr=1e-4)
    f = _one(mon, "exploding")
    assert f.step == 0 and f.severity == "error"
    assert f.evidence["max_relative_grad"] > 10
    assert f.evidence["backprop_grad_first_over_last_hidden"] > 1e3   # grows toward input
    assert any("clip" in r for r in f.remedies)
    assert any("smaller initialisation" in r for r in f.remedies)
    assert "vanishing" not in kinds(mon)


@pytest.mark.parametrize("every", [1, 3])
def test_nan_in_the_input_is_found_at_its_step_and_first_layer(every: int) -> None:
    def poison(step, xb, model):
        if step == 13:
            xb[3, 7] = float("nan")

    mon = train(mlp(3, 32), steps=20, on_batch=poison, every=every)
    f = mon.findings()[0]
    assert f.kind == "nonfinite" and f.severity == "error"
    if every == 1:
        assert (f.step, f.evidence["last_finite_step"]) == (13, 12)
        assert f.layer == "0" and f.evidence["where"] == "forward"
    else:   # recorded: 0, 3, ..., 12, 15; SGD applied the NaN gradient of step 13, so the
            # weights are NaN at step 15; the weights are measured on every recorded step
        assert (f.step, f.evidence["last_finite_step"]) == (15, 12)
        assert f.layer == "0" and f.evidence["where"] == "weights"
    assert any("skip_nonfinite=True" in r for r in f.remedies)


@pytest.mark.parametrize("update_every,where", [(1, "weights"), (10, "weights")])   # weights: every step
def test_nan_in_a_weight_names_that_layer(update_every: int, where: str) -> None:
    def poison(step, xb, model):
        if step == 6:
            with torch.no_grad():
                model[4].weight[2, 3] = float("inf")

    mon = train(mlp(3, 32), steps=9, on_batch=poison, update_every=update_every)
    f = _one(mon, "nonfinite")
    assert (f.step, f.layer, f.evidence["where"]) == (6, "4", where)


def test_nan_in_a_gradient_names_the_parameter() -> None:
    model = mlp(2, 16)
    model[2].weight.register_hook(lambda g: g * float("nan") if hooked[0] else g)
    hooked = [False]

    def poison(step, xb, m):
        hooked[0] = step == 4

    mon = train(model, steps=5, on_batch=poison)
    f = _one(mon, "nonfinite")
    assert (f.step, f.evidence["where"], f.evidence["parameter"], f.layer) == \
        (4, "gradient", "2.weight", "2")


def test_negative_biases_kill_relu_units() -> None:
    mon = train(mlp(4, 64, nn.ReLU, bias=-4.0), steps=15)
    f = _one(mon, "dead_units")
    assert f.severity == "error" and f.step == 0
    assert min(f.evidence["dead_share"].values()) > 0.9
    assert any("LeakyReLU" in r for r in f.remedies)


def test_tanh_with_large_init_saturates() -> None:
    mon = train(mlp(4, 64, nn.Tanh, weight_std=5.0), steps=15)
    f = _one(mon, "saturation")
    assert f.step == 0 and f.evidence["activation"] == "tanh"
    assert max(f.evidence["saturated_share"].values()) > 0.5
    assert any("Xavier" in r for r in f.remedies)


@pytest.mark.parametrize("name,model,opt,lr", [
    ("relu+He+BN+residual", lambda: resnet(12, 64), "sgd", 0.05),
    ("shallow", lambda: mlp(1, 64), "sgd", 0.1),
    ("tanh+BN", lambda: mlp(6, 64, nn.Tanh, norm=True), "adam", 1e-3),
])
def test_healthy_networks_raise_no_alarm(name, model, opt, lr) -> None:
    mon = train(model(), steps=60, lr=lr, optimizer=opt)
    assert mon.findings() == [], [str(f) for f in mon.findings()]
    losses = mon.history.series("loss")[2][:, 0]
    assert losses[-10:].mean() < 0.7 * losses[:5].mean()       # and they do learn


def test_gradwell_optimizer_run_gets_the_same_verdict() -> None:
    model = mlp(20, 64, nn.Sigmoid)
    opt = gradwell.optim.SGD(model.parameters(), lr=0.1, clip=gradwell.clip.GlobalNorm(5.0))
    from watch_helpers import batches
    with gradwell.watch(model, optimizer=opt) as mon:
        for xb, yb in batches(10):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    assert "vanishing" in kinds(mon) and not kinds(mon) & {"exploding", "nonfinite"}


def test_a_finding_on_the_models_own_parameters_says_so_not_its_placeholder_name() -> None:
    # a (4, 16) table held by the root module itself, initialised at 1e-4: its relative
    # gradient is huge (torch: ||g|| / ||w|| > 10 at every step)
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1, self.l2 = nn.Linear(8, 16), nn.Linear(16, 4)
            self.table = nn.Parameter(torch.full((4, 16), 1e-4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.l2(torch.tanh(self.l1(x)) + self.table.sum(0) * 100.0)
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    mon = gradwell.watch(model)
    x, y = torch.randn(64, 8), torch.randint(0, 4, (64,))
    ratios = []
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        ratios.append(float(model.table.grad.norm() / model.table.norm()))
        mon.step(loss)
        opt.step()
    assert min(ratios) > 10
    found = [f for f in mon.findings() if f.layer == "(model)"]
    assert found and all("in the model's own parameters from step" in f.message for f in found)
    assert not any("(model)" in f.message for f in found)
