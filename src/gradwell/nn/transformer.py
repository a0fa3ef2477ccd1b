"""A tiny decoder-only transformer language model: post-LN or pre-LN, optional QK-layernorm.

Each block is multi-head causal self-attention and a two-layer ReLU feed-forward net, arranged
as in Vaswani et al. 2017 (post-LN, ``x = LN(x + f(x))``) or with the normalisation moved to the
start of each residual branch (pre-LN, ``x = x + f(LN(x))``, plus a final LayerNorm; Xiong et
al. 2020, "On layer normalization in the transformer architecture"). Both match
``torch.nn.TransformerEncoderLayer`` (``norm_first`` False / True, ReLU, no dropout) with a
causal mask. ``qk_norm`` applies LayerNorm to the queries and keys of every head before their
dot product (Dehghani et al. 2023; Wortsman et al. 2023, "Small-scale proxies for large-scale
transformer training instabilities"), which bounds the attention logits.

Every attention layer keeps the largest absolute attention logit of its last forward pass in
``max_logit`` (a detached 0-dim tensor): the quantity whose growth Wortsman et al. track.
The model maps tokens ``(batch, T)`` to logits ``(batch, vocab, T)`` -- the layout
``nn.CrossEntropyLoss`` takes for per-position targets ``(batch, T)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._checks import check_int, invalid
from .init import check_choice

__all__ = ["TinyTransformer", "TransformerBlock", "CausalSelfAttention", "NORM_POSITIONS"]

NORM_POSITIONS = ("post", "pre")


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with torch's parameter layout (``in_proj`` packs the
    query, key and value projections); ``qk_norm`` adds LayerNorm over each head's queries
    and keys."""

    def __init__(self, d_model: int, heads: int, qk_norm: bool = False) -> None:
        super().__init__()
        if d_model % heads:
            raise invalid("heads", f"a divisor of d_model={d_model}", heads)
        self.heads, self.head_dim = heads, d_model // heads
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.register_buffer("max_logit", torch.zeros(()), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, self.head_dim).transpose(1, 2)
                   for z in self.in_proj(x).split(d, dim=2))
        q, k = self.q_norm(q), self.k_norm(k)
        logits = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        logits = logits.masked_fill(causal, float("-inf"))
        self.max_logit = logits.detach().masked_fill(causal, 0.0).abs().amax()
        out = torch.softmax(logits, dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    """Attention and feed-forward sublayers, post-LN or pre-LN (see the module docstring)."""

    def __init__(self, d_model: int, heads: int, ff: int, norm: str, qk_norm: bool) -> None:
        super().__init__()
        check_choice("norm", norm, NORM_POSITIONS)
        self.pre = norm == "pre"
        self.attn = CausalSelfAttention(d_model, heads, qk_norm)
        self.ff1, self.ff2 = nn.Linear(d_model, ff), nn.Linear(ff, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)

    def _ff(self, x: Tensor) -> Tensor:
        return self.ff2(torch.relu(self.ff1(x)))

    def forward(self, x: Tensor) -> Tensor:
        if self.pre:
            x = x + self.attn(self.norm1(x))
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self._ff(x))


class TinyTransformer(nn.Module):
    """Token and learned position embeddings, ``layers`` blocks, (pre-LN: a final LayerNorm,)
    a linear head over the vocabulary.

    Args:
        vocab: tokens; seq_len: the longest sequence.
        d_model, heads, layers: width, attention heads, blocks (each >= 1).
        ff: feed-forward width (default ``4 * d_model``).
        norm: ``post`` or ``pre``; qk_norm: LayerNorm on queries and keys.
    """

    def __init__(self, vocab: int, seq_len: int, d_model: int = 32, heads: int = 2,
                 layers: int = 2, ff: int | None = None, norm: str = "pre",
                 qk_norm: bool = False) -> None:
        super().__init__()
        check_choice("norm", norm, NORM_POSITIONS)
        for name, v in (("vocab", vocab), ("seq_len", seq_len), ("d_model", d_model),
                        ("heads", heads), ("layers", layers)):
            check_int(name, v)
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, heads, ff or 4 * d_model, norm,
                                                     qk_norm) for _ in range(layers))
        self.final_norm = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.final_norm(h)).transpose(1, 2)

    def max_attention_logit(self) -> float:
        """The largest absolute attention logit of the last forward pass, over all layers."""
        return max(b.attn.max_logit.item() for b in self.blocks)
