"""``ioffe2015-bn``: the quick version reproduces end to end through the CLI; the verdict fails
on results where batch norm does not help."""

import math
from types import SimpleNamespace


import gradwell.lab.catalog.ioffe2015_bn as exp


def _trial(label, steps, acc, status="done"):
    return {"label": label, "status": status,
            "summary": {"steps_to_target": steps, "final_test_acc": acc}}


def _fake(bn_steps, plain_high_steps, plain_high_status, sigmoid_plain_acc):
    trials = []
    for seed in range(3):
        trials.append(_trial("ReLU-4 plain · lr ×1", 180, 0.96))
        trials += [_trial(f"ReLU-4 BN · lr ×{s}", bn_steps, 0.97) for s in exp.SCALES]
        trials += [_trial(f"ReLU-4 plain · lr ×{s}", plain_high_steps, 0.5, plain_high_status)
                   for s in exp.SCALES[1:]]
        trials += [_trial("sigmoid-10 plain", None, sigmoid_plain_acc),
                   _trial("sigmoid-10 BN", 300, 0.9)]
    return SimpleNamespace(trials=trials)


def test_verdict_holds_on_results_like_the_paper():
    assert all(c.passed for c in exp.verdict(_fake(40, None, "diverged", 0.1), quick=False))


def test_verdict_fails_when_bn_is_no_faster_or_plain_copes():
    crit = exp.verdict(_fake(180, 60, "done", 0.6), quick=False)
    assert [c.passed for c in crit] == [False] * len(crit)


def test_high_lr_at_30x_needs_plain_to_diverge_not_just_miss_the_target():
    crit = exp.verdict(_fake(40, None, "done", 0.1), quick=False)
    assert [c.passed for c in crit] == [True, True, True, True, False]


def test_median_steps_counts_runs_that_never_reach_the_target_as_infinite():
    res = SimpleNamespace(trials=[_trial("a", 10, 1.0), _trial("a", None, 0.1),
                                  _trial("a", None, 0.1)])
    assert math.isinf(exp.median_steps(res, "a"))
    assert exp.median_steps(res, "b") is None
    assert exp.median_acc(SimpleNamespace(trials=[_trial("a", None, 0.9, "diverged")]), "a") == 0
