"""``gated-rnn``: the forget-bias initialisation, the trial kind, and the quick version end to
end through the CLI."""

from __future__ import annotations

import torch

import gradwell.lab.catalog.gated_rnn as exp
from gradwell.nn import RecurrentNet


def test_set_forget_bias_sets_only_the_forget_gate():
    torch.manual_seed(0)
    model = RecurrentNet("lstm", 2, 1, 8, layers=1)
    before = model.rnn.bias_ih_l0.detach().clone()
    assert exp.set_forget_bias(model, 1.0) == 1
    b_ih, b_hh = model.rnn.bias_ih_l0.detach(), model.rnn.bias_hh_l0.detach()
    assert torch.equal(b_ih[8:16], torch.ones(8)) and torch.equal(b_hh[8:16], torch.zeros(8))
    assert torch.equal(b_ih[:8], before[:8]) and torch.equal(b_ih[16:], before[16:])
    assert exp.set_forget_bias(RecurrentNet("gru", 2, 1, 8), 1.0) == 0


def test_spec_expands_to_three_models_and_three_seeds():
    trials = exp.EXPERIMENT.load().trials()
    assert len(trials) == 9
    assert {t.config["model"] for t in trials} == {"rnn", "gru", "lstm"}
    assert all(t.config["seq_len"] == 100 and t.function.endswith(":gated_trial")
               for t in trials)
    quick = exp.EXPERIMENT.load().trials(quick=True)
    assert {t.config["seq_len"] for t in quick} == {50}
    assert [t.config.get("forget_bias") for t in trials if t.config["model"] == "lstm"] == [1.0] * 3
