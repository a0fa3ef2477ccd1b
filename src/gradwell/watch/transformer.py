"""The statistics of a model's logits and attention logits, cheaply.

Two failures of modern networks (Wortsman et al. 2023, *Small-scale proxies for large-scale
Transformer training instabilities*) are seen in the forward pass:

* **output-logit divergence** — ``log Z = logsumexp(logits)`` drifts far from 0 (PaLM's
  z-loss, Chowdhery et al. 2022, adds ``1e-4 log^2 Z`` to keep it there). Recorded as
  ``log_z_rms``: the RMS of ``log Z`` over up to :data:`POSITIONS` evenly spaced positions of
  the batch, at the *logits module* (:func:`gradwell.watch.sites.find_logits`);
* **attention-logit growth** — ``q.k / sqrt(d)`` grows until the softmax is one-hot
  (Dehghani et al. 2023; entropy collapse, Zhai et al. 2023). Recorded as
  ``attention_logit_max``: ``max |q.k| * scale`` (the logit the softmax sees: ``scale`` is the
  module's own softmax scaling, Hugging Face's ``scaling`` attribute, e.g. Gemma 2's
  ``query_pre_attn_scalar ** -0.5`` or GPT-2's ``1 / (sqrt(d) (layer + 1))`` with
  ``scale_attn_by_inverse_layer_idx``; else ``1 / sqrt(d_head)``) over all heads and all
  pairs of up to :data:`ATTN_POSITIONS` positions of the first :data:`SEQUENCES` sequences
  (the causal mask is ignored: masked pairs have logits of the same scale), per attention
  module (:func:`gradwell.watch.sites.find_attention`); averaged over micro-batches and
  ranks.

Both are measured by forward hooks on recorded steps only, on a subsample, so they cost a few
small kernels per step whatever the batch.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .sites import Site

__all__ = ["LogitStats", "max_qk", "mha_qk", "register_hooks", "POSITIONS",
           "ATTN_POSITIONS", "SEQUENCES"]

#: positions (tokens) of the batch whose log Z is measured, evenly spaced
POSITIONS = 64
#: positions per sequence whose attention logits are measured, evenly spaced
ATTN_POSITIONS = 32
#: sequences of the batch whose attention logits are measured
SEQUENCES = 2


def _positions(t: Tensor, dim: int, n: int = POSITIONS) -> Tensor:
    """Up to ``n`` evenly spaced entries of ``t`` along ``dim`` (a view)."""
    index: list[Any] = [slice(None)] * t.dim()
    index[dim] = slice(0, None, max(1, math.ceil(t.shape[dim] / n)))
    return t[tuple(index)]


def _tokens_first(t: Tensor, heads: int | None) -> Tensor:
    """A heads-first ``(B, H, T, d)`` query or key tensor as ``(B, T, H, d)`` (a view); any
    other (batch-first, or ``T == H``) as it is."""
    if t.dim() == 4 and heads is not None and t.shape[1] == heads != t.shape[2]:
        return t.transpose(1, 2)
    return t


def _sample(t: Tensor) -> Tensor:
    """``(S, P, F)``: the first :data:`SEQUENCES` sequences of a batch-first ``(B, T, F)``
    (or unbatched ``(T, F)``) output, at up to :data:`ATTN_POSITIONS` positions."""
    t = t.unsqueeze(0) if t.dim() == 2 else t[:SEQUENCES]
    return _positions(t, 1, ATTN_POSITIONS).reshape(t.shape[0], -1, math.prod(t.shape[2:]))


def max_qk(q: Tensor, k: Tensor, head_dim: int, scale: float) -> Tensor:
    """``max |q.k| * scale`` over heads and position pairs, as a float64 scalar.

    ``q``: ``(S, P, Hq * d)``, ``k``: ``(S, P, Hk * d)``; grouped-query attention (``Hk``
    divides ``Hq``): query head ``h`` meets key head ``h // (Hq / Hk)``, as in Llama."""
    s, p, pk = q.shape[0], q.shape[1], k.shape[1]
    kh = k.float().reshape(s, pk, -1, head_dim)                    # (S, Pk, Hk, d)
    hk = kh.shape[2]
    qh = q.float().reshape(s, p, hk, -1, head_dim)                 # (S, P, Hk, G, d)
    qh = qh.permute(0, 2, 3, 1, 4).reshape(s, hk, -1, head_dim)    # (S, Hk, G*P, d)
    logits = qh @ kh.permute(0, 2, 3, 1)                           # (S, Hk, G*P, Pk)
    return (logits.abs().amax() * scale).to(torch.float64)


@torch.no_grad()
def mha_qk(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> tuple[Tensor, Tensor]:
    """The sampled queries and keys of an ``nn.MultiheadAttention`` call, projected again with
    its weights (``in_proj_weight`` or ``q_proj_weight``/``k_proj_weight``)."""
    query = args[0] if args else kwargs["query"]
    key = args[1] if len(args) > 1 else kwargs.get("key", query)
    if not module.batch_first and query.dim() == 3:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    e = module.embed_dim
    if module._qkv_same_embed_dim:
        wq, wk = module.in_proj_weight[:e], module.in_proj_weight[e:2 * e]
    else:
        wq, wk = module.q_proj_weight, module.k_proj_weight
    b = module.in_proj_bias
    bq, bk = (b[:e], b[e:2 * e]) if b is not None else (None, None)
    return (nn.functional.linear(_sample(query), wq, bq),
            nn.functional.linear(_sample(key), wk, bk))


class LogitStats:
    """Sums of one recorded step: ``log Z`` squares at the logits module, attention maxima
    (device tensors), and how many values each holds (host numbers: no transfer)."""

    def __init__(self) -> None:
        self.log_z: dict[str, Tensor] = {}      # sum of log Z^2 over sampled positions
        self.log_z_count: dict[str, int] = {}
        self.attn: dict[str, Tensor] = {}       # sum of per-forward maxima
        self.attn_count: dict[str, int] = {}
        self._waiting: dict[str, dict[str, Tensor]] = {}

    def on_logits(self, name: str, t: Tensor) -> None:
        """Add ``log Z`` of up to :data:`POSITIONS` positions of logits ``t`` (``(..., V)``)."""
        flat = _positions(t.detach().reshape(-1, t.shape[-1]), 0)
        lz = torch.logsumexp(flat.float(), dim=-1)
        _add(self.log_z, self.log_z_count, name, lz.square().sum().to(torch.float64),
             lz.numel())

    def on_qk(self, site: Site, q: Tensor, k: Tensor) -> None:
        value = max_qk(q, k, site.head_dim, site.logit_scale)
        _add(self.attn, self.attn_count, site.name, value, 1)

    def open(self, site: Site) -> None:
        """A call of a ``"split"`` site's attention module begins: its first q and first k
        are its queries and keys (DeBERTa-v2 projects its relative-position embeddings with
        the same modules afterwards)."""
        self._waiting[site.name] = {}

    def on_part(self, site: Site, part: str, t: Tensor) -> None:
        """One of q and k (``part``) of a ``"split"`` site; measured when both have come."""
        got = self._waiting.get(site.name)
        if got is None or part in got:
            return                    # not the first q (or k) of this call of the module
        got[part] = _sample(_tokens_first(t.detach(), site.q_heads if part == "q"
                                          else site.k_heads))
        if "q" in got and "k" in got:
            del self._waiting[site.name]
            self.on_qk(site, got["q"], got["k"])

    def on_fused(self, site: Site, t: Tensor) -> None:
        """One output holding q, k and v: ``"fused"``, ``(B, T, F)`` as ``[q | k | v]`` (GPT-2's
        ``c_attn`` in thirds; ``q_heads * d`` and ``k_heads * d`` features where the site has
        heads, as Phi-3's ``qkv_proj``), or ``"fused_heads"``, ``(B, T, Hk * (G + 2) * d)`` as
        each key head's ``G = q_heads / k_heads`` query heads, key and value (GPT-NeoX's
        ``query_key_value``: ``G = 1``)."""
        s, d = _sample(t.detach()), site.head_dim
        if site.kind == "fused_heads":
            g = (site.q_heads or 1) // (site.k_heads or site.q_heads or 1)
            groups = s.reshape(*s.shape[:-1], -1, g + 2, d)           # (S, P, Hk, G + 2, d)
            self.on_qk(site, groups[..., :g, :].flatten(-3), groups[..., g, :].flatten(-2))
            return
        e = site.q_heads * d if site.q_heads else s.shape[-1] // 3
        ek = site.k_heads * d if site.k_heads else e
        self.on_qk(site, s[..., :e], s[..., e:e + ek])

    def sums(self, logits: list[str], sites: list[Site], device: torch.device
             ) -> dict[str, Tensor]:
        """Sums and counts in column order, float64 on ``device``, to be added over ranks:
        ``log_z``/``log_z_n`` (one per logits module), ``attn``/``attn_n`` (one per site). A
        count of 0 (the hook did not fire) makes the statistic NaN."""
        z = torch.zeros((), dtype=torch.float64, device=device)
        names = [s.name for s in sites]
        parts = [self.log_z.get(n, z).to(device) for n in logits]
        parts += [self.attn.get(n, z).to(device) for n in names]
        counts = ([float(self.log_z_count.get(n, 0)) for n in logits]
                  + [float(self.attn_count.get(n, 0)) for n in names])
        if not counts:
            f64 = torch.zeros(0, dtype=torch.float64, device=device)
            return {"log_z": f64, "log_z_n": f64, "attn": f64, "attn_n": f64}
        vals = torch.stack(parts)
        host = torch.tensor(counts, dtype=torch.float64).to(device)
        k = len(logits)
        return {"log_z": vals[:k], "log_z_n": host[:k], "attn": vals[k:], "attn_n": host[k:]}


def _add(store: dict[str, Tensor], count: dict[str, int], name: str, value: Tensor,
         n: int) -> None:
    if name in store:
        store[name] = store[name] + value
        count[name] += n
    else:
        store[name], count[name] = value, n


def register_hooks(index: Any, stats: Callable[[], LogitStats], armed: Callable[[], bool],
                   hooked: set[str] = frozenset()) -> list[Any]:
    """Forward hooks on the logits module (unless it is in ``hooked``: the monitor's own
    hook on it calls :meth:`LogitStats.on_logits`) and on each attention site's q/k modules
    of ``index`` (a ``LayerIndex``); each adds to ``stats()`` (the recorded step's
    :class:`LogitStats`) when ``armed()``. Returns the hook handles."""
    handles = []

    def on(module: nn.Module, fn: Callable[..., None], kwargs: bool = False) -> None:
        def hook(mod: nn.Module, *args: Any) -> None:
            if armed():
                fn(*args)
        handles.append(module.register_forward_hook(hook, with_kwargs=kwargs))

    def logits(name: str) -> Callable[..., None]:
        return lambda inputs, output: _if_float(output, lambda t: stats().on_logits(name, t))

    for name in index.logits:
        if name not in hooked:
            on(index.by_name[name], logits(name))
    for site in index.attention:
        if site.kind == "mha":
            on(index.by_name[site.name],
               lambda args, kwargs, out, s=site, m=index.by_name[site.name]:
               stats().on_qk(s, *mha_qk(m, args, kwargs)), kwargs=True)
        elif site.kind in ("fused", "fused_heads"):
            on(index.by_name[site.q], lambda i, out, s=site: _if_float(
                out, lambda t: stats().on_fused(s, t)))
        else:
            handles.append(index.by_name[site.name].register_forward_pre_hook(
                lambda mod, args, s=site: stats().open(s) if armed() else None))
            for part, mod in (("q", site.q), ("k", site.k)):
                on(index.by_name[mod], lambda i, out, s=site, p=part: _if_float(
                    out, lambda t: stats().on_part(s, p, t)))
    return handles


def _if_float(out: Any, fn: Callable[[Tensor], None]) -> None:
    t = _first_float(out)
    if t is not None:
        fn(t)


def _first_float(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out if out.is_floating_point() else None
    if isinstance(out, (tuple, list)) and out:
        return _first_float(out[0])
    return None
