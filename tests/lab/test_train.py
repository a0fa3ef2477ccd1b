"""One training trial: what it records, against independent computations."""

import math

import pytest
import torch

from gradwell.lab.data import digits
from gradwell.lab.factory import build_optimizer
from gradwell.lab.schema import KINDS, register_kind
from gradwell.lab.spec import parse_spec
from gradwell.lab.train import run_trial
from gradwell.nn import MLP


def trial(budget=None, target=None, record=None, **base):
    data = {"name": "t", "base": {"depth": 2, "width": 16, **base},
            "budget": budget or {"steps": 20}, "record": record or {"eval_every": 10,
                                                                    "grad_every": 5}}
    if target:
        data["target"] = target
    return parse_spec(data).trials()[0]


def test_metrics_and_gradient_rows_are_recorded_when_asked():
    r = run_trial(trial())
    assert r.status == "done", r.error
    by_name = {}
    for step, _, name, value in r.metrics:
        by_name.setdefault(name, []).append(step)
    assert by_name["test_acc"] == [0, 10, 20] and by_name["train_loss"] == [10, 20]
    grad = [(s, i) for s, i, _, stat, _ in r.layer_stats if stat == "grad_norm"]
    assert sorted({s for s, _ in grad}) == [1, 6, 11, 16]
    assert sorted({i for _, i in grad}) == [0, 1, 2]          # 2 hidden + output matrices
    assert r.summary["layers"] == ["blocks.0.linear", "blocks.1.linear", "head"]
    assert r.summary["steps"] == 20


def test_first_step_gradient_norms_match_an_independent_computation():
    t = trial(seed=7, batch_size=32)
    r = run_trial(t)
    d = digits()
    torch.manual_seed(7)
    net = MLP(64, 10, depth=2, width=16, activation="relu")
    idx = torch.randperm(len(d.y_train), generator=torch.Generator().manual_seed(7))[:32]
    torch.nn.functional.cross_entropy(net(d.x_train[idx]), d.y_train[idx]).backward()
    expected = [net.blocks[0].linear.weight, net.blocks[1].linear.weight, net.head.weight]
    got = {i: v for s, i, _, stat, v in r.layer_stats if stat == "grad_norm" and s == 1}
    for i, w in enumerate(expected):
        assert got[i] == pytest.approx(w.grad.norm().item(), rel=1e-5)
    ratio = expected[0].grad.norm() / expected[-1].grad.norm()
    assert 0 < r.summary["grad_ratio"] < 10 * ratio.item() + 10


def test_same_seed_same_numbers():
    def numbers(r):
        return [(step, name, value) for step, _, name, value in r.metrics]

    a, b = run_trial(trial(seed=3)), run_trial(trial(seed=3))
    assert numbers(a) == numbers(b)
    assert numbers(run_trial(trial(seed=4))) != numbers(a)


def test_target_steps_and_seconds():
    r = run_trial(trial(target={"metric": "test_acc", "value": 0.0}))
    assert r.summary["steps_to_target"] == 0 and r.summary["seconds_to_target"] == 0.0
    r = run_trial(trial(target={"metric": "test_acc", "value": 1.01}))
    assert r.summary["steps_to_target"] is None
    r = run_trial(trial(target={"metric": "test_loss", "value": 100.0}))
    assert r.summary["steps_to_target"] == 0


def test_divergence_stops_the_trial_with_a_nonfinite_finding():
    r = run_trial(trial(budget={"steps": 200}, activation="relu", init="he", depth=6, lr=1e6))
    assert r.status == "diverged"
    assert r.summary["steps"] < 200
    assert any(f["kind"] == "nonfinite" for f in r.findings)


def test_a_crashing_trial_is_reported_as_failed_by_the_runner():
    from gradwell.lab.runner import execute

    t = trial()
    t = type(t)(**{**t.__dict__, "config": {**t.config, "data": "nonexistent"}})
    with pytest.raises(ValueError, match="dataset must be one of .*, got 'nonexistent'"):
        run_trial(t)                       # the kind's function lets it propagate...
    r = execute(t)                         # ...the runner stores it
    assert r.status == "failed" and "got 'nonexistent'" in r.error
    assert r.key == t.key and r.seconds > 0


def test_registered_kinds_bring_keys_and_are_dispatched_by_the_runner():
    from gradwell.lab.runner import execute
    from gradwell.lab.schema import integer

    before = trial().key
    register_kind("probe-for-test", "lab_helpers:probe_trial", {"probe_size": integer(1, 3)})
    try:
        assert trial().key == before          # other kinds' keys leave train trials alone
        assert "probe_size" not in trial().config
        t = parse_spec({"name": "k", "base": {"kind": "probe-for-test", "probe_size": 5},
                        "budget": {"steps": 1}}).trials()[0]
        assert t.function == "lab_helpers:probe_trial" and t.config["probe_size"] == 5
        r = execute(t)                        # the registered function got the trial
        assert (r.status, r.key, r.summary) == ("done", t.key, {"probe_size": 5})
        with pytest.raises(ValueError, match="module:function"):
            register_kind("bad", "no_colon")
    finally:
        KINDS.pop("probe-for-test", None)


def test_max_seconds_cuts_the_budget():
    r = run_trial(trial(budget={"steps": 10 ** 6, "max_seconds": 0.3}))
    assert r.status == "done" and r.summary["steps"] < 10 ** 6
    assert 0.3 <= r.summary["train_seconds"] < 5


def test_global_norm_clip_bounds_the_sgd_step():
    """Pascanu et al. 2013: after clipping, ||lr * g|| <= lr * max_norm."""
    torch.manual_seed(0)
    net = MLP(4, 2, depth=2, width=8, activation="relu")
    cfg = {"optimizer": "sgd", "lr": 1.0, "weight_decay": 0.0, "clip": "global_norm",
           "clip_value": 1e-3}
    opt = build_optimizer(cfg, net.parameters())
    before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    (net(torch.randn(16, 4) * 100).pow(2).sum()).backward()
    raw = torch.cat([p.grad.flatten() for p in net.parameters()]).norm().item()
    assert raw > 1.0
    opt.step()
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-3)


def test_momentum_and_nesterov_are_sgd_with_momentum():
    import gradwell.optim

    p = [torch.nn.Parameter(torch.zeros(2))]
    for name, cls in (("sgd", "SGD"), ("adagrad", "Adagrad"), ("rmsprop", "RMSprop"),
                      ("adadelta", "Adadelta"), ("adam", "Adam"), ("adamw", "AdamW")):
        opt = build_optimizer({"optimizer": name, "lr": 0.5}, p)
        assert type(opt) is getattr(gradwell.optim, cls) and opt.param_groups[0]["lr"] == 0.5
    for name, nesterov in (("momentum", False), ("nesterov", True)):
        opt = build_optimizer({"optimizer": name, "lr": 0.1, "momentum": 0.8}, p)
        g = opt.param_groups[0]
        assert (g["momentum"], g["nesterov"], g["lr"]) == (0.8, nesterov, 0.1)


def test_recurrent_regression_and_cnn_trials_run():
    r = run_trial(trial(model="gru", data="adding", seq_len=10, n_train=64, n_test=32, hidden=8))
    assert r.status == "done", r.error
    names = {m[2] for m in r.metrics}
    assert "test_acc" not in names and "test_loss" in names
    assert math.isfinite(r.summary["final_test_loss"])
    r = run_trial(trial(model="resnet", channels=4, budget={"steps": 3}))
    assert r.status == "done", r.error
    assert r.summary["layers"][0] == "features.0"
