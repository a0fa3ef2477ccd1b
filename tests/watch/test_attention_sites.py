"""Attention-logit sites of Hugging Face architectures beyond the zoo: GPT-NeoX (Pythia), BLOOM
and Falcon (a fused per-head ``query_key_value``), DistilBERT (``q_lin``/``k_lin``) and T5
(``q``/``k``, unscaled, with cross-attention). Each recorded ``attention_logit_max`` is checked
against q and k computed here from the module's weights by the model's own layout and scaled by
its config's formula."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers as hf
from torch import nn

import gradwell

V, T, B = 64, 16, 4


def _neox() -> tuple[nn.Module, dict]:
    cfg = hf.GPTNeoXConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64,
                           max_position_embeddings=64)
    return hf.GPTNeoXForCausalLM(cfg), {"layout": "neox", "scale": 8 ** -0.5, "sites": 2}


def _bloom() -> tuple[nn.Module, dict]:
    cfg = hf.BloomConfig(vocab_size=V, hidden_size=32, n_layer=2, n_head=4)
    return hf.BloomForCausalLM(cfg), {"layout": "per_head", "scale": 8 ** -0.5, "sites": 2}


def _falcon() -> tuple[nn.Module, dict]:
    cfg = hf.FalconConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, multi_query=False)
    return hf.FalconForCausalLM(cfg), {"layout": "per_head", "scale": 8 ** -0.5, "sites": 2}


def _distilbert() -> tuple[nn.Module, dict]:
    cfg = hf.DistilBertConfig(vocab_size=V, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                              max_position_embeddings=64)
    return hf.DistilBertForMaskedLM(cfg), {"layout": "split", "scale": 8 ** -0.5, "sites": 2}


def _deberta(relative: bool) -> Any:
    """DeBERTa-v2 (v3's defaults: relative attention, p2c + c2p, shared position keys): the
    content logit is q.k / sqrt(3 d); its query_proj/key_proj also project the relative
    position embeddings after the content q and k, which must not be read as a second pair."""
    def build() -> tuple[nn.Module, dict]:
        kw = (dict(relative_attention=True, pos_att_type=["p2c", "c2p"], share_att_key=True)
              if relative else {})
        cfg = hf.DebertaV2Config(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64,
                                 max_position_embeddings=64, **kw)
        scale = (8 * 3) ** -0.5 if relative else 8 ** -0.5
        return hf.DebertaV2ForMaskedLM(cfg), {"layout": "split", "scale": scale, "sites": 2}
    return build


def _t5() -> tuple[nn.Module, dict]:
    cfg = hf.T5Config(vocab_size=V, d_model=32, d_kv=6, d_ff=64, num_layers=2, num_heads=4,
                      decoder_start_token_id=0)   # d_kv 6, not d_model / heads = 8
    return hf.T5ForConditionalGeneration(cfg), {"layout": "split", "scale": 1.0, "sites": 6}


def _qk(model: nn.Module, site: dict, inputs: dict[str, torch.Tensor], layout: str
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """q ``(2, T, H, d)`` and k ``(2, Tk, H, d)`` of a site from the inputs of its q and k
    modules, by the model's own layout."""
    mods = dict(model.named_modules())
    h, d = site["q_heads"], site["head_dim"]
    if layout == "split":
        q = mods[site["q"]](inputs[site["q"]])
        k = mods[site["k"]](inputs[site["k"]])
        return q.view(2, -1, h, d), k.view(2, -1, h, d)
    out = mods[site["q"]](inputs[site["q"]])
    if layout == "neox":          # GPTNeoXAttention: view(..., H, 3 d), then chunk(3, -1)
        q, k, _ = out.view(2, -1, h, 3 * d).chunk(3, dim=-1)
        return q, k
    out = out.view(2, -1, h, 3, d)  # BloomAttention / FalconAttention: (B, T, H, 3, d)
    return out[..., 0, :], out[..., 1, :]


def watched_step(build: Any) -> tuple[nn.Module, dict, torch.Tensor, Any]:
    """``build()``'s model (in eval mode: no dropout, so a reference forward sees the same),
    its spec, a batch of ids and the closed monitor of one watched step on them."""
    torch.manual_seed(0)
    model, spec = build()
    model.eval()
    ids = torch.randint(1, V, (B, T))
    mon = gradwell.watch(model)
    model(input_ids=ids, labels=ids).loss.backward()
    mon.step()
    mon.close()
    return model, spec, ids, mon


@pytest.mark.parametrize("build", [_neox, _bloom, _falcon, _distilbert, _t5, _deberta(True),
                                   _deberta(False)],
                         ids=["gpt_neox", "bloom", "falcon", "distilbert", "t5",
                              "deberta_v2_relative", "deberta_v2"])
def test_attention_logit_max_of_more_hf_architectures_matches_their_own_layout(build):
    model, spec, ids, mon = watched_step(build)
    sites = mon.history.meta["attention_sites"]
    assert len(sites) == spec["sites"]
    inputs: dict[str, torch.Tensor] = {}
    mods = dict(model.named_modules())
    def first_input(name: str) -> Any:             # the first call: DeBERTa's content q, k
        def hook(module: nn.Module, args: tuple) -> None:
            inputs.setdefault(name, args[0])
        return hook
    for name in {s["q"] for s in sites} | {s["k"] for s in sites}:
        mods[name].register_forward_pre_hook(first_input(name))
    with torch.no_grad():
        model(input_ids=ids[:2], labels=ids[:2])   # the statistic reads the first 2 sequences
        ref = []
        for site in sites:
            q, k = _qk(model, site, inputs, spec["layout"])
            logits = torch.einsum("bthd,buhd->bhtu", q, k)
            ref.append(float(logits.abs().max()) * spec["scale"])
    got = mon.history.series("attention_logit_max")[2][0]
    assert got.tolist() == pytest.approx(ref, rel=1e-4)
    assert [s["scale"] for s in sites] == pytest.approx([spec["scale"]] * len(sites))


def test_unknown_fused_layouts_get_no_site():
    """A ``query_key_value`` outside the known classes is not read as q, k, v (Falcon's
    multi-query and grouped layouts are read by their own split:
    tests/watch/test_fused_qkv_sites.py)."""
    class Custom(nn.Module):
        head_dim, num_heads = 8, 4

        def __init__(self) -> None:
            super().__init__()
            self.query_key_value = nn.Linear(32, 96)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.query_key_value(x)

    mon = gradwell.watch(nn.Sequential(Custom(), nn.Linear(96, 2)))
    assert mon.history.meta["attention_sites"] == []
    mon.close()


def test_t5_cross_attention_reads_decoder_queries_against_encoder_keys():
    torch.manual_seed(0)
    model, _ = _t5()
    mon = gradwell.watch(model)
    names = [s["name"] for s in mon.history.meta["attention_sites"]]
    mon.close()
    assert names == ["encoder.block.0.layer.0.SelfAttention",
                     "encoder.block.1.layer.0.SelfAttention",
                     "decoder.block.0.layer.0.SelfAttention",
                     "decoder.block.0.layer.1.EncDecAttention",
                     "decoder.block.1.layer.0.SelfAttention",
                     "decoder.block.1.layer.1.EncDecAttention"]
