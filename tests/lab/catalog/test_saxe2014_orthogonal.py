"""saxe2014-orthogonal: singular values of random matrix products against the closed forms,
the verdict on synthetic results (it can fail), and the quick version end to end."""

from __future__ import annotations

import math

import pytest

import gradwell.lab.catalog.saxe2014_orthogonal as sx
from gradwell.lab.store import Store
from gradwell.lab.train import TrialResult
from gradwell.lab.verdict import Results


@pytest.mark.parametrize("depth", [1, 50])
def test_orthogonal_products_have_every_singular_value_one(depth):
    s = sx.product_singular_values(64, depth, "orthogonal", seed=depth)
    assert (s - 1).abs().max().item() < 1e-12


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_gaussian_products_follow_the_fuss_catalan_moments(depth):
    """For L factors N(0, 1/n), the squared singular values have mean 1 and mean square L + 1
    as n grows (Fuss-Catalan law, the moments (1/(Lk+1)) binom((L+1)k, k))."""
    sv = [sx.product_singular_values(256, depth, "lecun", seed) for seed in range(4)]
    m1 = sum((s ** 2).mean().item() for s in sv) / len(sv)
    m2 = sum((s ** 4).mean().item() for s in sv) / len(sv)
    assert m1 == pytest.approx(1.0, rel=0.1)
    assert m2 == pytest.approx(depth + 1, rel=0.15)


def test_gaussian_products_collapse_with_depth():
    medians = [sx.product_singular_values(64, d, "lecun", 0).median().item() for d in (2, 8, 32)]
    assert medians[0] > 0.3 and medians[1] < 0.1 and medians[2] < 1e-3


def _results(tmp_path, ortho_steps: list, gauss_steps: list) -> Results:
    store = Store(tmp_path / "lab")
    depths = (2, 8, 32)
    steps = {"orthogonal": dict(zip(depths, ortho_steps)),
             "Gaussian": dict(zip(depths, gauss_steps))}
    product = {"orthogonal": {"max_dev_from_1": 1e-15},
               "Gaussian": {"sv_median": 1e-5, "frac_below_0.1": 0.8, "sv_max": 4.0}}
    for trial in sx.EXPERIMENT.load().trials():      # stored label and resolved config
        what, init = trial.label.split(" · ")[:2]
        depth = trial.config["depth"]
        if depth in depths:
            summary = (product[init] if what == "product"
                       else {"steps_to_target": steps[init][depth]})
            store.save_trial(trial, TrialResult(trial.key, "done", 1.0, dict(summary)))
    return Results(store, "saxe2014-orthogonal")


def test_steps_to_target_counts_a_seed_that_never_got_there_as_infinite(tmp_path):
    results = _results(tmp_path, [70, 70, 70], [80, 100, None])
    assert sx.steps_to_target(results, "Gaussian", 32) == math.inf
    assert sx.steps_to_target(results, "orthogonal", 8) == 70


def test_verdict_holds_on_the_papers_numbers_and_fails_otherwise(tmp_path):
    ok = sx.verdict(_results(tmp_path / "a", [70, 70, 80], [80, 100, None]), quick=False)
    assert len(ok) == 4 and all(c.passed for c in ok)
    bad = sx.verdict(_results(tmp_path / "b", [70, 100, 200], [80, 80, 90]), quick=False)
    assert [c.passed for c in bad] == [True, True, False, False]
