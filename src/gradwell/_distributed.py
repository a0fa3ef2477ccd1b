"""Distributed correctness in one place: full-tensor norms from local shards, agreed decisions.

Under DDP every rank holds whole, identical gradients (DDP all-reduced them), so nothing here
costs anything. Under FSDP2 (``torch.distributed.fsdp.fully_shard``) parameters and gradients
are ``DTensor`` shards: gradwell's kernels then run on the local shards (``to_local()``, the
update is elementwise, so this is exact) and only norms need the other ranks. For each tensor
:math:`t` split into shards :math:`t_r`

.. math:: \\lVert t \\rVert_p^p = \\sum_r \\lVert t_r \\rVert_p^p, \\qquad
          \\lVert t \\rVert_\\infty = \\max_r \\lVert t_r \\rVert_\\infty

so the per-tensor norms of all parameters come from ONE all-reduce of a stacked vector of local
``p``-th powers (``MAX`` for the inf-norm) per step, never one collective per parameter. A
replicated copy (a ``Replicate`` mesh dimension, or a plain tensor next to DTensors) is counted
once: only the rank at coordinate 0 of the replicating dimensions contributes it. Every rank gets
the same reduced vector, so every decision taken from it (skip a non-finite step, clip, spike,
roll back) is the same on every rank and no rank waits for a collective the others skip.

Supported: DDP, FSDP2 and HSDP (placements ``Shard(0)`` and ``Replicate``). Tensor parallelism
(``Shard(d)`` for ``d > 0``, FSDP + TP's strided shards) and pending reductions (``Partial``) are
detected and refused with a clear error; pipeline parallelism is not supported.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Any, Iterator

import torch
from torch import Tensor

__all__ = ["is_dtensor", "sharded", "local", "world", "ShardReducer", "reducer_for", "StateView",
           "LocalView",
           "full_tensors", "param_unit_norms", "agree"]

_HELP = ("gradwell supports DDP and FSDP2/HSDP (DTensor placements Shard(0) and Replicate); "
         "tensor and pipeline parallelism are not supported yet (see docs/distributed.md)")


def is_dtensor(t: Any) -> bool:
    """True if ``t`` is a ``torch.distributed.tensor.DTensor`` (cheap when none is in use)."""
    cls = type(t)
    return cls.__name__ == "DTensor" and cls.__module__.startswith("torch.distributed")


def sharded(tensors: Any) -> bool:
    """True if any of ``tensors`` is a DTensor (FSDP2: parameters as shards)."""
    return any(is_dtensor(t) for t in tensors)


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (a view: in-place edits reach the DTensor), else ``t``."""
    return t.to_local() if is_dtensor(t) else t


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without an initialised process group."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_placements(t: Tensor, what: str = "parameter") -> None:
    """Raise NotImplementedError unless every placement of DTensor ``t`` is Shard(0)/Replicate."""
    from torch.distributed.tensor import Replicate, Shard
    for pl in t.placements:
        ok = isinstance(pl, Replicate) or (type(pl) is Shard and pl.dim == 0)
        if not ok:
            raise NotImplementedError(
                f"a {what} of shape {tuple(t.shape)} is a DTensor with placements "
                f"{tuple(t.placements)}: {pl} looks like tensor parallelism or a pending "
                f"reduction. {_HELP}")


def _counts_here(t: Tensor, rank: int) -> bool:
    """Whether this rank contributes ``t``'s local part to a sum over all ranks."""
    if not is_dtensor(t):
        return rank == 0
    from torch.distributed.tensor import Replicate
    coord = t.device_mesh.get_coordinate()
    if coord is None:
        return False
    return all(c == 0 for c, pl in zip(coord, t.placements) if isinstance(pl, Replicate))


class ShardReducer:
    """Turns per-tensor norms of local shards into norms of the full tensors (one all-reduce).

    Built from the (original, possibly DTensor) tensors whose norms will be reduced.
    """

    def __init__(self, tensors: list[Tensor]) -> None:
        rank, _ = world()
        for t in tensors:
            if is_dtensor(t):
                check_placements(t)
        self.counts = [_counts_here(t, rank) for t in tensors]

    def mask(self, device: torch.device) -> Tensor:
        """1.0 where this rank contributes a tensor's local part to a sum over ranks, else 0.0."""
        return torch.tensor(self.counts, dtype=torch.float64, device=device)

    def reduce(self, norms: list[Tensor], norm_type: float = 2.0,
               extra: Tensor | None = None) -> tuple[list[Tensor], Tensor | None]:
        """Full-tensor ``norm_type``-norms from local ones; ``extra`` (1-D) is summed over ranks.

        One collective for both (two only for the inf-norm with ``extra``).
        """
        if len(norms) != len(self.counts):
            raise ValueError(f"got {len(norms)} norms for {len(self.counts)} tensors")
        if not norms:
            return [], None if extra is None else _all_reduce_sum(extra)
        device = norms[0].device
        stacked = torch.stack([n.to(device, torch.float64) for n in norms])
        mask = torch.tensor(self.counts, dtype=torch.bool, device=device)
        inf = math.isinf(norm_type)
        if inf:   # NaN is not ordered: make it +inf, so MAX keeps "non-finite"
            vec = torch.where(mask, torch.nan_to_num(stacked, nan=math.inf), 0.0)
        else:
            vec = torch.where(mask, stacked.pow(norm_type), 0.0)
        n = len(norms)
        if extra is not None and not inf:
            vec = torch.cat([vec, extra.to(device, torch.float64).reshape(-1)])
        dist = torch.distributed
        dist.all_reduce(vec, op=dist.ReduceOp.MAX if inf else dist.ReduceOp.SUM)
        full = vec[:n] if inf else vec[:n].pow(1.0 / norm_type)
        reduced_extra = None
        if extra is not None:
            reduced_extra = _all_reduce_sum(extra) if inf else vec[n:].to(extra.dtype)
        return [f.to(o.dtype) for f, o in zip(full.unbind(0), norms)], reduced_extra


def _all_reduce_sum(t: Tensor) -> Tensor:
    out = t.clone()
    torch.distributed.all_reduce(out)
    return out


def reducer_for(tensors: list[Tensor]) -> ShardReducer | None:
    """A :class:`ShardReducer` if any of ``tensors`` is a DTensor, else None (nothing to do)."""
    if sharded(tensors):
        return ShardReducer(tensors)
    return None


def agree(tensors: list[Tensor], norms: list[Tensor], values: Tensor
          ) -> tuple[list[Tensor], Tensor]:
    """Full norms of ``tensors`` and ``values`` summed over all ranks, in one all-reduce.

    Used where a decision rests on per-rank values (the loss under DDP): the sum (or the mean,
    dividing by the world size) is the same on every rank, and so is the decision.
    """
    _, size = world()
    red = reducer_for(tensors)
    if red is not None:
        full, summed = red.reduce(norms, 2.0, values)
        return full, summed  # type: ignore[return-value]
    if size > 1:
        return norms, _all_reduce_sum(values)
    return norms, values


class StateView(MutableMapping):
    """A parameter's optimizer state seen through a conversion of its tensors (subclasses
    define ``__getitem__`` and ``__setitem__``); deleting and iterating act on the state."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def __delitem__(self, key: str) -> None:
        del self.state[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.state)

    def __len__(self) -> int:
        return len(self.state)


class LocalView(StateView):
    """A parameter's optimizer state with DTensor values seen as their local shards.

    Reads give ``to_local()`` views (written through in place); a plain tensor of the local
    shape stored under a key is wrapped back into a DTensor laid out like ``param``, so
    ``optimizer.state_dict()`` keeps DTensors (as torch's optimizers do under FSDP2).
    """

    def __init__(self, state: dict[str, Any], param: Tensor) -> None:
        super().__init__(state)
        self.param = param

    def __getitem__(self, key: str) -> Any:
        return local(self.state[key])

    def __setitem__(self, key: str, value: Any) -> None:
        p = self.param
        if (isinstance(value, Tensor) and not is_dtensor(value) and value.ndim > 0
                and value.shape == p.to_local().shape):
            from torch.distributed.tensor import DTensor
            value = DTensor.from_local(value, p.device_mesh, p.placements, run_check=False,
                                       shape=p.shape, stride=p.stride())
        self.state[key] = value


def full_tensors(params: list[Tensor], states: list[Any]) -> list[Tensor]:
    """The original (DTensor) parameters behind local views, found through :class:`LocalView`
    states; plain parameters are returned as they are."""
    return [s.param if isinstance(s, LocalView) else p for p, s in zip(params, states)]


def param_unit_norms(params: list[Tensor], unit_norms: Any, axes: list[int]) -> list[Tensor]:
    """AGC's unit-wise weight norms of (possibly sharded) parameters.

    A unit is a row (index of dim 0) for ``ndim >= 2``: under Shard(0) every row is whole on
    one rank, so local row norms are exact. A 1-D or 0-dim tensor is one unit: its norm is the
    full tensor's, reduced over the shards (one all-reduce for all of them together). Units on
    another axis (``unit_axis``, Conv1D weights) would be split by Shard(0): refused.
    """
    locals_ = [local(p.detach()) for p in params]
    out = unit_norms(locals_, axes=axes)
    sharded = [i for i, p in enumerate(params) if is_dtensor(p) and p.ndim <= 1]
    for p, axis in zip(params, axes):
        if is_dtensor(p):
            check_placements(p, "parameter clipped unit-wise (AGC)")
            if p.ndim > 1 and axis % p.ndim != 0:
                raise NotImplementedError(
                    f"AGC with units on axis {axis} of a {p.ndim}-D FSDP2 weight (shape "
                    f"{tuple(p.shape)}): Shard(0) splits every such unit across ranks; use "
                    "unit_axis=0 (torch's layout) under FSDP2")
    if sharded:
        full, _ = ShardReducer([params[i] for i in sharded]).reduce([out[i] for i in sharded])
        for i, n in zip(sharded, full):
            out[i] = n
    return out
