"""The recorded statistics equal independent references: torch's own norms, the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import gradwell
from gradwell.watch import monitor as monitor_module
from watch_helpers import batches, mlp


def _flat_norm(tensors) -> float:
    return float(torch.cat([t.detach().reshape(-1) for t in tensors]).double().norm())


def _rec(mon, step: int) -> dict:
    return next(r for r in mon.history.records() if r["step"] == step)


def test_gradient_weight_and_update_norms_match_torch() -> None:
    model = mlp(2, 32, nn.Tanh)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mon = gradwell.watch(model, update_every=1)
    expected = []
    for xb, yb in batches(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        total = nn.utils.clip_grad_norm_(model.parameters(), math.inf)   # torch's total norm
        mon.step()
        opt.step()
        expected.append((before, grads, float(total)))
    mon.close()
    for step, (before, grads, total) in enumerate(expected):
        rec = _rec(mon, step)
        assert rec["total_grad_norm"]["total"] == pytest.approx(total, rel=1e-5)
        for name, g in grads.items():
            assert rec["param_grad_norm"][name] == pytest.approx(float(g.norm()), rel=1e-5)
        for layer in ("0", "2", "4"):
            ps = [n for n in grads if n.startswith(layer + ".")]
            assert rec["grad_norm"][layer] == pytest.approx(
                _flat_norm([grads[n] for n in ps]), rel=1e-5)
            w_old = _flat_norm([before[n] for n in ps])
            assert rec["weight_norm"][layer] == pytest.approx(w_old, rel=1e-5)
            if step < 2:   # the update of step s is w(s+1) - w(s)
                nxt = expected[step + 1][0]
                delta = _flat_norm([nxt[n] - before[n] for n in ps])
                assert rec["update_ratio"][layer] == pytest.approx(delta / w_old, rel=1e-4)


def test_optimizer_hooks_measure_the_sgd_update_exactly() -> None:
    """Plain SGD moves w by lr * g, so update/weight = lr * ||g|| / ||w|| (a formula)."""
    model = mlp(1, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gradwell.watch(model, optimizer=opt, update_every=1) as mon:
        for xb, yb in batches(2):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    assert mon.history.recorded == 2
    for rec in mon.history.records():
        for layer in ("0", "2"):
            want = 0.05 * rec["grad_norm"][layer] / rec["weight_norm"][layer]
            assert rec["update_ratio"][layer] == pytest.approx(want, rel=1e-4)


def test_updates_are_measured_one_recorded_step_in_update_every_weights_on_every_one() -> None:
    model = mlp(1, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    weights = []
    with gradwell.watch(model, optimizer=opt, every=2, update_every=3) as mon:
        for xb, yb in batches(12):
            weights.append(_flat_norm(list(model[0].parameters())))
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    steps, _, upd = mon.history.series("update_ratio")
    assert list(steps) == [0, 2, 4, 6, 8, 10]
    measured = ~np.isnan(upd[:, 0])
    assert list(measured) == [True, False, False, True, False, False]    # steps 0 and 6
    w = mon.history.series("weight_norm")[2][:, 0]
    # no stale value: every recorded step has the weight norm of its own step (issue 12)
    np.testing.assert_allclose(w, [weights[s] for s in (0, 2, 4, 6, 8, 10)], rtol=1e-5)
    g = mon.history.series("grad_norm")[2][:, 0]
    np.testing.assert_allclose(upd[measured, 0], 0.05 * g[measured] / w[measured], rtol=1e-4)


def test_by_default_weights_and_updates_are_measured_about_every_10_training_steps() -> None:
    model = mlp(1, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for every, measured_at in ((1, [0, 10, 20]), (5, [0, 10, 20]), (20, [0, 20])):
        with gradwell.watch(model, every=every) as mon:
            for xb, yb in batches(21):
                opt.zero_grad()
                nn.functional.cross_entropy(model(xb), yb).backward()
                mon.step()
                opt.step()
        steps, _, upd = mon.history.series("update_ratio")
        assert list(steps[~np.isnan(upd[:, 0])]) == measured_at, every


def test_activation_statistics_match_their_definitions() -> None:
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 16), nn.Sigmoid(), nn.Linear(16, 10))
    with torch.no_grad():
        model[0].weight.mul_(6.0)            # some tanh saturation
        model[2].bias[:8] = -50.0            # 8 of 32 ReLU units dead
    outs: dict[str, torch.Tensor] = {}
    for i in (0, 1, 3, 5):
        model[i].register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(str(i), o))
    # (outs["0"] keeps the graph: its .grad is the back-propagated gradient)
    outs["0"] = None
    model[0].register_forward_hook(lambda m, a, o: o.retain_grad())
    xb, yb = next(batches(1, batch=128))
    mon = gradwell.watch(model)
    nn.functional.cross_entropy(model(xb), yb).backward()
    mon.step()
    mon.close()
    rec = _rec(mon, 0)
    tanh, relu, sig = (outs[k].detach() for k in ("1", "3", "5"))
    assert rec["out_mean"]["1"] == pytest.approx(float(tanh.mean()), abs=1e-6)
    assert rec["out_std"]["1"] == pytest.approx(float(tanh.std(unbiased=False)), rel=1e-4)
    assert rec["saturated"]["1"] == pytest.approx(float((tanh.abs() > 0.97).float().mean()))
    assert 0.05 < rec["saturated"]["1"] < 0.95
    assert rec["saturated"]["5"] == pytest.approx(
        float(((sig < 0.015) | (sig > 0.985)).float().mean()))
    dead = float(((relu == 0).all(dim=0)).float().mean())
    assert dead >= 8 / 32 and rec["dead"]["3"] == pytest.approx(dead)
    og = outs["0"].grad
    assert rec["out_grad_rms"]["0"] == pytest.approx(float(og.norm() / og.numel() ** 0.5),
                                                     rel=1e-5)


def test_gradient_accumulation_is_one_step() -> None:
    model = mlp(1, 16, nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradwell.watch(model, optimizer=opt)
    micro = list(batches(3, batch=32))
    opt.zero_grad()
    for xb, yb in micro:
        (nn.functional.cross_entropy(model(xb), yb) / 3).backward()
    grad = _flat_norm([p.grad for p in model[0].parameters()])
    with torch.no_grad():
        first = torch.cat([model[0](xb) for xb, _ in micro])
    opt.step()
    mon.close()
    assert mon.history.recorded == 1
    rec = _rec(mon, 0)
    assert rec["grad_norm"]["0"] == pytest.approx(grad, rel=1e-5)
    assert rec["out_mean"]["0"] == pytest.approx(float(first.mean()), abs=1e-6)
    assert rec["out_std"]["0"] == pytest.approx(float(first.std(unbiased=False)), rel=1e-4)


def test_every_n_records_one_step_in_n_and_skips_the_hooks(monkeypatch) -> None:
    calls = []
    original = gradwell.watch.collect.ActivationStats.on_output
    monkeypatch.setattr(gradwell.watch.collect.ActivationStats, "on_output",
                        lambda self, *a: (calls.append(1), original(self, *a)))
    model = mlp(2, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradwell.watch(model, every=4) as mon:
        for xb, yb in batches(10):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            mon.step()
            opt.step()
    assert list(mon.history.steps) == [0, 4, 8]
    assert len(calls) == 3 * 5      # 5 watched modules, at steps 0, 4, 8 only


_SYNCING = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy")


def test_one_host_transfer_per_recorded_step(monkeypatch) -> None:
    model = mlp(3, 16, nn.Tanh)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    data = list(batches(4))
    mon = gradwell.watch(model)
    reads: list[str] = []
    for name in _SYNCING:
        orig = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _o=orig, _n=name, **k: (reads.append(_n),
                                                                     _o(self, *a, **k))[1])
    for xb, yb in data:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        before = len(reads)
        mon.step(loss)
        opt.step()
        assert reads[before:] in ([], ["numpy"])
    mon.close()
    monkeypatch.undo()
    assert reads == ["numpy"] * 4        # steps 0-2 read at the next step, step 3 at close()


def test_gradwell_optimizer_that_clips_hands_over_its_norms(monkeypatch) -> None:
    model = mlp(2, 16)
    opt = gradwell.optim.SGD(model.parameters(), lr=0.1, clip=gradwell.clip.GlobalNorm(0.01))
    seen: list[list[torch.Tensor]] = []
    orig = monitor_module.norms
    monkeypatch.setattr(monitor_module, "norms", lambda ts, dev: (seen.append(list(ts)),
                                                                 orig(ts, dev))[1])
    mon = gradwell.watch(model, optimizer=opt)
    pre_clip = []
    for xb, yb in batches(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        pre_clip.append(float(nn.utils.clip_grad_norm_(model.parameters(), math.inf)))
        opt.step()
    mon.close()
    grads = [p.grad for p in model.parameters()]
    assert seen and not any(t is g for ts in seen for t in ts for g in grads)
    _, _, total = mon.history.series("total_grad_norm")
    np.testing.assert_allclose(total[:, 0], pre_clip, rtol=1e-5)
    assert min(pre_clip) > 0.01 * 10       # so the clip did act: the norms are pre-clipping


def test_unused_parameters_record_zero_and_rnn_outputs_work() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(8, 16, batch_first=True)
            self.unused = nn.Linear(4, 4)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    torch.manual_seed(0)
    net = Net()
    mon = gradwell.watch(net)
    loss = net(torch.randn(5, 7, 8)).pow(2).mean()
    loss.backward()
    mon.step(loss)
    mon.close()
    rec = _rec(mon, 0)
    assert rec["grad_norm"]["unused"] == 0.0
    assert rec["loss"]["loss"] == pytest.approx(float(loss.detach()))
    gru_grad = _flat_norm([p.grad for p in net.rnn.parameters()])
    assert rec["grad_norm"]["rnn"] == pytest.approx(gru_grad, rel=1e-5)
    assert math.isfinite(rec["out_grad_rms"]["rnn"]) and rec["out_grad_rms"]["rnn"] > 0
