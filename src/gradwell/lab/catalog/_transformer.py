"""Trial kind ``transformer_train``: a :class:`~gradwell.nn.TinyTransformer` trained on the
generated ``copy`` token task by the lab's ``train`` loop, for ``xiong2020-warmup`` and
``wortsman2023-instabilities``.

Keys of its own: ``norm_position`` (``post`` or ``pre``), ``qk_norm`` (LayerNorm on queries and
keys), ``d_model``, ``heads``, ``vocab``, ``warmup`` (steps of linear learning-rate warm-up from
0, Vaswani et al. 2017; 0: none) and ``z_loss`` (the coefficient of ``log^2 Z``, Chowdhery et
al. 2022, added to the loss; 0: none). The model has ``layers`` blocks; ``seq_len`` is the copy
task's half length.

Besides the ``train`` trial's records, it stores, at initialisation, the gradient norm of every
block's feed-forward output weight ``W2`` on one training batch (``init_ff_grad``, input to
output; Xiong et al. 2020, figure 3) and, every ``grad_every`` steps, the largest absolute
attention logit (``max_attn_logit``), the largest output-logit magnitude (``max_out_logit``)
and the mean log-normaliser ``log Z`` of the output logits (``mean_log_z``, the quantity z-loss
pulls to 0) of the training batch (Wortsman et al. 2023, figures 1 and 4); the summary keeps
their largest values over training (``max_abs_log_z`` for ``|log Z|``) and ``final_abs_log_z``,
``|log Z|`` at the last recorded step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ...nn import TinyTransformer
from ..data import Dataset
from ..spec import Trial
from ..train import Hooks, TrialResult, load_data, run_trial

__all__ = ["build_transformer", "z_loss", "log_normaliser", "warmup_factor", "init_ff_grad_norms",
           "transformer_trial"]


def build_transformer(cfg: dict[str, Any], data: Dataset) -> TinyTransformer:
    """The configured :class:`~gradwell.nn.TinyTransformer` for the token task ``data``."""
    return TinyTransformer(data.n_out, data.shape[0], cfg["d_model"], cfg["heads"],
                           cfg["layers"], norm=cfg["norm_position"], qk_norm=cfg["qk_norm"])


def z_loss(logits: Tensor) -> Tensor:
    """``mean(log^2 Z)``, ``Z = sum_v exp(logit_v)`` over the vocabulary (dimension 1 of
    ``(batch, vocab, T)`` logits): pushes the softmax normaliser toward 1."""
    return torch.logsumexp(logits.float(), dim=1).pow(2).mean()


def log_normaliser(logits: Tensor) -> Tensor:
    """``log Z = logsumexp_v logit_v`` at every position of ``(batch, vocab, T)`` logits
    (detached): 0 when the logits are normalised log-probabilities."""
    return torch.logsumexp(logits.detach().float(), dim=1)


def warmup_factor(warmup: int):
    """``step -> min(1, step / warmup)`` (constant 1 when ``warmup`` is 0)."""
    return lambda step: min(1.0, step / warmup) if warmup > 0 else 1.0


def init_ff_grad_norms(model: TinyTransformer, x: Tensor, y: Tensor) -> list[float]:
    """``||dL/dW2||`` of every block's feed-forward output layer for one cross-entropy
    forward and backward pass of ``(x, y)`` (the gradients are cleared afterwards)."""
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    norms = [b.ff2.weight.grad.norm().item() for b in model.blocks]
    model.zero_grad(set_to_none=True)
    return norms


def _logit_recorder(model: TinyTransformer, every: int, rows: list) -> None:
    calls = {"n": 0}

    def record(_module: nn.Module, _inputs: Any, out: Tensor) -> None:
        if not model.training:
            return
        calls["n"] += 1
        if calls["n"] % every == 1 or every == 1:
            step = calls["n"]
            rows.append((step, None, "max_attn_logit", model.max_attention_logit()))
            rows.append((step, None, "max_out_logit", out.detach().abs().amax().item()))
            rows.append((step, None, "mean_log_z", log_normaliser(out).mean().item()))

    model.register_forward_hook(record)


def transformer_trial(trial: Trial) -> TrialResult:
    """Trial kind ``transformer_train`` (see the module docstring)."""
    cfg = trial.config
    data = load_data(cfg)
    rows: list[tuple[int, float | None, str, float]] = []
    init: dict[str, Any] = {}

    def prepare(model: nn.Module, trial: Trial) -> None:
        n = cfg["batch_size"]
        norms = init_ff_grad_norms(model, data.x_train[:n], data.y_train[:n])
        init.update(init_ff_grad=norms, init_ff_ratio=norms[-1] / norms[0] if norms[0] else None)
        _logit_recorder(model, trial.record.get("grad_every", 10), rows)

    zc = float(cfg["z_loss"])
    hooks = Hooks(build=build_transformer, prepare=prepare,
                  lr_factor=warmup_factor(cfg["warmup"]) if cfg["warmup"] else None,
                  penalty=(lambda out: zc * z_loss(out)) if zc > 0 else None)
    result = run_trial(trial, hooks=hooks)
    result.summary.update(init)
    attn = [v for _, _, k, v in rows if k == "max_attn_logit" and math.isfinite(v)]
    outs = [v for _, _, k, v in rows if k == "max_out_logit" and math.isfinite(v)]
    log_z = [abs(v) for _, _, k, v in rows if k == "mean_log_z" and math.isfinite(v)]
    result.summary.update(max_attn_logit=max(attn, default=None),
                          max_out_logit=max(outs, default=None),
                          max_abs_log_z=max(log_z, default=None),
                          final_abs_log_z=log_z[-1] if log_z else None)
    result.metrics += rows
    return result

