"""``wortsman2023-instabilities``: the LR sensitivity against its formula computed by hand, the
spec, and the verdict on synthetic results (it can fail)."""

from __future__ import annotations

import math

import pytest

import gradwell.lab.catalog.wortsman2023_instabilities as exp
from gradwell.lab.spec import Trial
from gradwell.lab.store import Store
from gradwell.lab.train import TrialResult
from gradwell.lab.verdict import Results


def test_lr_sensitivity_is_the_mean_capped_excess_over_the_best_loss():
    # losses 1.2, 1.3, 5.0 (diverged), l0 = 2.77: ((1.2 + 1.3 + 2.77) / 3) - 1.2
    assert exp.lr_sensitivity([1.2, 1.3, 5.0], 2.77) == pytest.approx((1.2 + 1.3 + 2.77) / 3 - 1.2)
    assert exp.lr_sensitivity([1.2, 1.2]) == 0.0          # flat: insensitive
    with pytest.raises(ValueError, match="at least one"):
        exp.lr_sensitivity([])


def test_spec_sweeps_the_learning_rate_for_three_recipes():
    trials = exp.EXPERIMENT.load().trials()
    assert len(trials) == 36 and all(t.function.endswith(":transformer_trial") for t in trials)
    recipes = {(t.config["qk_norm"], t.config["z_loss"]) for t in trials}
    assert recipes == set(exp.FIXES.values())
    assert {t.config["norm_position"] for t in trials} == {"pre"}
    assert sorted({t.config["lr"] for t in trials}) == [0.01, 0.03, 0.1, 0.3]
    quick = exp.EXPERIMENT.load().trials(quick=True)
    assert len(quick) == 18 and {t.config["seed"] for t in quick} == {0, 1, 2}


def _results(tmp_path, rows: dict[tuple[str, float], tuple[float, float, float]]) -> Results:
    """(recipe, lr) -> (final train loss, max attention logit, final |log Z|), every seed."""
    store = Store(tmp_path / "lab")
    for (fix, lr), (loss, attn, log_z) in rows.items():
        qk, z = exp.FIXES[fix]
        for seed in range(3):
            t = Trial(f"{fix}{lr}{seed}", exp.EXPERIMENT.name, f"{fix} · lr={lr}",
                      {"qk_norm": qk, "z_loss": z, "lr": lr, "seed": seed}, {"steps": 1},
                      None, {})
            store.save_trial(t, TrialResult(t.key, "done", 1.0, {
                "final_train_loss": loss, "max_attn_logit": attn, "final_abs_log_z": log_z}))
    return Results(store, exp.EXPERIMENT.name)


def test_verdict_passes_on_the_paper_result_and_fails_without_it(tmp_path):
    ok = _results(tmp_path / "a", {
        ("baseline", 0.03): (1.2, 50.0, 6.0), ("baseline", 0.3): (2.8, 1e5, 3.0),
        ("QK-layernorm", 0.03): (1.2, 8.0, 6.5), ("QK-layernorm", 0.3): (1.25, 60.0, 7.5),
        ("QK-layernorm + z-loss", 0.03): (1.22, 8.0, 0.6),
        ("QK-layernorm + z-loss", 0.3): (1.3, 60.0, 0.5)})
    assert [c.passed for c in exp.verdict(ok, True)] == [True] * 8
    bad = _results(tmp_path / "b", {
        ("baseline", 0.03): (1.2, 50.0, 6.0), ("baseline", 0.3): (1.3, 80.0, 3.0),
        ("QK-layernorm", 0.03): (1.2, 8.0, 2.0), ("QK-layernorm", 0.3): (2.8, 70.0, 2.9),
        ("QK-layernorm + z-loss", 0.03): (1.22, 8.0, 3.0),
        ("QK-layernorm + z-loss", 0.3): (2.8, 60.0, 3.0)})
    assert [c.passed for c in exp.verdict(bad, True)] == [False] * 8


def test_a_diverged_trial_counts_as_the_loss_of_knowing_nothing(tmp_path):
    store = Store(tmp_path / "lab")
    t = Trial("k", exp.EXPERIMENT.name, "baseline · lr=0.3",
              {"qk_norm": False, "z_loss": 0.0, "lr": 0.3, "seed": 0}, {"steps": 1}, None, {})
    store.save_trial(t, TrialResult("k", "diverged", 1.0, {"final_train_loss": math.nan}))
    assert exp._median(Results(store, exp.EXPERIMENT.name), "baseline", 0.3) == math.log(16)
