"""Attention-logit sites whose queries, keys and values come out of one projection laid out
``[q | k | v]`` or in groups: Phi-3 (``qkv_proj``, grouped-query), ModernBERT and MPT
(``Wqkv``; MPT with its own ``softmax_scale``) and Falcon's multi-query (one key head) and
grouped (new decoder architecture) ``query_key_value``. Each recorded ``attention_logit_max``
is checked against q and k split from the projection's output by the model's own code where it
has one (Falcon's ``_split_heads``), else by its documented layout, and scaled by the
config."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers as hf
from torch import nn

from test_attention_sites import T, V, watched_step

H, D = 4, 8


def _phi3() -> tuple[nn.Module, dict]:
    cfg = hf.Phi3Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=H, num_key_value_heads=2,
                        max_position_embeddings=64, pad_token_id=0)
    return hf.Phi3ForCausalLM(cfg), {"layout": "slices", "kv": 2, "scale": D ** -0.5}


def _modernbert() -> tuple[nn.Module, dict]:
    cfg = hf.ModernBertConfig(vocab_size=V, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=H,
                              max_position_embeddings=64, pad_token_id=0, local_attention=8)
    return hf.ModernBertForMaskedLM(cfg), {"layout": "thirds_3hd", "kv": H, "scale": D ** -0.5}


def _mpt() -> tuple[nn.Module, dict]:
    cfg = hf.MptConfig(vocab_size=V, d_model=32, n_heads=H, n_layers=2, max_seq_len=64,
                       attn_config={"softmax_scale": 0.2})
    return hf.MptForCausalLM(cfg), {"layout": "chunks", "kv": H, "scale": 0.2}


def _falcon(grouped: bool) -> Any:
    def build() -> tuple[nn.Module, dict]:
        kw = dict(new_decoder_architecture=True, num_kv_heads=2) if grouped else {}
        cfg = hf.FalconConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=H, multi_query=True, **kw)
        return hf.FalconForCausalLM(cfg), {"layout": "falcon", "kv": 2 if grouped else 1,
                                           "scale": D ** -0.5}
    return build


def _qk(module: nn.Module, out: torch.Tensor, layout: str, kv: int
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k ``(2, T, H, d)`` (key heads repeated for their query heads, as Llama's
    ``repeat_kv``) from the fused projection's output ``out`` of the attention ``module``."""
    if layout == "falcon":                        # the model's own split
        q, k, _ = module._split_heads(out)
        q = q.reshape(2, T, H, D)
        k = k.reshape(2, T, -1, D)
    elif layout == "slices":                      # Phi3Attention: slices of H d, kv d, kv d
        q, k = out[..., :H * D].view(2, T, H, D), out[..., H * D:(H + kv) * D].view(2, T, kv, D)
    elif layout == "thirds_3hd":                  # ModernBertAttention: view(..., 3, H, d)
        q, k, _ = out.view(2, T, 3, H, D).unbind(dim=-3)
    else:                                         # MptAttention: chunk(3, dim=2)
        q, k, _ = (x.reshape(2, T, H, D) for x in out.chunk(3, dim=2))
    return q, k.repeat_interleave(H // k.shape[2], dim=2)


@pytest.mark.parametrize("build", [_phi3, _modernbert, _mpt, _falcon(False), _falcon(True)],
                         ids=["phi3", "modernbert", "mpt", "falcon_multi_query",
                              "falcon_grouped"])
def test_attention_logit_max_of_fused_qkv_projections_matches_the_models_split(build):
    model, spec, ids, mon = watched_step(build)
    sites = mon.history.meta["attention_sites"]
    assert len(sites) == 2                        # one per layer, none missed
    mods, outs = dict(model.named_modules()), {}

    def keep(name: str) -> Any:
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            outs.setdefault(name, out.detach())
        return hook
    for site in sites:
        mods[site["q"]].register_forward_hook(keep(site["q"]))
    with torch.no_grad():
        model(input_ids=ids[:2], labels=ids[:2])   # the statistic reads the first 2 sequences
    ref = []
    for site in sites:
        q, k = _qk(mods[site["name"]], outs[site["q"]], spec["layout"], spec["kv"])
        ref.append(float(torch.einsum("bthd,buhd->bhtu", q, k).abs().max()) * spec["scale"])
    got = mon.history.series("attention_logit_max")[2][0]
    assert got.tolist() == pytest.approx(ref, rel=1e-4)
    assert [s["scale"] for s in sites] == pytest.approx([spec["scale"]] * 2)
    assert [(s["q_heads"], s["k_heads"]) for s in sites] == [(H, spec["kv"])] * 2
