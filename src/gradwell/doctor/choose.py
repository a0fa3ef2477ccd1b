"""Which candidates to try, from the findings (:data:`~.candidates.REMEDIES`), the model and
the learning-rate range test.

Families: ``init``, ``structure`` and ``qk_norm`` (:mod:`.structure`), ``lr`` and ``optimizer``
(rates from ``lr_find``), ``clip``, ``warmup``; for the instabilities of transformers (Wortsman
et al. 2023) ``z_loss`` (PaLM's z-loss on the logits module an ``output_logits`` finding names)
and ``eps`` (Adam's epsilon lowered to 1e-15 for an Adam-family baseline)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..diagnose import Finding
from .candidates import INIT_NAMES, INIT_SCHEMES, REMEDIES, SMALL_EPS, Z_LOSS, Candidate
from .lrfind import LRFindResult, lr_find
from .optimizers import OPTIMIZERS, adam_eps, make_optimizer
from .structure import QK_BUILDERS, structural_candidates
from .trainer import Setup

__all__ = ["choose", "baseline_lr", "LR_FACTOR"]

#: a learning rate from lr_find is a candidate only when it differs from the baseline's by more
#: than this factor (closer than that, seeds' noise would decide)
LR_FACTOR = 2.0
_ADAPTIVE = ("adam", "adamw", "rmsprop")
#: steps of each range test (fewer when the trial budget is smaller: never longer than a trial)
LR_FIND_STEPS = 100


def baseline_lr(setup: Setup) -> float:
    """The baseline's learning rate (group 0): ``setup.lr`` or the optimizer's own."""
    if setup.lr is not None:
        return setup.lr
    if isinstance(setup.optimizer, str):
        return float(OPTIMIZERS[setup.optimizer][1]["lr"])
    return float(make_optimizer(setup.optimizer, nn.Linear(1, 1).parameters()).param_groups[0]
                 ["lr"])


def _families(findings: list[Finding]) -> dict[str, str]:
    """``{family: reason}`` in the order of the findings' remedies."""
    kinds: dict[str, list[str]] = {}
    for f in findings:
        for fam in REMEDIES.get(f.kind, ()):
            if f.kind not in kinds.setdefault(fam, []):
                kinds[fam].append(f.kind)
    return {fam: ", ".join(k) for fam, k in kinds.items()}


def _find(setup: Setup, spec: Any, cache: dict[str, LRFindResult]) -> LRFindResult:
    key = spec if isinstance(spec, str) else "baseline"
    if key not in cache:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            cache[key] = lr_find(setup.make_model(), setup.loader, setup.loss_fn, spec,
                                 steps=min(LR_FIND_STEPS, setup.steps))
    return cache[key]


def _lr(setup: Setup, reason: str, cache: dict) -> list[Candidate]:
    r = _find(setup, setup.optimizer, cache)
    base = baseline_lr(setup)
    if max(r.suggested_lr / base, base / r.suggested_lr) <= LR_FACTOR:
        return []
    return [Candidate(f"lr {r.suggested_lr:.3g} (lr_find, {r.rule})", reason,
                      lr=r.suggested_lr)]


def _optimizer(setup: Setup, reason: str, cache: dict) -> list[Candidate]:
    adaptive = not isinstance(setup.optimizer, str) or setup.optimizer in _ADAPTIVE
    other = "momentum" if adaptive else "adam"
    r = _find(setup, other, cache)
    label = "SGD + momentum 0.9" if other == "momentum" else "Adam"
    return [Candidate(f"optimizer: {label}, lr {r.suggested_lr:.3g} (lr_find)", reason,
                      optimizer=other, lr=r.suggested_lr)]


def _eps(setup: Setup, reason: str) -> list[Candidate]:
    """Adam's epsilon lowered to :data:`SMALL_EPS`, for an Adam-family baseline whose eps is
    larger (the ``adam_epsilon`` finding's remedy)."""
    eps = adam_eps(make_optimizer(setup.optimizer, nn.Linear(1, 1).parameters()))
    if eps is None or eps <= SMALL_EPS:
        return []
    return [Candidate(f"optimizer: eps {SMALL_EPS:g} (was {eps:g})", reason, eps=SMALL_EPS)]


def _z_loss(findings: list[Finding], reason: str) -> list[Candidate]:
    """A z-loss on the logits module each ``output_logits`` finding names."""
    names = dict.fromkeys(f.layer for f in findings if f.kind == "output_logits" and f.layer)
    return [Candidate(f"z-loss {Z_LOSS:g} (logits of {name})", reason, z_loss=Z_LOSS,
                      logits=name)
            for name in names]


def choose(setup: Setup, findings: list[Finding], sample: nn.Module,
           variants: dict[str, Callable[[], nn.Module]], grad_norm: float | None,
           cache: dict[str, LRFindResult]) -> list[Candidate]:
    """The candidates for ``findings`` (none without findings), then the user's ``variants``.

    ``sample`` is one model from ``make_model()`` (read, never trained); ``grad_norm`` the
    baseline's median total gradient norm (the GlobalNorm threshold, AutoClip's idea at the
    50th percentile); ``cache`` keeps lr_find results by optimizer.
    """
    out: list[Candidate] = []
    for fam, reason in _families(findings).items():
        if fam == "init":
            out += [Candidate(f"re-init: {INIT_NAMES[s]}", reason, init=s)
                    for s in INIT_SCHEMES.get(setup.activation, INIT_SCHEMES["linear"])]
        elif fam == "structure":
            out += structural_candidates(sample, reason)
        elif fam == "qk_norm":
            out += structural_candidates(sample, reason, QK_BUILDERS)
        elif fam == "eps":
            out += _eps(setup, reason)
        elif fam == "z_loss":
            out += _z_loss(findings, reason)
        elif fam == "lr":
            out += _lr(setup, reason, cache)
        elif fam == "optimizer":
            out += _optimizer(setup, reason, cache)
        elif fam == "clip":
            if grad_norm:
                out.append(Candidate(f"clip: GlobalNorm({grad_norm:.3g})", reason,
                                     clip="global_norm", clip_value=grad_norm))
            out.append(Candidate("clip: ZClip", reason, clip="zclip"))
        elif fam == "warmup":
            w = max(1, setup.steps // 10)
            out.append(Candidate(f"warm-up: linear, {w} steps", reason, warmup=w))
    out += [Candidate(f"variant: {name}", "user variant", model=fn)
            for name, fn in variants.items()]
    return out
