"""``ioffe2015-bn``: the quick version reproduces end to end through the CLI; the verdict fails
on results where batch norm does not help."""

import math
import gradwell.lab.catalog.ioffe2015_bn as exp
from gradwell.lab.verdict import Results
from lab_helpers import spec_results


def _trial(label, steps, acc, status="done", **config):
    return {"label": label, "config": config, "status": status,
            "summary": {"steps_to_target": steps, "final_test_acc": acc}}


def _fake(bn_steps, plain_high_steps, plain_high_status, sigmoid_plain_acc):
    """Every trial of the spec (its stored label and resolved config), seeds 0-2."""
    def outcome(t):
        if t.label == "ReLU-4 plain · lr ×1":
            return "done", {"steps_to_target": 180, "final_test_acc": 0.96}
        if t.label.startswith("ReLU-4 BN"):
            return "done", {"steps_to_target": bn_steps, "final_test_acc": 0.97}
        if t.label.startswith("ReLU-4 plain"):
            return plain_high_status, {"steps_to_target": plain_high_steps, "final_test_acc": 0.5}
        if t.label == "sigmoid-10 plain":
            return "done", {"steps_to_target": None, "final_test_acc": sigmoid_plain_acc}
        return "done", {"steps_to_target": 300, "final_test_acc": 0.9}
    return spec_results(exp.EXPERIMENT, outcome)


def test_verdict_holds_on_results_like_the_paper():
    assert all(c.passed for c in exp.verdict(_fake(40, None, "diverged", 0.1), quick=False))


def test_verdict_fails_when_bn_is_no_faster_or_plain_copes():
    crit = exp.verdict(_fake(180, 60, "done", 0.6), quick=False)
    assert [c.passed for c in crit] == [False] * len(crit)


def test_high_lr_at_30x_needs_plain_to_diverge_not_just_miss_the_target():
    crit = exp.verdict(_fake(40, None, "done", 0.1), quick=False)
    assert [c.passed for c in crit] == [True, True, True, True, False]


def test_median_steps_counts_runs_that_never_reach_the_target_as_infinite():
    res = Results.of([_trial("a", 10, 1.0, lr=1), _trial("a", None, 0.1, lr=1),
                      _trial("a", None, 0.1, lr=1)])
    assert math.isinf(exp.median_steps(res, lr=1))
    assert exp.median_steps(res, lr=2) is None
    assert exp.median_acc(Results.of([_trial("a", None, 0.9, "diverged", lr=1)]), lr=1) == 0
