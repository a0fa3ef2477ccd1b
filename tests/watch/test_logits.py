"""Output logits, attention logits and Adam statistics (gradwell/watch/transformer.py, adam.py)
against references computed here with plain torch, on models this project did not write."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gradwell
from models_zoo import ZOO, ids_batch


def _one_step(arch, model=None, **kw):
    model = model or arch.build()
    mon = gradwell.watch(model, **kw)
    loss = arch.loss(model, arch.batch(0))
    loss.backward()
    mon.step(loss)
    mon.close()
    return model, mon.history


@pytest.mark.parametrize("name,logits", [("gpt2", "lm_head"), ("llama", "lm_head"),
                                         ("bert", "classifier"), ("encoder_preln", "head"),
                                         ("resnet_bn", "fc"),
                                         ("lora_gpt2", "base_model.model.lm_head")])
def test_the_logits_module_is_found(name, logits):
    mon = gradwell.watch(ZOO[name].build())
    assert mon.history.columns["log_z_rms"] == [logits]
    mon.close()


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_the_hf_logits_module_outputs_what_the_model_returns_as_logits(name):
    model = ZOO[name].build()
    (logits,) = gradwell.watch(model).history.columns["log_z_rms"]
    seen = []
    dict(model.named_modules())[logits].register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        out = model(input_ids=ids_batch(0)["input_ids"])
    torch.testing.assert_close(seen[-1], out.logits)


def test_sequential_logits_are_its_last_linear_and_can_be_named_or_switched_off():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax(-1))
    assert gradwell.watch(model).history.columns["log_z_rms"] == ["2"]
    assert gradwell.watch(model, logits="0").history.columns["log_z_rms"] == ["0"]
    assert gradwell.watch(model, logits=False).history.columns["log_z_rms"] == []
    with pytest.raises(ValueError, match="logits must be the qualified name"):
        gradwell.watch(model, logits="head")


def test_log_z_rms_matches_torch_logsumexp_at_the_sampled_positions():
    arch = ZOO["gpt2"]
    model, hist = _one_step(arch)
    with torch.no_grad():
        logits = model(input_ids=arch.batch(0)["input_ids"]).logits
    flat = logits.reshape(-1, logits.shape[-1])           # 8 x 16 = 128 positions
    ref = torch.logsumexp(flat[::2], -1).square().mean().sqrt()   # 64 evenly spaced
    assert hist.series("log_z_rms")[2][0, 0] == pytest.approx(float(ref), rel=1e-5)


def _hf_step(model, ids):
    """One recorded training step of a Hugging Face causal LM on ``ids`` (its own loss)."""
    mon = gradwell.watch(model)
    model(input_ids=ids, labels=ids).loss.backward()
    mon.step()
    mon.close()
    return mon


def _gpt2_reference(model, ids, scales=None):
    """max |q.k|/sqrt(d) (or times ``scales[i]`` at block i) per block from the hidden states,
    by hand (first 2 sequences)."""
    out = []
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
        for block, h in zip(model.transformer.h, hs):
            q, k, _ = block.attn.c_attn(block.ln_1(h[:2])).split(model.config.n_embd, -1)
            d = model.config.n_embd // model.config.n_head
            qh = q.reshape(2, -1, model.config.n_head, d).transpose(1, 2)
            kh = k.reshape(2, -1, model.config.n_head, d).transpose(1, 2)
            scale = 1 / math.sqrt(d) if scales is None else scales[len(out)]
            out.append(float((qh @ kh.transpose(-1, -2)).abs().max() * scale))
    return out


def test_attention_logits_of_gpt2_fused_c_attn_match_a_hand_computation():
    arch = ZOO["gpt2"]
    model, hist = _one_step(arch)
    steps, names, vals = hist.series("attention_logit_max")
    assert names == ["transformer.h.0.attn", "transformer.h.1.attn"]
    ref = _gpt2_reference(model, arch.batch(0)["input_ids"])
    assert vals[0].tolist() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("scale_weights, by_layer", [(True, True), (False, False)])
def test_attention_logits_use_the_scaling_the_model_applies(scale_weights, by_layer):
    """GPT-2's config can drop the 1/sqrt(d) (``scale_attn_weights=False``) or divide block i's
    logits by i + 1 (``scale_attn_by_inverse_layer_idx``, as in Mistral's GPT-2 runs): the
    statistic is the logit the softmax sees, by the config's own formula."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=3, n_head=4,
                     scale_attn_weights=scale_weights, scale_attn_by_inverse_layer_idx=by_layer,
                     embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg)
    ids = ids_batch(0)["input_ids"]
    mon = _hf_step(model, ids)
    d = 32 // 4
    scales = [(1 / math.sqrt(d) if scale_weights else 1.0) / (i + 1 if by_layer else 1)
              for i in range(3)]
    vals = mon.history.series("attention_logit_max")[2][0]
    assert vals.tolist() == pytest.approx(_gpt2_reference(model, ids, scales), rel=1e-5)
    assert [s["scale"] for s in mon.history.meta["attention_sites"]] == pytest.approx(scales)


def test_attention_logits_of_gemma2_use_its_query_pre_attn_scalar():
    """Gemma 2 scales q.k by query_pre_attn_scalar ** -0.5, not 1/sqrt(head_dim): with
    head_dim 8 and the default scalar 256 the softmax's logits are 5.7x smaller than
    q.k/sqrt(8), and reading them as q.k/sqrt(8) would raise a false alarm on healthy runs."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                       max_position_embeddings=64)
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(cfg)
    ids = torch.randint(0, 64, (4, 16))
    mon = _hf_step(model, ids)
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        h = model(input_ids=ids[:2], output_hidden_states=True).hidden_states[0]
        x = model.model.layers[0].input_layernorm(h)
        q = attn.q_proj(x).view(2, 16, 4, 8)                 # read before the rotary embedding
        k = attn.k_proj(x).view(2, 16, 2, 8).repeat_interleave(2, dim=2)
        qk = torch.einsum("bthd,buhd->bhtu", q, k).abs().max()
    got = mon.history.series("attention_logit_max")[2][0, 0]
    assert cfg.query_pre_attn_scalar == 256
    assert got == pytest.approx(float(qk) * 256 ** -0.5, rel=1e-5)


def test_attention_logits_of_llama_gqa_match_repeat_kv():
    arch = ZOO["llama"]
    model, hist = _one_step(arch)
    _, names, vals = hist.series("attention_logit_max")
    assert names == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    ids = arch.batch(0)["input_ids"][:2]
    cfg = model.config
    d = cfg.hidden_size // cfg.num_attention_heads
    ref = []
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
        for layer, h in zip(model.model.layers, hs):
            x = layer.input_layernorm(h)
            q = layer.self_attn.q_proj(x).reshape(2, -1, cfg.num_attention_heads, d)
            k = layer.self_attn.k_proj(x).reshape(2, -1, cfg.num_key_value_heads, d)
            k = k.repeat_interleave(cfg.num_attention_heads // cfg.num_key_value_heads, dim=2)
            logits = torch.einsum("bthd,buhd->bhtu", q, k)
            ref.append(float(logits.abs().max() / math.sqrt(d)))
    assert vals[0].tolist() == pytest.approx(ref, rel=1e-5)


def test_attention_logits_of_torch_multihead_attention_match_its_in_proj():
    arch = ZOO["encoder_preln"]
    model, hist = _one_step(arch)
    _, names, vals = hist.series("attention_logit_max")
    assert names == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    x = model.embed(arch.batch(0)["input_ids"][:2])
    ref = []
    with torch.no_grad():
        for layer in model.encoder.layers:
            a = layer.self_attn
            h = layer.norm1(x)
            w, b, e = a.in_proj_weight, a.in_proj_bias, a.embed_dim
            q = (h @ w[:e].T + b[:e]).reshape(2, -1, a.num_heads, a.head_dim)
            k = (h @ w[e:2 * e].T + b[e:2 * e]).reshape(2, -1, a.num_heads, a.head_dim)
            ref.append(float(torch.einsum("bthd,buhd->bhtu", q, k).abs().max()
                             / math.sqrt(a.head_dim)))
            x = layer(x)
    assert vals[0].tolist() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_logits_of_gradwell_tiny_transformer_match_its_in_proj(qk_norm):
    """gradwell.nn.TinyTransformer: q and k read at q_norm/k_norm (``nn.Identity`` without
    QK-layernorm, which then does not count as one), against in_proj by hand over all pairs
    of the first 2 sequences."""
    torch.manual_seed(0)
    model = gradwell.nn.TinyTransformer(10, 6, d_model=16, heads=2, layers=1, qk_norm=qk_norm)
    with torch.no_grad():
        model.blocks[0].attn.in_proj.weight[:32].mul_(20.0)       # large, distinct logits
    x = torch.randint(0, 10, (4, 6))
    mon = gradwell.watch(model)
    nn.functional.cross_entropy(model(x), x).backward()
    mon.step()
    mon.close()
    hist = mon.history
    assert [(s["qk_norm"], s["q_heads"]) for s in hist.meta["attention_sites"]] == [(qk_norm, 2)]
    attn = model.blocks[0].attn
    with torch.no_grad():
        h = model.blocks[0].norm1(model.embed(x[:2]) + model.pos)
        q, k, _ = attn.in_proj(h).split(16, -1)
        q, k = attn.q_norm(q.view(2, 6, 2, 8)), attn.k_norm(k.view(2, 6, 2, 8))
        ref = torch.einsum("bthd,buhd->bhtu", q, k).abs().max() / math.sqrt(8)
    assert hist.series("attention_logit_max")[2][0, 0] == pytest.approx(float(ref), rel=1e-5)


def test_attention_logits_of_gemma3_read_after_its_heads_first_qk_norm():
    """Gemma 3 normalises q and k per head after moving the heads first, ``(B, H, T, d)``
    (Qwen 3 before: ``(B, T, H, d)``); grouped-query attention with 4 query, 2 key heads."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=8, max_position_embeddings=64, sliding_window=16)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg)
    ids = torch.randint(0, 64, (4, 16))
    mon = _hf_step(model, ids)
    (site,) = mon.history.meta["attention_sites"]
    assert (site["q"], site["qk_norm"], site["q_heads"], site["k_heads"]) == (
        "model.layers.0.self_attn.q_norm", True, 4, 2)
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        h = model(input_ids=ids[:2], output_hidden_states=True).hidden_states[0]
        x = model.model.layers[0].input_layernorm(h)
        q = attn.q_norm(attn.q_proj(x).view(2, 16, 4, 8))
        k = attn.k_norm(attn.k_proj(x).view(2, 16, 2, 8)).repeat_interleave(2, dim=2)
        ref = torch.einsum("bthd,buhd->bhtu", q, k).abs().max() * cfg.query_pre_attn_scalar ** -0.5
    got = mon.history.series("attention_logit_max")[2][0, 0]
    assert got == pytest.approx(float(ref), rel=1e-5)


def test_bert_query_key_sites_and_no_sites_without_attention():
    _, hist = _one_step(ZOO["bert"])
    assert hist.series("attention_logit_max")[1] == [
        "bert.encoder.layer.0.attention.self", "bert.encoder.layer.1.attention.self"]
    assert all(math.isfinite(v) for v in hist.series("attention_logit_max")[2][0])
    _, hist = _one_step(ZOO["resnet_bn"])
    assert hist.columns["attention_logit_max"] == []


def _adam_run(loss_scale: float, steps: int = 3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    mon = gradwell.watch(model, optimizer=opt, update_every=1)
    cos = []
    for _ in range(steps):
        loss = loss_scale * nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        g = [p.grad.clone() for p in model.parameters()]
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        dw = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(model.parameters(), before)])
        gg = torch.cat([x.reshape(-1) for x in g])
        cos.append(float(torch.nn.functional.cosine_similarity(dw, -gg, dim=0)))
    mon.close()
    return model, opt, mon, cos, gg


def test_adam_update_cosine_matches_torch_and_the_first_step_closed_form():
    model, opt, mon, cos, _ = _adam_run(1.0)
    got = mon.history.series("update_cosine")[2][:, 0]
    assert got.tolist() == pytest.approx(cos, rel=1e-4)
    _, _, mon1, _, g = _adam_run(1.0, steps=1)
    # Adam's first step is -lr g / (|g| + eps) ~ -lr sign(g): cos = ||g||_1 / (sqrt(n) ||g||_2)
    closed = float(g.abs().sum() / (math.sqrt(g.numel()) * g.norm()))
    assert mon1.history.series("update_cosine")[2][0, 0] == pytest.approx(closed, rel=1e-4)


def test_adam_eps_share_matches_the_optimizer_state_and_fires_on_tiny_gradients():
    model, opt, mon, _, _ = _adam_run(1e-12, steps=6)
    share = mon.history.series("adam_eps_share")[2][-1]
    for j, layer in enumerate((model[0], model[2])):
        v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in layer.parameters()])
        t = float(opt.state[layer.weight]["step"])
        ref = float(((v / (1 - 0.999 ** t)).sqrt() < 1e-8).double().mean())
        assert ref > 0.9                                  # torch: the gradients are ~1e-12
        assert share[j] == pytest.approx(ref)
    f = [f for f in mon.findings() if f.kind == "adam_epsilon"]
    assert f and f[0].severity == "warning" and "(threshold 50%)" in f[0].message
    _, _, healthy, _, _ = _adam_run(1.0, steps=6)
    assert not [f for f in healthy.findings() if f.kind == "adam_epsilon"]
    assert healthy.history.series("adam_eps_share")[2][-1].max() == 0.0


def test_no_adam_columns_without_an_adam_optimizer():
    model = nn.Sequential(nn.Linear(4, 3))
    mon = gradwell.watch(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert "update_cosine" not in mon.history.columns
    assert "update_cosine" not in gradwell.watch(model).history.columns


def test_adam_eps_share_with_tensor_betas_equals_the_float_betas_run():
    """torch accepts Tensor betas; the statistic uses them as they are and gives the numbers
    of the same run with float betas."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    shares = []
    for betas in [(0.9, 0.999), (torch.tensor(0.9), torch.tensor(0.999))]:
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
        model.load_state_dict(base.state_dict())
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=betas, eps=1e-2)
        mon = gradwell.watch(model, optimizer=opt)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        mon.close()
        shares.append(mon.history.series("adam_eps_share")[2][0].tolist())
    assert 0 < shares[0][0] < 1 and shares[0] == shares[1]
