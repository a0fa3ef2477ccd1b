"""``TinyTransformer``: each block against ``torch.nn.TransformerEncoderLayer`` (post-LN and
pre-LN, causal mask), causality, QK-layernorm bounding the attention logits, and the layout."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradwell.nn import TinyTransformer, TransformerBlock


def _torch_layer(block: TransformerBlock, d: int, heads: int, ff: int, pre: bool) -> nn.Module:
    ref = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True,
                                     norm_first=pre).double().eval()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(block.attn.in_proj.weight)
        ref.self_attn.in_proj_bias.copy_(block.attn.in_proj.bias)
        ref.self_attn.out_proj.weight.copy_(block.attn.out_proj.weight)
        ref.self_attn.out_proj.bias.copy_(block.attn.out_proj.bias)
        for mine, theirs in ((block.ff1, ref.linear1), (block.ff2, ref.linear2),
                             (block.norm1, ref.norm1), (block.norm2, ref.norm2)):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    return ref


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_block_matches_torch_transformer_encoder_layer(norm):
    torch.manual_seed(0)
    d, heads, ff, t = 8, 2, 16, 5
    block = TransformerBlock(d, heads, ff, norm, qk_norm=False).double()
    ref = _torch_layer(block, d, heads, ff, norm == "pre")
    x = torch.randn(3, t, d, dtype=torch.float64)
    mask = nn.Transformer.generate_square_subsequent_mask(t, dtype=torch.float64)
    torch.testing.assert_close(block(x), ref(x, src_mask=mask, is_causal=True))


def test_the_model_is_causal_and_returns_vocab_by_position():
    torch.manual_seed(1)
    model = TinyTransformer(11, 7, d_model=8, heads=2, layers=2, norm="post").eval()
    x = torch.randint(0, 11, (2, 7))
    y = x.clone()
    y[:, 4:] = (y[:, 4:] + 1) % 11                 # change the future only
    out_x, out_y = model(x), model(y)
    assert out_x.shape == (2, 11, 7)
    torch.testing.assert_close(out_x[:, :, :4], out_y[:, :, :4])
    assert not torch.allclose(out_x[:, :, 4:], out_y[:, :, 4:])


def test_qk_norm_bounds_the_attention_logits_and_max_logit_is_recorded():
    torch.manual_seed(2)
    d, heads = 16, 2
    plain = TinyTransformer(10, 6, d_model=d, heads=heads, layers=1, qk_norm=False)
    normed = TinyTransformer(10, 6, d_model=d, heads=heads, layers=1, qk_norm=True)
    normed.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():                           # blow up the query/key projections
        for m in (plain, normed):
            m.blocks[0].attn.in_proj.weight[: 2 * d].mul_(50.0)
    x = torch.randint(0, 10, (4, 6))
    plain(x)
    normed(x)
    # with unit-RMS queries and keys (LayerNorm, weight 1, bias 0), |q.k| / sqrt(h) <= sqrt(h)
    assert normed.max_attention_logit() <= math.sqrt(d // heads) + 1e-4
    assert plain.max_attention_logit() > 10 * math.sqrt(d // heads)
    attn = plain.blocks[0].attn
    with torch.no_grad():                           # the recorded value, recomputed by hand
        h = plain.embed(x) + plain.pos[:6]
        q, k, _ = attn.in_proj(plain.blocks[0].norm1(h)).split(d, dim=2)
        q = q.view(4, 6, heads, -1).transpose(1, 2)
        k = k.view(4, 6, heads, -1).transpose(1, 2)
        logits = (q @ k.transpose(-2, -1) / math.sqrt(d // heads)).tril()
    assert attn.max_logit.item() == pytest.approx(logits.abs().max().item(), rel=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"^heads must be a divisor of d_model=10, got 3$"):
        TinyTransformer(10, 4, d_model=10, heads=3)
    with pytest.raises(ValueError, match="norm"):
        TinyTransformer(10, 4, norm="sandwich")


def test_qk_norm_attention_matches_torch_sdpa_on_layer_normed_queries_and_keys():
    """QK-layernorm (Dehghani et al. 2023): ``softmax(LN(q) LN(k)^T / sqrt(h)) v`` per head,
    against ``F.layer_norm`` + ``F.scaled_dot_product_attention(is_causal=True)``, with the
    LayerNorms' affine parameters away from their (1, 0) start."""
    torch.manual_seed(4)
    d, heads, t = 12, 3, 5
    h = d // heads
    attn = TinyTransformer(7, t, d_model=d, heads=heads, layers=1,
                           qk_norm=True).blocks[0].attn.double()
    with torch.no_grad():
        for ln in (attn.q_norm, attn.k_norm):
            ln.weight.uniform_(0.5, 2.0)
            ln.bias.normal_()
    x = torch.randn(2, t, d, dtype=torch.float64)
    q, k, v = (z.view(2, t, heads, h).transpose(1, 2)
               for z in nn.functional.linear(x, attn.in_proj.weight, attn.in_proj.bias).split(d, 2))
    q = nn.functional.layer_norm(q, (h,), attn.q_norm.weight, attn.q_norm.bias)
    k = nn.functional.layer_norm(k, (h,), attn.k_norm.weight, attn.k_norm.bias)
    ref = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref = nn.functional.linear(ref.transpose(1, 2).reshape(2, t, d), attn.out_proj.weight,
                               attn.out_proj.bias)
    torch.testing.assert_close(attn(x), ref)
