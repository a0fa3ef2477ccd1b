"""Where a model's logits and attention logits come from, and their statistics, cheaply.

Two failures of modern networks (Wortsman et al. 2023, *Small-scale proxies for large-scale
Transformer training instabilities*) are seen in the forward pass:

* **output-logit divergence** — ``log Z = logsumexp(logits)`` drifts far from 0 (PaLM's
  z-loss, Chowdhery et al. 2022, adds ``1e-4 log^2 Z`` to keep it there). Recorded as
  ``log_z_rms``: the RMS of ``log Z`` over up to :data:`POSITIONS` evenly spaced positions of
  the batch, at the *logits module* (:func:`find_logits`);
* **attention-logit growth** — ``q.k / sqrt(d)`` grows until the softmax is one-hot
  (Dehghani et al. 2023; entropy collapse, Zhai et al. 2023). Recorded as
  ``attention_logit_max``: ``max |q.k| * scale`` (the logit the softmax sees: ``scale`` is the
  module's own softmax scaling, Hugging Face's ``scaling`` attribute, e.g. Gemma 2's
  ``query_pre_attn_scalar ** -0.5`` or GPT-2's ``1 / (sqrt(d) (layer + 1))`` with
  ``scale_attn_by_inverse_layer_idx``; else ``1 / sqrt(d_head)``) over all heads and all
  pairs of up to :data:`ATTN_POSITIONS` positions of the first :data:`SEQUENCES` sequences
  (the causal mask is ignored: masked pairs have logits of the same scale), per attention
  module (:func:`find_attention`); averaged over micro-batches and ranks.

Both are measured by forward hooks on recorded steps only, on a subsample, so they cost a few
small kernels per step whatever the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

__all__ = ["Site", "find_logits", "find_attention", "LogitStats", "POSITIONS",
           "ATTN_POSITIONS", "SEQUENCES"]

#: positions (tokens) of the batch whose log Z is measured, evenly spaced
POSITIONS = 64
#: positions per sequence whose attention logits are measured, evenly spaced
ATTN_POSITIONS = 32
#: sequences of the batch whose attention logits are measured
SEQUENCES = 2


@dataclass(frozen=True)
class Site:
    """An attention module whose queries and keys the monitor can read.

    ``kind``: ``"mha"`` (``nn.MultiheadAttention``: q and k are projected again from its
    inputs, on the subsample), ``"fused"`` (GPT-2's ``c_attn``: one output holding q, k, v),
    ``"split"`` (separate ``q_proj``/``k_proj``, ``query``/``key``, or ``q_norm``/``k_norm``
    where the model normalises them). ``q``/``k``: the modules whose outputs are read.
    ``rotary``: the model applies a rotary embedding after the projection, so q and k are read
    before it (same norms, same scale; not the exact logits). ``qk_norm``: q and k are read
    after a normalisation (``q_norm`` that is not ``nn.Identity``). ``q_heads``/``k_heads``:
    the module's query and key heads, where it says (they tell a 4-D output's layout).
    ``scale``: what the module multiplies ``q.k`` by before the softmax, where it says (Hugging
    Face attention modules' ``scaling``); :attr:`logit_scale` falls back to ``1 / sqrt(d)``."""

    name: str
    kind: str
    q: str
    k: str
    head_dim: int
    rotary: bool = False
    qk_norm: bool = False
    q_heads: int | None = None
    k_heads: int | None = None
    scale: float | None = None

    @property
    def logit_scale(self) -> float:
        """The factor between ``q.k`` and the softmax's logit."""
        return self.scale if self.scale is not None else 1.0 / math.sqrt(self.head_dim)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "q": self.q, "k": self.k,
                "head_dim": self.head_dim, "rotary": self.rotary, "qk_norm": self.qk_norm,
                "q_heads": self.q_heads, "k_heads": self.k_heads, "scale": self.logit_scale}


def _is_hf(module: nn.Module) -> bool:
    return type(module).__module__.startswith(("transformers.", "peft."))


def _base(module: nn.Module) -> nn.Module:
    """peft's LoRA wrappers keep the wrapped layer as ``base_layer``."""
    return getattr(module, "base_layer", module)


def _out_features(module: nn.Module) -> int | None:
    base = _base(module)
    if isinstance(base, nn.Linear):
        return base.out_features
    if type(base).__name__ == "Conv1D" and _is_hf(base):      # HF Conv1D: weight (in, out)
        return int(base.nf)
    return None


def find_logits(model: nn.Module, names: dict[int, str]) -> str | None:
    """The qualified name (as in ``names``: module id -> clean name) of the module whose output
    is the model's logits, or None.

    1. a Hugging Face model's ``get_output_embeddings()`` (``lm_head`` of a language model);
    2. otherwise the *last* projection in registration order (``nn.Linear``, HF ``Conv1D``)
       with at least 2 outputs: ``nn.Sequential``'s final ``Linear``, a classifier's ``head``
       or ``classifier``, HF ``...ForSequenceClassification``'s ``classifier``/``score``
       (a peft LoRA wrapper counts as the layer it wraps; its adapters are not candidates).

    Override with ``gradwell.watch(model, logits="name")`` (or ``logits=False``)."""
    get = getattr(model, "get_output_embeddings", None)
    if callable(get):
        head = get()
        if isinstance(head, nn.Module) and id(head) in names:
            return names[id(head)]
    last, wrappers = None, []
    for mod in model.modules():
        name = names.get(id(mod))
        if name is None or any(name.startswith(w + ".") for w in wrappers):
            continue
        if getattr(mod, "base_layer", None) is not None:
            wrappers.append(name)
        n = _out_features(mod)
        if n is not None and n >= 2:
            last = name
    return last


def _head_dim(attn: nn.Module) -> int | None:
    for attr in ("head_dim", "attention_head_size"):
        d = getattr(attn, attr, None)
        if isinstance(d, int) and d > 0:
            return d
    cfg = getattr(attn, "config", None)
    hidden, heads = getattr(cfg, "hidden_size", None), getattr(cfg, "num_attention_heads", None)
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        return hidden // heads
    return None


def _heads(attn: nn.Module) -> tuple[int | None, int | None]:
    """``(query heads, key heads)`` of an attention module (its attributes, else its config;
    key heads default to the query heads), None where it does not say."""
    cfg = getattr(attn, "config", None)

    def first(names: tuple[str, ...]) -> int | None:
        for src in (attn, cfg):
            for n in names:
                v = getattr(src, n, None)
                if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                    return v
        return None
    q = first(("heads", "num_heads", "num_attention_heads"))
    return q, first(("num_key_value_heads", "kv_heads")) or q


def _scaling(attn: nn.Module) -> float | None:
    """The softmax scaling an attention module declares (Hugging Face's ``scaling``), if any."""
    s = getattr(attn, "scaling", None)
    if isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0:
        return float(s)
    return None


def _rotary(attn: nn.Module) -> bool:
    cfg = getattr(attn, "config", None)
    return cfg is not None and any(getattr(cfg, k, None) is not None
                                   for k in ("rope_theta", "rope_parameters", "rotary_dim"))


_SPLIT = (("q_norm", "k_norm"), ("q_proj", "k_proj"), ("query", "key"))


def find_attention(model: nn.Module, names: dict[int, str]) -> list[Site]:
    """Attention modules whose queries and keys are exposed, in registration order:
    ``nn.MultiheadAttention``; modules with ``q_proj``/``k_proj`` (Llama, Mistral, ...),
    ``query``/``key`` (BERT) or ``q_norm``/``k_norm`` children (QK-layernorm: read after the
    norm; ``nn.Identity`` ones, as in :class:`gradwell.nn.TinyTransformer` without
    ``qk_norm``, are read but are no QK-layernorm). A ``split`` site's q and k outputs are
    batch-first, ``(B, T, H * d)`` or ``(B, T, H, d)``, or heads-first ``(B, H, T, d)``
    (Gemma 3's and TinyTransformer's norms), told apart by the module's head count (when
    ``T`` equals it, batch-first is assumed); GPT-2's fused ``c_attn`` (HF
    ``Conv1D`` holding q, k, v; in an HF attention module also when wrapped, e.g. by a module
    that normalises q and k)."""
    sites = []
    for mod in model.modules():
        name = names.get(id(mod))
        if name is None:
            continue
        if isinstance(mod, nn.MultiheadAttention):
            sites.append(Site(name, "mha", name, name, mod.head_dim))
            continue
        kids = dict(mod.named_children())
        d = _head_dim(mod)
        if d is None:
            continue
        for q, k in _SPLIT:
            if q in kids and k in kids:
                sites.append(Site(name, "split", names[id(kids[q])], names[id(kids[k])], d,
                                  _rotary(mod), q == "q_norm"
                                  and not isinstance(kids[q], nn.Identity), *_heads(mod),
                                  _scaling(mod)))
                break
        else:
            c = kids.get("c_attn")
            if (c is not None and (type(_base(c)).__name__ == "Conv1D" or _is_hf(mod))
                    and not getattr(mod, "is_cross_attention", False)):
                sites.append(Site(name, "fused", names[id(c)], names[id(c)], d,
                                  scale=_scaling(mod)))
    return sites


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

    def on_part(self, site: Site, part: str, t: Tensor) -> None:
        """One of q and k (``part``) of a ``"split"`` site; measured when both have come."""
        got = self._waiting.setdefault(site.name, {})
        got[part] = _sample(_tokens_first(t.detach(), site.q_heads if part == "q"
                                          else site.k_heads))
        if "q" in got and "k" in got:
            self.on_qk(site, got.pop("q"), got.pop("k"))

    def on_fused(self, site: Site, t: Tensor) -> None:
        """GPT-2's ``c_attn`` output ``(B, T, 3E)``: q, k, v side by side."""
        s = _sample(t.detach())
        e = s.shape[-1] // 3
        self.on_qk(site, s[..., :e], s[..., e:2 * e])

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
        elif site.kind == "fused":
            on(index.by_name[site.q], lambda i, out, s=site: _if_float(
                out, lambda t: stats().on_fused(s, t)))
        else:
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
