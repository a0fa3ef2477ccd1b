"""One recorded step, assembled: the device tensors of a step become one row of the history.

:func:`finalize` lays the step's norms and activation sums out as ``index.columns``
(``layers.ROW``), all-reduces what differs between ranks in one collective (activation sums,
the loss, FSDP2's local-shard squares), derives the statistics (means, spreads, ratios, shares)
and reads the row back to the host in one transfer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._distributed import ShardReducer
from .alive import AliveLayout
from .collect import ActivationStats
from .layers import LayerIndex

__all__ = ["Pending", "finalize", "pack", "unpack", "ratio"]


def pack(parts: dict[str, Tensor]) -> tuple[Tensor, dict[str, slice]]:
    """Named float64 tensors as one flat vector (one collective, one transfer) and where each
    name lies in it; :func:`unpack` inverts it."""
    slices, start = {}, 0
    for k, t in parts.items():
        slices[k] = slice(start, start + t.numel())
        start += t.numel()
    return torch.cat([t.reshape(-1).to(torch.float64) for t in parts.values()]), slices


def unpack(flat: Tensor, slices: dict[str, slice]) -> dict[str, Tensor]:
    return {k: flat[sl] for k, sl in slices.items()}


def ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, NaN where the reference norm is zero (a zero-initialised
    LoRA B, a zero bias): a ratio to nothing is undefined, never infinite."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny),
                       torch.full_like(num, float("nan")))


class Pending:
    """Device tensors of one recorded step, waiting for the update norms and the transfer."""

    def __init__(self, step: int, grad: Tensor, weight: Tensor, loss: Tensor | None,
                 acts: ActivationStats | None) -> None:
        self.step, self.grad, self.weight, self.loss, self.acts = step, grad, weight, loss, acts
        self.snapped = False      # True when the parameters were copied to measure the update
        self.grad_full = False    # True when ``grad`` holds full-tensor norms (FSDP2: reduced)
        self.adam: dict[str, Tensor] | None = None   # adam.adam_parts of the measured step
        self.scale: Tensor | None = None  # the loss scale of a GradScaler backward (handover.py)


def finalize(p: Pending, index: LayerIndex, update: Tensor | None, device: torch.device,
             world: int, shards: ShardReducer | None = None, adam: bool = False,
             layout: AliveLayout | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Assemble a recorded step as one row laid out as ``index.columns`` (``layers.ROW``), with
    one all-reduce of what differs between ranks and one host read (with several ranks and ReLU
    units, one more: their agreed slots, ``alive.py``).

    Under FSDP2 (``shards``) the local-shard norms travel in the same all-reduce as the loss and
    the activation sums, and come back as the full tensors' norms.

    ``adam``: the row has the Adam columns (``adam_eps_share``, ``update_cosine``), from
    ``p.adam`` where the step was measured, else NaN.

    With a loss scale ``p.scale`` (a GradScaler's backward) the output-gradient sums of squares
    are divided by ``scale**2``, and ``extra["loss_scale"]`` holds it.

    ``layout``: the ReLU units' slots agreed over ranks (kept by the monitor; ``alive.py``).

    Returns the row and the host-side extras (which modules ran, forward and backward order).
    """
    owner = index.on_device("owner", device)
    n_layers = len(index.layers)

    def per_layer(v: Tensor) -> Tensor:          # float64: a norm above ~1.8e19 squares past
        v = v.to(torch.float64).square()           # float32's largest value
        return torch.zeros(n_layers, dtype=torch.float64, device=device).index_add_(
            0, owner, v).sqrt()

    loss = (p.loss.detach().reshape(1).to(device, torch.float64) if p.loss is not None
            else torch.full((1,), float("nan"), dtype=torch.float64, device=device))
    shared, masks, layout = {"loss": loss}, {}, layout or AliveLayout()
    if p.acts is not None:
        sums, masks = p.acts.sums(index, device)
        shared.update(sums)
        shared.update(layout.pack(masks, world, device))
    sharded = _local_squares(p, update, shards, device)
    shared = _sum_over_ranks({**shared, **sharded}, world)
    segments = layout.settle(shared, masks, world, device) if p.acts is not None else ()
    if sharded:                  # full-tensor norms from the summed squares of the shards
        p.grad = shared["sq_grad"].sqrt().float() if "sq_grad" in shared else p.grad
        p.weight = shared["sq_weight"].sqrt().float()
        update = shared["sq_update"].sqrt().float() if update is not None else None
        if p.adam is not None:
            p.adam = {k: shared[f"adam_{k}"] for k in p.adam}
    weight_l = per_layer(p.weight)
    stats = {"loss": shared["loss"],
             "total_grad_norm": p.grad.to(torch.float64).square().sum().sqrt(),
             "grad_norm": per_layer(p.grad), "weight_norm": weight_l,
             "update_ratio": (ratio(per_layer(update), weight_l) if update is not None
                              else torch.full((n_layers,), float("nan"), device=device)),
             "param_grad_norm": p.grad}
    columns = index.columns(p.acts is not None, adam)
    if adam:
        stats.update(_adam_stats(p.adam, update, owner, n_layers, device))
    extra: dict[str, Any] = {}
    if p.acts is not None:
        if p.scale is not None:    # output gradients were taken in the scaled backward
            shared["og"] = shared["og"] / p.scale.square()
        stats.update(_activation_stats(shared, segments, index, device))
        stats["ran"] = shared["counts"]
        extra = {"forward_order": p.acts.forward_order, "backward_order": p.acts.backward_order,
                 "no_grad": [n for n in p.acts.forward_order if n not in p.acts.acc]}
    if p.scale is not None:
        stats["loss_scale"] = p.scale.reshape(1)
    extras = [k for k in ("ran", "loss_scale") if k in stats]
    flat, slices = pack({k: stats[k] for k in [*columns, *extras]})
    row = flat.cpu().numpy()                                     # the one transfer
    if "ran" in slices:
        extra["ran"] = {n: bool(c > 0) for n, c in zip(index.tracked, row[slices["ran"]])}
    if "loss_scale" in slices:
        extra["loss_scale"] = float(row[slices["loss_scale"]][0])
    if shards is None:
        _overflowed_weights(row, slices, index)
    return (row[:slices[extras[0]].start] if extras else row), extra


def _overflowed_weights(row: np.ndarray, slices: dict[str, slice], index: LayerIndex) -> None:
    """A layer's weight norm is +inf although every weight is finite when the float32 sum of
    squares overflowed (a norm above ~1.8e19): then ``row`` gets the norm in float64, of the
    weights as they are when the step is read (after its update; a rare path, and in it one
    update barely moves so large a norm), and that layer's update ratio is NaN (not measured).
    The float64 norm of float32 values is finite exactly when every value is (their squares
    stay below 1.2e77), so an Inf or NaN weight leaves it non-finite: ``nonfinite`` names the
    weights. One host read per such layer."""
    weight = row[slices["weight_norm"]]
    for layer in np.flatnonzero(np.isposinf(weight)):
        ps = [index.params[i].detach() for i in (index.owner == int(layer)).nonzero().flatten()]
        wide = torch.stack([torch.linalg.vector_norm(p, dtype=torch.float64) for p in ps])
        norm = float(torch.linalg.vector_norm(wide))
        if math.isfinite(norm):
            weight[layer] = norm
            row[slices["update_ratio"]][layer] = math.nan


def _local_squares(p: Pending, update: Tensor | None, shards: ShardReducer | None,
                   device: torch.device) -> dict[str, Tensor]:
    """FSDP2: squared local-shard norms to sum over ranks, each replicated copy counted once."""
    if shards is None:
        return {}
    mask = shards.mask(device)
    parts = {"sq_grad": None if p.grad_full else p.grad, "sq_weight": p.weight,
             "sq_update": update}
    out = {k: v.to(torch.float64).square() * mask for k, v in parts.items() if v is not None}
    for k, v in (p.adam or {}).items():           # counts and dot products: plain sums
        out[f"adam_{k}"] = v * mask
    return out


def _adam_stats(parts: dict[str, Tensor] | None, update: Tensor | None, owner: Tensor,
                n_layers: int, device: torch.device) -> dict[str, Tensor]:
    """``adam_eps_share`` per layer and the model's ``update_cosine`` = ``<dw, -g> / (||dw||
    ||g||)`` from :func:`gradwell.watch.adam.adam_parts` (NaN where not measured)."""
    if parts is None or update is None:
        return {"adam_eps_share": torch.full((n_layers,), float("nan"), device=device),
                "update_cosine": torch.full((1,), float("nan"), device=device)}

    def per_layer(v: Tensor) -> Tensor:
        return torch.zeros(n_layers, dtype=torch.float64, device=device).index_add_(0, owner, v)

    share = ratio(per_layer(parts["below"]), per_layer(parts["counted"]))
    moved = update.to(torch.float64).square().sum().sqrt()
    cos = ratio(parts["dot"].sum(), moved * parts["gsq"].sum().sqrt())
    return {"adam_eps_share": share, "update_cosine": cos.reshape(1)}


def _sum_over_ranks(shared: dict[str, Tensor], world: int) -> dict[str, Tensor]:
    """Sum the activation sums over ranks and average the loss (every rank gets the same).

    Each rank's backward runs on its local mean loss, ``world`` times the global one per example;
    DDP and FSDP2 average the gradients over ranks, so the output gradients are divided too."""
    if world <= 1:
        return shared
    flat, slices = pack(shared)
    torch.distributed.all_reduce(flat)
    out = unpack(flat, slices)
    out["loss"] = out["loss"] / world
    if "og" in out:
        out["og"] = out["og"] / world ** 2
    return out


def _activation_stats(s: dict[str, Tensor], segments: tuple[tuple[int, int], ...],
                      index: LayerIndex, device: torch.device) -> dict[str, Tensor]:
    """out_grad_rms, out_mean, out_std, saturated, dead, log_z_rms, attention_logit_max from
    the sums (NaN where a hook never fired: a count of zero)."""
    acc, counts = s["acc"].reshape(-1, 3), s["counts"]
    mean = ratio(acc[:, 0], counts)
    std = (ratio(acc[:, 1], counts) - mean.square()).clamp_min(0).sqrt()
    sat_idx = index.on_device("saturating_pos", device)
    seg = index.segments(segments, device)
    n_r = len(index.rectified)
    alive = s["alive"]
    units = torch.zeros(n_r, dtype=torch.float64, device=device).index_add_(
        0, seg, torch.ones_like(alive))
    dead = torch.zeros(n_r, dtype=torch.float64, device=device).index_add_(
        0, seg, (alive == 0).to(torch.float64))
    return {"out_grad_rms": ratio(s["og"], s["og_counts"]).sqrt(), "out_mean": mean,
            "out_std": std, "saturated": ratio(acc[sat_idx, 2], counts[sat_idx]),
            "dead": ratio(dead, units), "log_z_rms": ratio(s["log_z"], s["log_z_n"]).sqrt(),
            "attention_logit_max": ratio(s["attn"], s["attn_n"])}
