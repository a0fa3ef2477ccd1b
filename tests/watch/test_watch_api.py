"""The public surface: the callable module, the context manager, hooks, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradwell
import gradwell.watch as watch_module
from watch_helpers import batches, mlp


def _backward(model: nn.Module) -> None:
    xb, yb = next(batches(1, batch=16))
    nn.functional.cross_entropy(model(xb), yb).backward()


def test_module_is_callable_and_exposes_its_names() -> None:
    model = mlp(1, 8)
    mon = gradwell.watch(model)
    assert isinstance(mon, gradwell.watch.Monitor)
    assert isinstance(watch_module(model, every=2), watch_module.Monitor)
    assert isinstance(gradwell.watch.watch(model), gradwell.watch.Monitor)
    for name in watch_module.__all__:
        assert hasattr(gradwell.watch, name)
    assert mon.layers == ["0", "2"]


def _hook_counts(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int]:
    fwd = sum(len(m._forward_hooks) for m in model.modules())
    return fwd, len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks)


def test_close_and_the_with_block_remove_every_hook() -> None:
    model = mlp(2, 8, nn.Tanh)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradwell.watch(model, optimizer=opt) as mon:
        assert _hook_counts(model, opt) == (5, 2)
    assert _hook_counts(model, opt) == (0, 0)
    mon.close()                                             # idempotent
    mon2 = gradwell.watch(model)
    assert _hook_counts(model, opt) == (5, 0)
    mon2.close()
    assert _hook_counts(model, opt) == (0, 0)


def test_bad_input_raises_clear_errors() -> None:
    model = mlp(1, 8)
    with pytest.raises(ValueError, match="no parameters"):
        gradwell.watch(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        gradwell.watch("model")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="every must be an int >= 1"):
            gradwell.watch(model, every=bad)
    with pytest.raises(TypeError, match="activations must be True or False"):
        gradwell.watch(model, activations="yes")
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        gradwell.watch(model, optimizer=object())
    other = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="holds none of the model's parameters"):
        gradwell.watch(model, optimizer=other)
    with pytest.raises(ValueError, match="max_records"):
        gradwell.watch(model, max_records=1)
    mon = gradwell.watch(model)
    with pytest.raises(RuntimeError, match="call loss.backward\\(\\) before mon.step"):
        mon.step()
    _backward(model)
    mon.step()
    mon.close()
    with pytest.raises(RuntimeError, match="monitor was closed"):
        mon.step()
    assert len(mon.findings()) == 0 and mon.history.recorded == 1   # results stay readable


def test_no_grad_forwards_and_closed_monitors_record_nothing() -> None:
    model = mlp(1, 8, nn.Tanh)
    xb, yb = next(batches(1, batch=16))
    mon = gradwell.watch(model)
    with torch.no_grad():                      # a validation pass: must not count
        model(xb * 100)
    nn.functional.cross_entropy(model(xb), yb).backward()
    with torch.no_grad():
        expected = model[1](model[0](xb)).mean()
    mon.step()
    mon.close()
    assert mon.history.latest()["out_mean"]["1"] == pytest.approx(float(expected), abs=1e-6)
    model(xb).sum().backward()                 # after close: nothing happens
    assert mon.history.recorded == 1


def test_shared_activation_module_at_two_widths() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.act = nn.Linear(64, 32), nn.Linear(32, 10), nn.ReLU()

        def forward(self, x):
            return self.act(self.b(self.act(self.a(x))))

    net = Net()
    with torch.no_grad():
        net.b.bias.fill_(-100.0)                # all 10 units of the second use dead
    mon = gradwell.watch(net)
    _backward(net)
    mon.step()
    mon.close()
    dead = mon.history.latest()["dead"]["act"]
    with torch.no_grad():
        h = net.act(net.a(next(batches(1, batch=16))[0]))
    want = (10 + int((h == 0).all(0).sum())) / 42
    assert dead == pytest.approx(want)


def test_repr_and_step_counter() -> None:
    model = mlp(1, 8)
    mon = gradwell.watch(model, every=3)
    assert "every=3" in repr(mon)
    mon.close()
    assert "closed" in repr(mon)


def test_modules_with_dict_outputs_are_summarised() -> None:
    class Head(nn.Module):          # owns a parameter, returns a dict with an int tensor first
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(2.0))
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))

        def forward(self, x):
            return {"count": self.steps, "logits": x * self.scale}

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 3)
            self.head = Head()

        def forward(self, x):
            return self.head(self.lin(x))["logits"]

    net = Net()
    x = torch.randn(5, 4)
    mon = gradwell.watch(net)
    net(x).pow(2).sum().backward()
    mon.step()
    mon.close()
    rec = mon.history.latest()
    assert mon.layers == ["lin", "head"]
    with torch.no_grad():
        logits = net(x)
    assert rec["out_mean"]["head"] == pytest.approx(float(logits.mean()), abs=1e-6)
    assert rec["param_grad_norm"]["head.scale"] == pytest.approx(float(net.head.scale.grad.abs()))
    assert rec["out_grad_rms"]["head"] == pytest.approx(
        float((2 * logits).norm() / logits.numel() ** 0.5), rel=1e-5)
