"""Replay triage and culprit samples for a step the guard refused.

:func:`triage` re-runs the step once with :func:`gradwell.locate` armed and classifies it:

* ``"data"`` - the NaN/Inf was already in a model input or a loss target;
* ``"reproducible"`` - the replay fails again (its origin says where: an op, or a parameter
  that is already non-finite);
* ``"transient"`` - the replay is finite: the same batch on the same weights is fine (a race,
  a hardware fault, a non-deterministic kernel - Megatron's rerun state machine tells these
  apart the same way).

:func:`per_sample_norms` computes, for a :class:`Batch`, each sample's loss and gradient norm
``||grad_theta loss(model(x_i), y_i)||_2`` with ``torch.func.vmap`` over the batch (a loop over
samples where ``vmap`` cannot run the model, e.g. BatchNorm in training mode), and
:func:`culprits` names the samples to blame. A replay never changes the training result: the
RNG state, buffers and gradients are restored, parameters and optimizer state are not touched.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from .._autograd import grad as autograd_grad
from .._distributed import local, sharded
from ..locate import locate
from ..locate.replay import preserved, set_rng_state
from .spike import RobustZ

__all__ = ["Batch", "triage", "per_sample_norms", "culprits", "CLASSES"]

#: What a replay can conclude about a refused step.
CLASSES = ("data", "reproducible", "transient")

#: The per-sample gradients held at once by :func:`per_sample_norms` (bytes, float32): vmap
#: runs over chunks of ``PER_SAMPLE_BYTES // (4 * trainable parameters)`` samples (at least 1).
PER_SAMPLE_BYTES = 2 ** 28

_SLOW_VMAP = "There is a performance drop because we have not yet implemented the batching rule"


@dataclass
class Batch:
    """A batch the guard can replay and split into samples.

    ``loss_fn(model(*inputs), target)`` must be the step's loss, and a mean over the batch (so
    that on one sample it is that sample's loss); a dict of ``inputs`` is passed as keyword
    arguments (``model(**inputs)``: a Hugging Face batch's ``input_ids`` and
    ``attention_mask``). Every input is a tensor with the samples along its first axis.
    ``ids``: the samples' ids (for the skip list).
    """

    inputs: Tensor | tuple[Tensor, ...] | dict[str, Tensor]
    target: Tensor | None
    loss_fn: Callable[..., Tensor]
    ids: Sequence[Any] | None = None

    def _args(self) -> tuple[Tensor, ...]:
        if isinstance(self.inputs, dict):
            return ()
        return self.inputs if isinstance(self.inputs, tuple) else (self.inputs,)

    def _kwargs(self) -> dict[str, Tensor]:
        return dict(self.inputs) if isinstance(self.inputs, dict) else {}

    def loss(self, model: nn.Module) -> Tensor:
        out = model(*self._args(), **self._kwargs())
        return self.loss_fn(out) if self.target is None else self.loss_fn(out, self.target)

    def __len__(self) -> int:
        return int([*self._args(), *self._kwargs().values()][0].shape[0])


def _loss_of(replay: Any, model: nn.Module) -> Tensor:
    if isinstance(replay, Batch):
        return replay.loss(model)
    if callable(replay):
        return replay()
    raise TypeError("replay must be a zero-argument callable returning the step's loss (e.g. "
                    "lambda: loss_fn(model(x), y)) or a gradwell.guard.Batch, got "
                    f"{type(replay).__qualname__}")


def triage(model: nn.Module, replay: Any, rng: dict[str, Any] | None) -> dict[str, Any]:
    """Replay the step once under ``gradwell.locate``: ``{"triage": class, "origin": dict}``.

    ``rng``: the RNG state the step started from (dropout draws the same masks), if known.
    """
    params = [p for p in model.parameters()]
    grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        with preserved(model):
            if rng is not None:
                set_rng_state(rng)
            with locate(model) as loc:
                loss = _loss_of(replay, model)
                if isinstance(loss, Tensor) and loss.requires_grad:
                    loss.backward()
    finally:
        for p, g in zip(params, grads):
            p.grad = g
    origin = loc.origin
    if origin is None:
        cls = "transient"
    elif origin.phase == "input" and origin.op in ("input", "target"):
        cls = "data"
    else:
        cls = "reproducible"
    return {"triage": cls, "origin": origin.to_dict() if origin is not None else None}


def per_sample_norms(model: nn.Module, batch: Batch, limit: int = 4096) -> tuple[Tensor, Tensor]:
    """Per-sample ``(losses, gradient 2-norms)`` (float32, on the host) for ``batch``.

    Under DDP the wrapped module runs (a sample's gradient is this rank's own: no collective).
    Under FSDP2 the norms are NaN, not measured (:func:`_sharded_losses`).
    """
    if len(batch) > limit:
        raise ValueError(f"per-sample norms run on at most {limit} samples, got {len(batch)}")
    if sharded(list(model.parameters())):
        return _sharded_losses(model, batch)
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    # one sample has no batch statistics: BatchNorm uses its running statistics here
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.training]
    with preserved(model):
        for m in norms:
            m.eval()
        try:
            return _vmapped(model, batch)
        except Exception:  # noqa: BLE001 - vmap cannot run every model: fall back to a loop
            return _looped(model, batch)
        finally:
            for m in norms:
                m.train()


def _vmapped(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    from torch.func import functional_call, grad_and_value, vmap
    from torch.utils._pytree import tree_map
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if sharded(list(params.values())):   # FSDP2: functional_call cannot take the shards
        raise NotImplementedError("per-sample vmap over sharded parameters: use the loop")
    buffers = dict(model.named_buffers())
    args, kwargs, target = batch._args(), batch._kwargs(), batch.target

    def one(p: dict[str, Tensor], xs: tuple[Tensor, ...], kw: dict[str, Tensor],
            *y: Tensor) -> Tensor:
        xs, kw = tree_map(lambda t: t.unsqueeze(0), (xs, kw))
        out = functional_call(model, (p, buffers), xs, kw)
        return batch.loss_fn(out, y[0].unsqueeze(0)) if y else batch.loss_fn(out)

    def squared_norm(p: dict[str, Tensor], *sample: Tensor) -> tuple[Tensor, Tensor]:
        grads, loss = grad_and_value(one)(p, *sample)      # reduced here: never B x params
        return sum(g.float().pow(2).sum() for g in grads.values()), loss

    extra = (target,) if target is not None else ()
    in_dims = (None, 0, 0) + (0,) * len(extra)
    numel = sum(p.numel() for p in params.values())
    chunk = max(1, PER_SAMPLE_BYTES // max(4 * numel, 1))   # samples whose gradients coexist
    # functorch's note on ops it loops over (CPU flash attention) asks the user to file a
    # torch bug: about gradwell's use of vmap, not about their model
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SLOW_VMAP)
        sq, losses = vmap(squared_norm, in_dims=in_dims, randomness="different",
                          chunk_size=chunk)(params, args, kwargs, *extra)
    return losses.detach().float().cpu(), sq.detach().sqrt().cpu()


def _sample_loss(model: nn.Module, batch: Batch, i: int) -> Tensor:
    args, kwargs = batch._args(), batch._kwargs()
    out = model(*(x[i:i + 1] for x in args), **{k: v[i:i + 1] for k, v in kwargs.items()})
    return batch.loss_fn(out) if batch.target is None else batch.loss_fn(out, batch.target[i:i + 1])


def _sharded_losses(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    """FSDP2: per-sample losses, and NaN norms. The gradients of the shards are reduced over
    ranks by FSDP2, so no rank holds one sample's own; and every forward all-gathers the
    parameters, so every rank runs as many forwards as the largest batch of any rank (one
    all-reduce agrees on it; a shorter batch repeats its first sample)."""
    device = local(next(model.parameters())).device
    most = torch.tensor([float(len(batch))], device=device)
    torch.distributed.all_reduce(most, op=torch.distributed.ReduceOp.MAX)
    with torch.no_grad():
        losses = [_sample_loss(model, batch, i if i < len(batch) else 0).float().reshape(())
                  for i in range(int(most.item()))]
    out = torch.stack(losses[:len(batch)]).cpu()
    return out, torch.full_like(out, float("nan"))


def _looped(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    losses, norms = [], []
    for i in range(len(batch)):
        loss = _sample_loss(model, batch, i)
        gs = autograd_grad([loss], params)      # also through a reentrant checkpoint
        sq = sum(g.detach().float().pow(2).sum() for g in gs if g is not None)
        losses.append(loss.detach().float().reshape(()))
        norms.append(torch.as_tensor(sq, dtype=torch.float32).sqrt())
    return torch.stack(losses).cpu(), torch.stack(norms).cpu()


def culprits(losses: Tensor, norms: Tensor | None, z: float = 6.0) -> list[int]:
    """Positions of the samples to blame.

    Samples with a non-finite loss or gradient norm; if none, those whose log gradient norm has
    a robust z-score (median/MAD, :class:`~gradwell.guard.spike.RobustZ`) above ``z`` against
    the batch. ``[]`` when every sample is non-finite: then the batch is not the cause.
    ``norms=None`` (not measured: FSDP2): the samples with a non-finite loss only.
    """
    bad = ~torch.isfinite(losses)
    bad = (bad if norms is None else bad | ~torch.isfinite(norms)).tolist()
    if any(bad) or norms is None:
        return [] if all(bad) and len(bad) > 1 else [i for i, b in enumerate(bad) if b]
    detector = RobustZ(window=len(norms), min_count=3, log=True)
    for v in norms.tolist():
        detector.add(v)
    scores = [detector.score(v) for v in norms.tolist()]
    return [i for i, s in enumerate(scores) if s is not None and s > z]
