"""Where a model's logits and its attention's queries and keys come from.

* :func:`find_logits` - the module whose output is the model's logits (the one Hugging Face
  models return as ``logits``; else the last module with at least 2 output features);
* :func:`find_attention` - the attention modules whose queries and keys the monitor can read,
  each a :class:`Site` (how to read q and k, the head layout, the softmax's scaling).

The statistics read at these places are in :mod:`gradwell.watch.transformer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["Site", "find_logits", "find_attention"]


@dataclass(frozen=True)
class Site:
    """An attention module whose queries and keys the monitor can read.

    ``kind``: ``"mha"`` (``nn.MultiheadAttention``: q and k are projected again from its
    inputs, on the subsample), ``"fused"`` (one output ``[q | k | v]``: GPT-2's ``c_attn`` in
    thirds, or ``q_heads * d`` query and ``k_heads * d`` key features where the heads are
    given: Phi-3, Falcon's multi-query layout), ``"fused_heads"`` (one output holding, per key
    head, its ``q_heads / k_heads`` query heads, then its key, then its value: GPT-NeoX's
    ``query_key_value``, one query head per key head; Falcon's grouped layout),
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
    for attr in ("head_dim", "attention_head_size", "head_size", "key_value_proj_dim"):
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
    q = first(("heads", "num_heads", "n_heads", "num_attention_heads"))
    return q, first(("num_key_value_heads", "kv_heads", "num_kv_heads")) or q


#: Hugging Face attention classes that do not scale ``q.k`` at all (T5 folds the ``1/sqrt(d)``
#: into its initialisation, Raffel et al. 2020, section 3.1)
_UNSCALED = frozenset(["T5Attention", "MT5Attention", "UMT5Attention", "LongT5Attention",
                       "SwitchTransformersAttention"])
#: Hugging Face attention classes whose fused ``query_key_value`` output holds, per head, that
#: head's q, k and v side by side: ``(B, T, H, 3, d)`` (GPT-NeoX/Pythia, BLOOM, Falcon when
#: every head has its own keys; its output then has 3 x heads x d features)
_FUSED_HEADS = frozenset(["GPTNeoXAttention", "BloomAttention", "FalconAttention"])
#: Hugging Face attention classes with one projection whose output is ``[q | k | v]``: ``q``
#: of ``q_heads * d`` features, ``k`` of ``k_heads * d`` (grouped-query attention), then ``v``
#: (the class's own split: Phi-3 slices ``qkv_proj``; ModernBERT views ``Wqkv`` as (3, H, d);
#: MPT chunks ``Wqkv`` in three)
_FUSED_QKV = {"Phi3Attention": "qkv_proj", "ModernBertAttention": "Wqkv",
              "MptAttention": "Wqkv"}


def _scaling(attn: nn.Module) -> float | None:
    """The softmax scaling an attention module declares (Hugging Face's ``scaling``; 1 for the
    T5 family; ``1 / sqrt(d (1 + c2p + p2c))`` for DeBERTa-v2, He et al. 2021, eq. 4), if
    any."""
    if _is_hf(attn) and type(attn).__name__ in _UNSCALED:
        return 1.0
    pos = getattr(attn, "pos_att_type", None)
    if (_is_hf(attn) and type(attn).__name__ == "DisentangledSelfAttention"
            and isinstance(pos, (list, tuple)) and _head_dim(attn)):
        return 1.0 / math.sqrt(_head_dim(attn) * (1 + ("c2p" in pos) + ("p2c" in pos)))
    for attr in ("scaling", "softmax_scale"):                # MPT: ``softmax_scale``
        s = getattr(attn, attr, None)
        if (isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s)
                and s > 0):
            return float(s)
    return None


def _rotary(attn: nn.Module) -> bool:
    cfg = getattr(attn, "config", None)
    return cfg is not None and any(getattr(cfg, k, None) is not None
                                   for k in ("rope_theta", "rope_parameters", "rotary_dim"))


_SPLIT = (("q_norm", "k_norm"), ("q_proj", "k_proj"), ("query", "key"), ("q_lin", "k_lin"))
#: child names read as q and k only in Hugging Face modules (T5's ``q``/``k``: too generic;
#: DeBERTa-v2's ``query_proj``/``key_proj``, also applied to its relative-position embeddings:
#: only the first q and k of each attention call are read, transformer.py)
_HF_SPLIT = (("q", "k"), ("query_proj", "key_proj"))


def find_attention(model: nn.Module, names: dict[int, str]) -> list[Site]:
    """Attention modules whose queries and keys are exposed, in registration order:
    ``nn.MultiheadAttention``; modules with ``q_proj``/``k_proj`` (Llama, Mistral, ...),
    ``query``/``key`` (BERT) or ``q_norm``/``k_norm`` children (QK-layernorm: read after the
    norm; ``nn.Identity`` ones, as in :class:`gradwell.nn.TinyTransformer` without
    ``qk_norm``, are read but are no QK-layernorm), ``q_lin``/``k_lin`` (DistilBERT) and, in a
    Hugging Face module, ``q``/``k`` (T5, whose softmax takes ``q.k`` unscaled; its relative
    position bias is not included) and ``query_proj``/``key_proj`` (DeBERTa-v2: the content
    term ``q.k / sqrt(d (1 + c2p + p2c))``; its position terms are not included). A ``split``
    site's q and k outputs are
    batch-first, ``(B, T, H * d)`` or ``(B, T, H, d)``, or heads-first ``(B, H, T, d)``
    (Gemma 3's and TinyTransformer's norms), told apart by the module's head count (when
    ``T`` equals it, batch-first is assumed); GPT-2's fused ``c_attn`` (HF
    ``Conv1D`` holding q, k, v; in an HF attention module also when wrapped, e.g. by a module
    that normalises q and k); the ``[q | k | v]`` projections of :data:`_FUSED_QKV` (Phi-3,
    ModernBERT, MPT) and Falcon's multi-query ``query_key_value`` (one key head); the
    ``query_key_value`` of the classes in :data:`_FUSED_HEADS` (``"fused_heads"``: q, k, v
    side by side per head, or per group of query heads in Falcon's new decoder
    architecture)."""
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
        site = (_split_site(mod, name, kids, names, d)
                or _fused_site(mod, name, kids, names, d))
        if site is not None:
            sites.append(site)
    return sites


def _split_site(mod: nn.Module, name: str, kids: dict[str, nn.Module], names: dict[int, str],
                d: int) -> Site | None:
    """A site with separate q and k modules (:data:`_SPLIT`; :data:`_HF_SPLIT` in HF modules)."""
    for q, k in _SPLIT + (_HF_SPLIT if _is_hf(mod) else ()):
        if q in kids and k in kids:
            return Site(name, "split", names[id(kids[q])], names[id(kids[k])], d, _rotary(mod),
                        q == "q_norm" and not isinstance(kids[q], nn.Identity), *_heads(mod),
                        _scaling(mod))
    return None


def _fused_site(mod: nn.Module, name: str, kids: dict[str, nn.Module], names: dict[int, str],
                d: int) -> Site | None:
    """GPT-2's ``c_attn`` or a ``[q | k | v]`` projection (:data:`_FUSED_QKV`, Falcon's
    multi-query layout: ``"fused"``) or a per-head or per-group ``query_key_value``
    (:data:`_FUSED_HEADS`, ``"fused_heads"``); a fused output of any other width than its
    layout's ``(q_heads + 2 k_heads) d`` gets no site."""
    c = kids.get("c_attn")
    if (c is not None and (type(_base(c)).__name__ == "Conv1D" or _is_hf(mod))
            and not getattr(mod, "is_cross_attention", False)):
        return Site(name, "fused", names[id(c)], names[id(c)], d, scale=_scaling(mod))
    if not _is_hf(mod):
        return None
    cls, (heads, kv) = type(mod).__name__, _heads(mod)
    kind, qkv = "fused", kids.get(_FUSED_QKV.get(cls, ""))
    if cls in _FUSED_HEADS:
        qkv = kids.get("query_key_value")
        grouped = getattr(mod, "new_decoder_architecture", False)  # Falcon's (Hkv, G + 2, d)
        if getattr(mod, "multi_query", False) and not grouped:    # Falcon: (H + 2, d)
            kv = 1
        else:
            kind, kv = "fused_heads", kv if grouped else heads
    if (qkv is None or heads is None or kv is None or heads % kv
            or _out_features(qkv) != (heads + 2 * kv) * d):
        return None
    return Site(name, kind, names[id(qkv)], names[id(qkv)], d, _rotary(mod), q_heads=heads,
                k_heads=kv, scale=_scaling(mod))
