"""``founding-claims``: the quick version reproduces end to end through the CLI; the pieces of
the ``founding`` trial kind against closed forms; the verdict flips when a claim's answer does."""

import itertools
import math
import statistics

import pytest
import torch

import gradwell.lab.catalog.founding_claims as exp
from gradwell.nn import MLP
from lab_helpers import spec_results


@pytest.mark.parametrize("n,good", [(9, 2), (9, 1), (5, 5), (6, 3)])
def test_expected_grid_trials_is_the_mean_first_hit_over_every_order(n, good):
    firsts = [next(i + 1 for i, g in enumerate(order) if g)
              for order in set(itertools.permutations([True] * good + [False] * (n - good)))]
    assert exp.expected_grid_trials(n, good) == pytest.approx(statistics.fmean(firsts))
    assert math.isinf(exp.expected_grid_trials(n, 0))


def test_grid_is_log_spaced_over_the_range_and_random_draws_are_seeded_and_independent():
    grid = exp.search_lrs("grid", 9, seed=0)
    assert grid[0] == pytest.approx(exp.LR_RANGE[0]) and grid[-1] == pytest.approx(
        exp.LR_RANGE[1])
    ratios = [b / a for a, b in zip(grid, grid[1:])]
    assert all(r == pytest.approx(ratios[0]) for r in ratios)
    draws = [exp.search_lrs("random", 18, seed=s) for s in range(8)]
    assert draws[0] == exp.search_lrs("random", 18, seed=0)
    assert all(exp.LR_RANGE[0] <= lr <= exp.LR_RANGE[1] for d in draws for lr in d)
    firsts = [math.log10(d[0]) for d in draws]            # neighbouring seeds: unrelated draws
    assert max(firsts) - min(firsts) > 1.0


def test_dead_share_counts_units_that_are_negative_on_every_input():
    model = MLP(2, 2, depth=2, width=4, activation="relu")
    with torch.no_grad():
        for block in model.blocks:
            block.linear.weight.zero_()
            block.linear.bias.copy_(torch.tensor([1.0, -1.0, -1.0, 0.5]))
        model.blocks[0].linear.weight[2] = torch.tensor([1.0, 0.0])   # unit 2: x0 - 1
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0]])       # unit 2 of block 0 is > 0 on row 2
    assert exp.dead_share(model, x) == pytest.approx(3 / 8)


def _t(status="done", **summary):
    return status, summary


def _fake(adam_acc=0.1, leaky_dead=0.55, random_good=4, decay_tuned=0.95):
    """Every trial of the spec (its stored label and resolved config), seeds 0-2; C1's plain
    SGD run is left out, as the verdict does not judge it."""
    outcome = {f"C1 sigmoid-20 · {n}": _t(final_test_acc=adam_acc if n == "Adam" else 0.1)
               for n in exp.C1_RESCUES}
    outcome.update({f"C1 {n} · SGD": _t(final_test_acc=0.9, grad_ratio=1.0)
                    for n in exp.C1_REMEDIES})
    outcome.update({"C2 relu · lr 0.8": _t(final_test_acc=0.2, dead_share=0.64),
                    "C2 leaky_relu · lr 0.8": _t(final_test_acc=0.28, dead_share=leaky_dead),
                    "C2 prelu · lr 0.8": _t("diverged", final_test_acc=0.1, dead_share=0.0),
                    "C3 search · grid": _t(n_good=2, n=9),
                    "C3 search · random": _t(n_good=random_good, n=18),
                    "C4 relu · lr 0.1": _t(final_test_acc=0.96),
                    "C4 relu · lr 0.1 · decay": _t(final_test_acc=decay_tuned),
                    "C4 relu · lr 0.8 · decay": _t(final_test_acc=0.94)})
    return spec_results(exp.EXPERIMENT, lambda t: outcome.get(t.label))


def test_verdict_holds_on_the_calibrated_answers_and_fails_when_an_answer_flips():
    assert all(c.passed for c in exp.verdict(_fake(), quick=False))
    flips = {"adam_acc": 0.9, "leaky_dead": 0.1, "random_good": 12, "decay_tuned": 0.99}
    for key, value in flips.items():
        crit = exp.verdict(_fake(**{key: value}), quick=False)
        assert sum(not c.passed for c in crit) == 1, key
