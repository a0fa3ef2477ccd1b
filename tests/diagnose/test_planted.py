"""Planted pathologies are found in time and healthy real architectures raise no alarm
(tests/diagnose/planted.py; the table in docs/diagnosis.md comes from the same cases)."""

from __future__ import annotations

import pytest

from planted import ALARM, PATHOLOGIES, healthy
from models_zoo import ZOO

#: the cheap ones run in the fast suite; the GPT-2 learning-rate cases under -m slow
FAST = ("deep_sigmoid", "exploding_rnn", "dead_relu", "saturated_sigmoid", "nan_from_a_bad_op",
        "float16_overflow", "poisoned_batch", "too_large_init", "post_ln_no_warmup",
        "attention_logit_growth", "output_logit_divergence")

_RUNS: dict = {}


def _run(name):
    """Each pathology trains once per session (several tests read its findings)."""
    if name not in _RUNS:
        _RUNS[name] = PATHOLOGIES[name]()
    return _RUNS[name]


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow)
                                  for n in PATHOLOGIES])
def test_planted_pathology_is_found_at_or_before_the_torch_evidence(name):
    out = _run(name)
    assert out.evidence_step < 10 ** 9, "the torch-only evidence never showed the problem"
    assert out.hit(), (out.expected, out.evidence_step, [str(f) for f in out.findings])


@pytest.mark.parametrize("name", sorted(ZOO))
def test_healthy_real_architecture_gets_no_warning_or_error(name):
    found, losses = healthy(ZOO[name])
    assert losses[-1] < ZOO[name].notes.get("loss_drop", 0.8) * losses[0]   # torch: it learns
    alarms = [str(f) for f in found if f.severity in ALARM]
    assert alarms == [], alarms


def test_divergence_texts_name_criterion_number_and_threshold():
    out = PATHOLOGIES["too_large_init"]()
    (f,) = [f for f in out.findings if f.kind == "exploding"]
    assert "relative gradient ||g||/||w|| up to" in f.message and "(threshold 10)" in f.message


@pytest.mark.parametrize("name,kind,texts,remedy", [
    ("attention_logit_growth", "attention_logits", ("max |q.k| x scale", "(threshold 100)"),
     "QK-layernorm"),
    ("output_logit_divergence", "output_logits", ("RMS of log Z", "(threshold 50)"), "z-loss"),
    ("post_ln_no_warmup", "vanishing", ("relative gradient", "below 0.001 x"), "warm-up")])
def test_instability_texts_name_criterion_number_threshold_and_the_remedy(name, kind, texts,
                                                                            remedy):
    (f,) = [f for f in _run(name).findings if f.kind == kind]
    assert all(t in f.message for t in texts), f.message
    assert remedy in f.remedies[0], f.remedies


@pytest.mark.slow
def test_post_ln_stalls_where_the_same_model_pre_ln_learns():
    """torch only: the planted post-LN run's problem is real (Xiong et al. 2020)."""
    from planted import CausalLM, train_causal
    final = {nf: train_causal(CausalLM(12, norm_first=nf), 0.03, 16) for nf in (False, True)}
    assert final[False] > 3.5 and final[True] < 0.5 * final[False], final
