"""The monitor: where do gradients vanish or explode, and when.

>>> mon = gradwell.watch(model)            # this module is callable: watch.watch(model)
>>> loss.backward(); mon.step(); opt.step()
>>> mon.findings(); mon.summary(show=True); mon.plot("flow.png"); mon.save("run.jsonl")

Everything else lives here too: :class:`Monitor`, :class:`History`, :func:`load`,
:class:`JsonlSink`, :class:`TensorBoardSink`.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from .history import History, load
from .monitor import Monitor
from .sinks import JsonlSink, Sink, TensorBoardSink

__all__ = ["watch", "Monitor", "History", "load", "JsonlSink", "TensorBoardSink", "Sink"]


def watch(model: nn.Module, *, optimizer: torch.optim.Optimizer | None = None, every: int = 1,
          activations: bool | None = None, updates: bool = True, update_every: int | None = None,
          max_records: int = 1024, log: str | Path | None = None,
          sinks: Iterable[Sink] = (), logits: str | bool | None = None,
          scaler: Any = None) -> Monitor:
    """Start watching ``model``; returns a :class:`Monitor` (also a context manager).

    Args:
        model: the module to watch (``DistributedDataParallel`` and ``torch.compile`` are
            unwrapped). Layers are the modules owning trainable parameters, by qualified name.
        optimizer: if given, record once per ``optimizer.step()`` through its step hooks
            (correct under gradient accumulation; exact update sizes; gradwell optimizers that
            clip hand over their pre-clip gradient norms). Without it, call ``mon.step()``
            after ``loss.backward()``. If you clip yourself (``clip_grad_norm_``), call
            ``mon.step(loss)`` before clipping to record the gradients unclipped; otherwise
            the record is post-clip (see :mod:`gradwell.watch.monitor`).
        every: record one step in ``every`` (>= 1); the others cost nothing.
        activations: also summarise module outputs (mean, std, saturated share at
            sigmoid/tanh, dead share at ReLU) and the gradient flowing back into each layer's
            output, via forward hooks. Default (None): True, except for a ``torch.compile``'d
            model, which is watched without hooks so nothing recompiles.
        updates: measure the update-to-weight ratio ``||w_new - w_old|| / ||w_old||`` of the
            step actually taken (keeps one copy of the trainable parameters).
        update_every: measure the update on one recorded step in ``update_every`` (>= 1;
            1 = all; default ``max(1, 10 // every)``, about one training step in 10); in
            between the update ratio is NaN (the copy of the parameters it needs costs ~10x
            less). Weight norms are measured on every recorded step.
        max_records: rows kept in memory (progressive downsampling beyond that).
        log: a path; stream every recorded step there as JSON lines (rank 0 only).
        sinks: more sinks, e.g. ``TensorBoardSink("runs/x")``.
        logits: the module whose output is the logits, for ``log_z_rms`` (the z-loss quantity,
            with ``activations``): None finds it (a Hugging Face model's
            ``get_output_embeddings()``, else the last ``nn.Linear``/``Conv1D`` with >= 2
            outputs: see :func:`gradwell.watch.sites.find_logits`), a qualified module
            name picks it, False records none (a regression output is no logits).
        scaler: the ``torch.amp.GradScaler`` of a float16 run (``scaler.scale(loss).backward()``):
            gradients still scaled when recorded are divided by the loss scale, and a step
            whose gradients overflow while the scale is above 1 (the scaler skips it) is an
            ``amp_overflow`` event, not a ``nonfinite`` finding. Without it, a float16 run's
            gradients read 65536x too large (:mod:`gradwell.watch.handover`).

    With ``activations`` the attention modules that expose queries and keys
    (``nn.MultiheadAttention``, ``q_proj``/``k_proj``, GPT-2's ``c_attn``) also get
    ``attention_logit_max``; with an Adam-family ``optimizer=`` the record holds
    ``adam_eps_share`` and ``update_cosine`` (docs/watch.md).
    """
    return Monitor(model, optimizer=optimizer, every=every, activations=activations,
                   updates=updates, update_every=update_every, max_records=max_records,
                   log=log, sinks=sinks, logits=logits, scaler=scaler)


class _CallableModule(types.ModuleType):
    """Lets ``gradwell.watch(model)`` call :func:`watch` while ``gradwell.watch.Monitor`` works."""

    def __call__(self, model: nn.Module, **kwargs: Any) -> Monitor:
        return watch(model, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
