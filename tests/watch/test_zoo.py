"""The shared architecture zoo (tests/models_zoo.py) trains healthily by torch-only evidence."""

from __future__ import annotations

import pytest
import torch

from models_zoo import ZOO, compiled, train


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_architecture_trains_healthily_with_adam(name):
    arch = ZOO[name]
    model = arch.build()
    before = _snapshot(model)
    model, losses = train(arch, 25, model=model)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < arch.notes.get("loss_drop", 0.8) * losses[0], losses         # the fixed batch is being learnt
    after = _snapshot(model)
    moved = [n for n in before if not torch.equal(before[n], after[n])]
    assert len(moved) == len(before), sorted(set(before) - set(moved))


def test_builds_are_reproducible_and_tied_frozen_lora_as_documented():
    a, b = ZOO["gpt2"].build(), ZOO["gpt2"].build()
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert a.transformer.wte.weight is a.lm_head.weight
    frozen = ZOO["bert_frozen_emb"].build()
    assert not frozen.bert.embeddings.word_embeddings.weight.requires_grad
    lora = ZOO["lora_gpt2"].build()
    bs = [p for n, p in lora.named_parameters() if "lora_B" in n]
    assert bs and all(torch.count_nonzero(p) == 0 for p in bs)
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_compiled_model_matches_eager():
    arch = ZOO["encoder_preln"]
    eager, comp = arch.build(), compiled(arch.build())
    b = arch.batch(0)
    torch.testing.assert_close(arch.loss(comp, b), arch.loss(eager, b))
    assert any(n.startswith("_orig_mod.") for n, _ in comp.named_parameters())
