"""The ``unobserved`` finding: watched modules whose forward hooks never fired."""

import pytest
import torch
from torch import nn

import gradwell
from models_zoo import ZOO


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.used = nn.Linear(16, 4)
        self.unused = nn.Linear(16, 4)          # a head this loop never calls

    def forward(self, x):
        return self.used(torch.relu(self.body(x)))


def _run(model, x, steps=3):
    mon = gradwell.watch(model)
    for _ in range(steps):
        loss = model(x).pow(2).mean()
        model.zero_grad()
        loss.backward()
        mon.step(loss)
    mon.close()
    return [f for f in mon.findings() if f.kind == "unobserved"]


def test_a_head_that_never_runs_is_reported_by_name():
    torch.manual_seed(0)
    model = _TwoHeads()
    # torch-only evidence: the unused head received no gradient at all
    found = _run(model, torch.randn(4, 8))
    assert model.unused.weight.grad is None
    assert len(found) == 1 and found[0].layer == "unused" and found[0].severity == "info"
    assert found[0].evidence["modules"] == ["unused"]


def test_multihead_attention_out_proj_used_functionally_is_not_unobserved():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
    model = nn.Sequential(nn.Linear(8, 16), nn.TransformerEncoder(layer, 1), nn.Linear(16, 4))
    found = _run(model, torch.randn(4, 5, 8))
    # torch-only evidence: out_proj's weight was used (it has a gradient) though its hook never ran
    assert model[1].layers[0].self_attn.out_proj.weight.grad.abs().sum() > 0
    assert found == []


class _TiedStacks(nn.Module):
    """T5's layout: ``shared`` holds the embedding; each stack calls its own ``embed_tokens``
    module, a different module object holding the same weight, so ``shared`` never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Embedding(10, 8)
        self.enc_embed, self.dec_embed = nn.Embedding(10, 8), nn.Embedding(10, 8)
        self.enc_embed.weight = self.dec_embed.weight = self.shared.weight
        self.head = nn.Linear(8, 3)
        self.unused = nn.Linear(8, 3)

    def forward(self, ids):
        return self.head(self.enc_embed(ids) + self.dec_embed(ids))


def test_a_layer_used_only_through_modules_that_hold_its_tied_weight_is_not_unobserved():
    torch.manual_seed(0)
    model = _TiedStacks()
    mon = gradwell.watch(model)
    layers = {x["name"]: x for x in mon.history.meta["layers"]}
    mon.close()
    assert layers["shared"]["tied"] == ["enc_embed", "dec_embed"] and "enc_embed" not in layers
    called = []
    model.shared.register_forward_hook(lambda *a: called.append(1))
    found = _run(model, torch.randint(0, 10, (4, 5)))
    assert not called and model.shared.weight.grad is not None   # torch: used, never called
    assert [f.evidence["modules"] for f in found] == [["unused"]]


def test_hugging_face_t5_tied_embeddings_raise_no_unobserved_finding():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32,
                                                num_layers=1, num_heads=4,
                                                decoder_start_token_id=0))
    ids = torch.randint(1, 64, (2, 8))
    mon = gradwell.watch(model)
    for _ in range(2):
        loss = model(input_ids=ids, labels=ids).loss
        model.zero_grad()
        loss.backward()
        mon.step(loss)
    mon.close()
    assert [f for f in mon.findings() if f.kind == "unobserved"] == []
    tied = {x["name"]: x["tied"] for x in mon.history.meta["layers"] if x["tied"]}
    assert tied == {"shared": ["encoder.embed_tokens", "decoder.embed_tokens", "lm_head"]}
    gpt2 = gradwell.watch(ZOO["gpt2"].build())
    assert {x["name"]: x["tied"] for x in gpt2.history.meta["layers"] if x["tied"]} == {
        "transformer.wte": ["lm_head"]}
    gpt2.close()


class _FirstBlockCheckpointed(nn.Module):
    """A reentrant checkpoint around the first block: its input (the data) needs no grad."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint
        return self.head(checkpoint(self.block, x, use_reentrant=True))


def test_a_block_that_ran_only_without_grad_is_said_to_get_no_gradient():
    """It ran (it was not "never fired, attach the monitor earlier"): a reentrant checkpoint
    runs it without grad and, with no input needing grad, never recomputes it."""
    torch.manual_seed(0)
    model = _FirstBlockCheckpointed()
    ran = []
    model.block.register_forward_hook(lambda m, a, o: ran.append(torch.is_grad_enabled()))
    with pytest.warns(UserWarning, match="requires_grad"):
        found = _run(model, torch.randn(4, 8))
    assert ran == [False] * 3 and model.block[0].weight.grad is None     # torch-only
    assert model.head.weight.grad is not None
    assert len(found) == 1 and found[0].severity == "warning"
    assert found[0].layer == "block.0"
    assert sorted(found[0].evidence["no_grad"]) == ["block.0", "block.1"]
    assert "no gradient" in found[0].evidence["summary"]
    assert "use_reentrant=False" in found[0].remedies[0]
    assert not any("attach the monitor" in r for r in found[0].remedies)


def test_a_teacher_run_under_no_grad_is_only_information():
    torch.manual_seed(0)
    student, teacher = nn.Linear(8, 4), nn.Sequential(nn.Linear(8, 4), nn.Tanh())
    teacher.requires_grad_(False)
    model = nn.ModuleDict({"student": student, "teacher": teacher})
    mon = gradwell.watch(model)
    x = torch.randn(4, 8)
    for _ in range(3):
        with torch.no_grad():
            target = teacher(x)
        loss = (student(x) - target).pow(2).mean()
        model.zero_grad()
        loss.backward()
        mon.step(loss)
    found = [f for f in mon.findings() if f.kind == "unobserved"]
    mon.close()
    assert [(f.layer, f.severity, f.evidence["no_grad"]) for f in found] == [
        ("teacher.1", "info", ["teacher.1"])]
