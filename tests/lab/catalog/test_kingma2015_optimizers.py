"""``kingma2015-optimizers``: the quick version reproduces end to end through the CLI; the
verdict compares Adam with the right optimizers and fails when Adam is slow."""

import math
import pytest

import gradwell.lab.catalog.kingma2015_optimizers as exp
from lab_helpers import spec_results


def test_every_shipped_optimizer_is_in_the_spec_with_three_or_more_learning_rates():
    spec = exp.EXPERIMENT.load()
    configs = [t.config for t in spec.trials()]
    assert {c["optimizer"] for c in configs} == {
        "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "adamw"}
    gd = [c for c in configs if c["batch_size"] >= 1797]          # full batch: plain GD
    assert gd and {c["optimizer"] for c in gd} == {"sgd"}
    assert all(len(lrs) >= 3 for _, lrs in exp.OPTIMIZERS.values())
    assert {c["model"] for c in configs} == {"logistic", "mlp"}


class _Store:
    def __init__(self, curves):
        self.curves = curves

    def metrics(self, key):
        return {"train_loss": [(i, 0.0, v) for i, v in enumerate(self.curves[key])]}


def _fake(adam_level: float, adamw_level: float = 1.0):
    """Every optimizer's curve at every lr is ``[2, level]``; Adam's is ``[2, adam_level]``:
    the spec's MLP trials of seeds 0-2 (stored label and resolved config)."""
    curves = {}

    def outcome(t):
        if t.config["model"] != "mlp" or t.config["seed"] >= 3:
            return None
        name, lr = t.label.split(" lr=")[0], t.config["lr"]
        level = {"Adam": adam_level, "AdamW": adamw_level}.get(name, 1.0)
        curves[t.key] = [2.0, level * (1 + lr)]       # the smallest lr is the best
        return "done", {}
    res = spec_results(exp.EXPERIMENT, outcome)
    res.store = _Store(curves)
    return res


def test_the_mean_training_loss_is_the_area_under_the_curve_and_divergence_is_inf():
    res = _fake(1.0)
    t = res.trials[0]
    lr = exp.OPTIMIZERS["GD"][1][0]
    assert exp.mean_train_loss(res, t) == pytest.approx((2.0 + 1 + lr) / 2)
    assert exp.best(res, "GD", "MLP") == (lr, pytest.approx((2.0 + 1 + lr) / 2))
    assert math.isinf(exp.mean_train_loss(res, {**t, "status": "diverged"}))


def test_verdict_passes_when_adam_is_as_fast_and_fails_when_it_is_slower():
    assert [c.passed for c in exp.verdict(_fake(1.0), quick=False)] == [True, True]
    # Adam 30 % slower than everything: both criteria fail
    assert [c.passed for c in exp.verdict(_fake(1.6), quick=True)] == [False, False]
    # AdamW much faster, Adam equal to the classics: within 10 % of AdamW fails, the other holds
    assert [c.passed for c in exp.verdict(_fake(1.0, adamw_level=0.5), quick=False)] == [
        False, True]
