"""``zhang2019-fixup``: the spec, the trial kind's initial logit scale against a torch-only
forward pass, and the verdict on synthetic results (it can fail)."""

from __future__ import annotations

import torch

import gradwell.lab.catalog.zhang2019_fixup as exp
from gradwell.lab.spec import Trial
from gradwell.lab.store import Store
from gradwell.lab.train import TrialResult
from gradwell.lab.verdict import Results


def test_spec_expands_to_four_variants_and_three_seeds():
    trials = exp.EXPERIMENT.load().trials()
    assert len(trials) == 12 and all(t.function.endswith(":fixup_trial") for t in trials)
    assert {(t.config["scheme"], t.config["norm"]) for t in trials} == {
        ("he", "none"), ("he", "batch"), ("fixup", "none"), ("skipinit", "none")}
    assert {t.config["depth"] for t in exp.EXPERIMENT.load().trials(quick=True)} == {16}


def test_trial_records_the_logit_std_of_the_model_it_trains():
    trial = next(t for t in exp.EXPERIMENT.load().trials(quick=True) if t.config["seed"] == 0)
    trial = Trial(trial.key, trial.experiment, trial.label, {**trial.config, "depth": 4},
                  {"steps": 2}, None, {"grad_every": 1})
    result = exp.fixup_trial(trial)
    assert result.status == "done", result.error
    from gradwell.lab.train import load_data
    data = load_data(trial.config)
    torch.manual_seed(0)                  # the trial seeds torch before building the model
    model = exp.build_residual_mlp(trial.config, data)
    expected = model(data.x_test).std().item()
    assert abs(result.summary["init_logit_std"] - expected) <= 1e-4 * expected


def _results(tmp_path, accs: dict[str, list[float]], std: float) -> Results:
    store = Store(tmp_path / "lab")
    for t in exp.EXPERIMENT.load().trials():        # stored label and resolved config
        acc = accs[t.label][t.config["seed"]]
        store.save_trial(t, TrialResult(t.key, "done", 1.0, {
            "final_test_acc": acc, "init_logit_std": std if t.label == exp.VARIANTS[0] else 1}))
    return Results(store, exp.EXPERIMENT.name)


def test_verdict_passes_on_the_paper_result_and_fails_without_it(tmp_path):
    ok = _results(tmp_path / "a", {exp.VARIANTS[0]: [0.1] * 3, exp.VARIANTS[1]: [0.95] * 3,
                                   exp.VARIANTS[2]: [0.94, 0.95, 0.3],
                                   exp.VARIANTS[3]: [0.93] * 3}, std=1e7)
    assert all(c.passed for c in exp.verdict(ok, False))
    bad = _results(tmp_path / "b", {exp.VARIANTS[0]: [0.9] * 3, exp.VARIANTS[1]: [0.95] * 3,
                                    exp.VARIANTS[2]: [0.85] * 3,
                                    exp.VARIANTS[3]: [0.2] * 3}, std=5.0)
    assert [c.passed for c in exp.verdict(bad, False)] == [False, False, True, False, False,
                                                           False, False]
