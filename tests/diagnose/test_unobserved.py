"""The ``unobserved`` finding: watched modules whose forward hooks never fired."""

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
