"""The monitor on models we did not write (tests/models_zoo.py), against torch-only evidence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gradwell
from gradwell.watch.display import Summary, short_name
from models_zoo import ZOO, compiled, train


def _watched(name, steps, **kw):
    arch = ZOO[name]
    model = arch.build()
    mon = gradwell.watch(model, **kw)
    train(arch, steps, model=model, after_backward=lambda s, m, loss: mon.step(loss))
    return mon, model


def test_lora_zero_init_b_gives_no_infinite_ratio_and_plots(tmp_path):
    mon, model = _watched("lora_gpt2", 4, update_every=1)
    b = [n for n in mon.layers if n.endswith("lora_B.default")]
    assert b
    w = mon.history.series("weight_norm")
    col = w[1].index(b[0])
    assert w[2][0, col] == 0.0                          # torch: B starts at zero
    upd = mon.history.series("update_ratio")[2][:, col]
    assert math.isnan(upd[0]) and np.isfinite(upd[1:]).all()     # ratio to 0 is undefined
    assert not [f for f in mon.findings() if f.severity != "info"], mon.findings()
    assert mon.plot(tmp_path / "lora.png").stat().st_size > 0
    mon.close()


def test_nothing_finite_from_step_zero_still_diagnoses_summarises_and_plots(tmp_path):
    arch = ZOO["encoder_preln"]
    model = arch.build()
    with torch.no_grad():
        model.embed.weight[3, 0] = float("nan")
    mon = gradwell.watch(model)
    train(arch, 3, model=model, after_backward=lambda s, m, loss: mon.step(loss))
    assert not np.isfinite(mon.history.series("total_grad_norm")[2]).any()   # torch: all NaN
    found = mon.findings()
    assert found[0].kind == "nonfinite" and found[0].step == 0
    assert found[0].layer == "embed"
    assert "nonfinite" in str(mon.summary())
    assert mon.plot(tmp_path / "nan.png").stat().st_size > 0
    mon.close()


def test_compiled_model_has_plain_names_and_records_without_hooks():
    arch = ZOO["encoder_preln"]
    plain = gradwell.watch(arch.build())
    model = compiled(arch.build())
    mon = gradwell.watch(model)
    assert mon.layers == plain.layers and not any("_orig_mod" in n for n in mon.layers)
    assert mon.activations is False and plain.activations is True
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    train(arch, 3, model=model, after_backward=lambda s, m, loss: mon.step(loss))
    g = mon.history.series("grad_norm")[2]
    assert np.isfinite(g).all() and (g > 0).all()
    plain.close()
    mon.close()


def test_with_optimizer_and_a_user_clip_mon_step_records_the_pre_clip_norm():
    arch = ZOO["gpt2"]
    model = arch.build()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradwell.watch(model, optimizer=opt)
    torch_norms = []
    for step in range(3):
        opt.zero_grad()
        loss = arch.loss(model, arch.batch(step))
        loss.backward()
        mon.step(loss)
        torch_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)))
        opt.step()
    total = mon.history.series("total_grad_norm")[2][:, 0]
    np.testing.assert_allclose(total, torch_norms, rtol=1e-4)       # torch's pre-clip norm
    assert (total > 0.1).all()
    mon.close()


def test_hugging_face_activation_classes_are_watched():
    for name, cls in (("gpt2", "NewGELUActivation"), ("bert", "GELUActivation"),
                      ("llama", "SiLUActivation")):
        model = ZOO[name].build()
        kinds = {type(m).__name__ for m in model.modules()}
        assert cls in kinds
        mon = gradwell.watch(model)
        acts = {a.type for a in mon.index.activations}
        assert cls in acts, (name, acts)
        mon.close()


def test_bloom_gelu_is_watched_as_an_activation():
    """BLOOM's MLP calls its own ``BloomGelu`` module (not a transformers.activations class):
    its outputs get activation statistics, their mean as torch reads it."""
    from transformers import BloomConfig, BloomForCausalLM
    torch.manual_seed(0)
    model = BloomForCausalLM(BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=4))
    gelu = "transformer.h.0.mlp.gelu_impl"
    assert type(dict(model.named_modules())[gelu]).__name__ == "BloomGelu"
    seen = []
    dict(model.named_modules())[gelu].register_forward_hook(
        lambda m, i, out: seen.append(float(out.detach().double().mean())))
    ids = torch.randint(0, 64, (2, 8))
    mon = gradwell.watch(model)
    model(input_ids=ids, labels=ids).loss.backward()
    mon.step()
    mon.close()
    assert {a.type for a in mon.index.activations} == {"BloomGelu"}
    (rec,) = mon.history.records()
    assert rec["out_mean"][gelu] == pytest.approx(seen[0], rel=1e-5)


def test_bert_layer_names_stay_distinct_at_80_columns():
    mon, _ = _watched("bert", 2)
    text = str(Summary(mon.history, mon.findings(), width=80))
    shown = {short_name(n, 20) for n in mon.layers}
    assert len(shown) == len(mon.layers)
    assert short_name("bert.encoder.layer.0.attention.self.query", 20) == "\u2026.0.\u2026.self.query"
    for line in text.splitlines():
        assert len(line) <= 80
    assert "\u2026.1.\u2026.self.query" in text
    mon.close()


def test_encoder_decoder_names_stay_distinct_at_80_columns():
    """T5: the encoder's and the decoder's blocks share every part but the first; the shortened
    names keep it (or its initial), and every shown name is one layer's."""
    from transformers import T5Config, T5ForConditionalGeneration

    from gradwell.watch.display import short_names

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32,
                                                num_layers=2, num_heads=4,
                                                decoder_start_token_id=0))
    mon = gradwell.watch(model)
    ids = torch.randint(1, 64, (2, 8))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    mon.step(loss)
    mon.close()
    names = mon.history.columns["out_mean"]
    for width in (20, 28):
        shown = short_names(names, width)
        assert len(set(shown.values())) == len(names)
        assert max(len(v) for v in shown.values()) <= width
    shown = short_names(names, 20)
    assert shown["encoder.block.0.layer.0.SelfAttention.q"] == "encoder.\u2026.0.\u2026.0.\u2026.q"
    assert shown["decoder.block.0.layer.0.SelfAttention.q"] == "decoder.\u2026.0.\u2026.0.\u2026.q"
    assert shown["encoder.block.1.layer.0.layer_norm"] == "e.b.1.l.0.layer_norm"
    text = str(Summary(mon.history, mon.findings(), width=80))
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "decoder.\u2026.1.\u2026.0.\u2026.q" in text and "encoder.\u2026.1.\u2026.0.\u2026.q" in text


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_architecture_shows_each_watched_module_under_its_own_name(name):
    """At the widths of the summary (20) and of the heatmap (28) no two watched modules read the
    same, LoRA's ``...c_attn.lora_A.default`` / ``...c_proj.lora_B.default`` included."""
    from gradwell.watch.display import short_names

    mon = gradwell.watch(ZOO[name].build())
    names = list(dict.fromkeys(mon.layers + mon.history.columns["out_mean"]))
    mon.close()
    for width in (20, 28):
        shown = short_names(names, width)
        assert len(set(shown.values())) == len(names), width
        assert max(len(v) for v in shown.values()) <= width
