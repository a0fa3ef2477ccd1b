"""``xiong2020-warmup``: the spec, the same initial weights for post-LN and pre-LN, and the
verdict on synthetic results (it can fail)."""

from __future__ import annotations

import torch

import gradwell.lab.catalog.xiong2020_warmup as exp
from gradwell.lab.catalog._transformer import build_transformer
from gradwell.lab.data import copy
from gradwell.lab.store import Store
from gradwell.lab.train import TrialResult
from gradwell.lab.verdict import Results


def test_spec_crosses_post_and_pre_ln_with_and_without_warmup():
    trials = exp.EXPERIMENT.load().trials()
    assert len(trials) == 15 and all(t.function.endswith(":transformer_trial") for t in trials)
    assert {(t.label, t.config["norm_position"], t.config["warmup"]) for t in trials} == {
        ("post-LN, no warm-up", "post", 0), ("post-LN, warm-up", "post", 50),
        ("pre-LN, no warm-up", "pre", 0)}
    assert len({t.config["lr"] for t in trials}) == 1          # the same peak learning rate
    quick = exp.EXPERIMENT.load().trials(quick=True)
    assert len(quick) == 9 and {t.config["seed"] for t in quick} == {0, 1, 2}


def test_post_and_pre_ln_start_from_the_same_weights():
    """The per-seed gradient ratio compares architectures, not draws: for one seed both
    models hold identical parameters (pre-LN adds only a final LayerNorm, weight 1, bias 0)."""
    cfg = dict(exp.EXPERIMENT.load().trials()[0].config)
    data = copy(cfg["seq_len"], cfg["vocab"], 8, 8)
    models = {}
    for norm in ("post", "pre"):
        torch.manual_seed(3)
        models[norm] = build_transformer({**cfg, "norm_position": norm}, data)
    post, pre = (dict(m.named_parameters()) for m in (models["post"], models["pre"]))
    assert set(pre) - set(post) == {"final_norm.weight", "final_norm.bias"}
    for name, p in post.items():
        torch.testing.assert_close(p, pre[name], rtol=0, atol=0)


def _results(tmp_path, rows: dict[str, tuple[float, list[float]]]) -> Results:
    """variant -> (final train loss, init ||dL/dW2|| per block), the same for every seed."""
    store = Store(tmp_path / "lab")
    for t in exp.EXPERIMENT.load().trials():        # stored label and resolved config
        loss, grads = rows[t.label]
        store.save_trial(t, TrialResult(t.key, "done", 1.0, {
            "final_train_loss": loss, "init_ff_grad": grads}))
    return Results(store, exp.EXPERIMENT.name)


def test_verdict_passes_on_the_paper_result_and_fails_without_it(tmp_path):
    ok = _results(tmp_path / "a", {"post-LN, no warm-up": (2.75, [0.2, 0.2, 0.2]),
                                   "post-LN, warm-up": (1.3, [0.2, 0.2, 0.2]),
                                   "pre-LN, no warm-up": (1.25, [0.2, 0.17, 0.15])})
    assert [c.passed for c in exp.verdict(ok, True)] == [True] * 5
    bad = _results(tmp_path / "b", {"post-LN, no warm-up": (1.3, [0.2, 0.2, 0.2]),
                                    "post-LN, warm-up": (2.7, [0.2, 0.2, 0.2]),
                                    "pre-LN, no warm-up": (2.7, [0.2, 0.2, 0.2])})
    assert [c.passed for c in exp.verdict(bad, True)] == [False] * 5
