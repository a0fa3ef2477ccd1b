"""On-device statistics: everything stays a tensor until one transfer per recorded step.

* gradient, weight and update norms of all parameters: one ``torch._foreach_norm`` pass each;
  module norms are ``sqrt(sum of squares)`` of their parameters' norms (one ``index_add_``);
* activation statistics are accumulated by forward hooks as running sums (so gradient
  accumulation over several micro-batches is summarised as one step), and the norm of the
  gradient that flows back into each layer's output by a tensor hook; the spread (std,
  saturated share) of outputs and output gradients of more than :data:`SAMPLE` values is
  estimated on an evenly spaced sample of rows (:func:`sample`); the mean and dead units
  always read the whole output;
* :func:`finalize` assembles one flat vector, all-reduces what differs between ranks under
  ``torch.distributed`` (activation sums, loss), and reads it back once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._distributed import ShardReducer, local
from ..clip.base import grad_norms, square_sum
from .alive import AliveLayout, Slot
from .layers import LayerIndex
from .transformer import LogitStats

__all__ = ["ActivationStats", "Pending", "norms", "first_tensor", "finalize", "pack", "unpack",
           "ratio", "sample", "SAMPLE"]

#: Karpathy ("Building makemore", part 3): a tanh unit with |a| > 0.97 passes < 6% of the
#: gradient (1 - 0.97**2 = 0.059). The sigmoid band with the same relative slope
#: (sigma' / max sigma' = 0.059) is |sigma - 0.5| > 0.485, since tanh(x) = 2 sigma(2x) - 1.
TANH_SATURATED = 0.97
SIGMOID_SATURATED = 0.485

#: The spread statistics of a larger output (its sum of squares, hence the std, and the
#: saturated share) and the RMS of a larger output gradient are estimated on an evenly spaced
#: sample of about this many values (every k-th row of its last dimension): the standard error
#: of a share estimated from 2**20 values is at most 0.05 percentage points, and a wide layer's
#: spread no longer reads every value. The mean is always exact: its sum reads every value, so
#: one non-finite value anywhere in an output is seen (``nonfinite`` names the first module
#: whose mean is not finite). Below the limit every value is read: there the fixed cost of
#: each op inside a training step, not the bytes, dominates (docs/benchmarks.md).
SAMPLE = 2 ** 20


def sample(t: Tensor) -> Tensor:
    """``t`` itself, or for a contiguous ``t`` of more than :data:`SAMPLE` values every
    ``k``-th row of ``t.view(-1, t.shape[-1])`` (``k = ceil(numel / SAMPLE)``), a view."""
    n = t.numel()
    if n <= SAMPLE or t.dim() == 0 or not t.is_contiguous():
        return t
    rows = t.view(-1, t.shape[-1]) if t.dim() > 1 else t.view(-1, 1)
    return rows[::math.ceil(n / SAMPLE)]


def norms(tensors: list[Tensor], device: torch.device) -> Tensor:
    """L2 norms of ``tensors`` as one float32 vector on ``device`` (one foreach pass, no sync;
    a sparse gradient counts by its stored values, as in clipping; float16 accumulated in
    float32, so finite values never give an infinite norm).

    DTensors (FSDP2) give the norms of their local shards; :func:`finalize` reduces them."""
    if not tensors:
        return torch.zeros(0, device=device)
    out = grad_norms([local(t) for t in tensors], wide_half=True)
    if any(n.device != device or n.dtype != torch.float32 for n in out):
        out = [n.to(device, torch.float32) for n in out]
    return torch.stack(out)


def first_tensor(out: Any) -> Tensor | None:
    """The first floating-point tensor of a module output (``RNN`` returns ``(out, h)``; dict
    outputs are searched in insertion order)."""
    if isinstance(out, Tensor):
        return out if out.is_floating_point() else None
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for item in out:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


class ActivationStats:
    """Running sums of module outputs and of the gradients flowing back into them."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # per module: the 0-dim partial sums of each call, in call order (stacked once, when
        # the step is recorded: no small op per call to keep a running total)
        self.acc: dict[str, list[Tensor]] = {}  # [sum, sum of squares(, saturated count)]...
        self.count: dict[str, int] = {}
        self.scale: dict[str, list[float]] = {}  # per partial sum: numel / sampled numel
        self.alive: dict[str, dict[tuple[int, ...], Tensor]] = {}
        self.out_grad: dict[str, list[Tensor]] = {}   # sums of squares of d loss / d output
        self.out_grad_count: dict[str, int] = {}
        self.forward_order: list[str] = []    # modules in the order they first ran, also
        self._ordered: set[str] = set()      # without grad (:meth:`saw`)
        self.backward_order: list[str] = []
        self.logits = LogitStats()            # log Z and attention logits (transformer.py)

    def on_output(self, name: str, kind: str | None, t: Tensor) -> None:
        """Add one output ``t`` of module ``name`` (activation ``kind`` or None) to the sums:
        the sum of every value; the sum of squares and the saturated count of its
        :func:`sample`, weighted by ``numel / sample numel`` when the step is gathered (``t`` is
        detached, so nothing is recorded for autograd: no ``no_grad`` needed)."""
        t = t.detach()
        s = sample(t)
        acc = None if t.dtype in (torch.float32, torch.float64) else torch.float32
        parts = [t.sum(dtype=acc), square_sum(s)]
        if kind == "tanh":
            parts.append(torch.count_nonzero(s.abs() > TANH_SATURATED))
        elif kind == "sigmoid":
            parts.append(torch.count_nonzero((s - 0.5).abs() > SIGMOID_SATURATED))
        scale = t.numel() / s.numel()
        if name in self.acc:
            self.acc[name] += parts
            self.scale[name] += [1.0] + [scale] * (len(parts) - 1)
            self.count[name] += t.numel()
        else:
            self.acc[name], self.count[name] = parts, t.numel()
            self.scale[name] = [1.0] + [scale] * (len(parts) - 1)
            self.saw(name)
        if kind == "relu":
            self._add_alive(name, t)          # a unit is dead only if it is 0 in every row

    def saw(self, name: str) -> None:
        """Module ``name`` ran: its place in :attr:`forward_order`. A forward without grad is
        placed too (nothing else is recorded): a reentrant activation checkpoint runs its blocks
        without grad and records them in the backward's recompute, last block first."""
        if name not in self._ordered:
            self._ordered.add(name)
            self.forward_order.append(name)

    def _add_alive(self, name: str, t: Tensor) -> None:
        """A unit (feature or channel, dim 1) is alive if it is non-zero somewhere in the batch."""
        if t.dim() >= 2:
            dims = [d for d in range(t.dim()) if d != 1]
            alive = t.amax(dim=dims) > 0
        else:
            alive = t > 0
        slots = self.alive.setdefault(name, {})
        key = tuple(alive.shape)
        slots[key] = slots[key] | alive if key in slots else alive

    def on_out_grad(self, name: str, g: Tensor) -> None:
        """Add the gradient ``g`` of the loss with respect to module ``name``'s output (its
        :func:`sample` for a large output)."""
        s = sample(g.detach())
        sq = square_sum(s)
        if name in self.out_grad:
            self.out_grad[name].append(sq)
            self.out_grad_count[name] += s.numel()
        else:
            self.out_grad[name], self.out_grad_count[name] = [sq], s.numel()
            self.backward_order.append(name)

    def _totals(self, index: LayerIndex, zeros: Tensor, device: torch.device
                ) -> tuple[Tensor, Tensor]:
        """[sum, sum of squares, saturated count] per tracked module (float64, zeros where the
        hook never fired; sampled sums scaled up to the whole output) and the output gradients'
        sums of squares per layer, each one stack of the calls' partial sums and one
        ``index_add_`` over the calls of a module."""
        where, parts, scale, saturating = [], [], [], set(index.saturating)
        for i, n in enumerate(index.tracked):
            got = self.acc.get(n, [])
            width = 3 if n in saturating else 2
            where += [3 * i + k % width for k in range(len(got))]
            parts += got
            scale += self.scale.get(n, [])
        acc = _gather(zeros.new_zeros(3 * len(index.tracked)), where, parts, device, scale)
        where, parts = [], []
        for i, n in enumerate(index.layer_names):
            got = self.out_grad.get(n, [])
            where += [i] * len(got)
            parts += got
        og = _gather(zeros.new_zeros(len(index.layer_names)), where, parts, device)
        return acc, og

    def sums(self, index: LayerIndex, device: torch.device
             ) -> tuple[dict[str, Tensor], dict[Slot, Tensor]]:
        """Every fixed-size sum that is added over ranks, by name, and the ReLU units' alive
        flags by slot (``alive.py`` lays them out alike on every rank).

        ``acc``: [sum, sum of squares, saturated count] per tracked module; ``og``: output
        gradient sums of squares per layer; ``counts`` / ``og_counts``: how many values each
        sum holds (0: the hook never fired this step).
        """
        acc, og = self._totals(index, index.zeros(device), device)
        counts = [float(self.count.get(n, 0)) for n in index.tracked]
        og_counts = [float(self.out_grad_count.get(n, 0)) for n in index.layer_names]
        masks = {(i, shape): mask.to(device, torch.float64).reshape(-1)
                 for i, n in enumerate(index.rectified)
                 for shape, mask in self.alive.get(n, {}).items()}
        host = torch.tensor(counts + og_counts, dtype=torch.float64).to(device)
        return {"acc": acc, "og": og,
                "counts": host[:len(counts)], "og_counts": host[len(counts):],
                **self.logits.sums(index.logits, index.attention, device)}, masks

def _gather(out: Tensor, where: list[int], parts: list[Tensor], device: torch.device,
            scale: list[float] | None = None) -> Tensor:
    """``out`` (float64) with each of ``parts`` (0-dim), times its ``scale`` if given, added at
    its index in ``where``."""
    if not parts:
        return out
    if any(v.device != device for v in parts):
        parts = [v.to(device) for v in parts]
    values = torch.stack(parts).to(torch.float64)      # one float32 -> float64 conversion
    if scale is not None and any(w != 1.0 for w in scale):
        values = values * torch.tensor(scale, dtype=torch.float64).to(device)
    return out.index_add_(0, torch.tensor(where, device=device), values)


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
    one all-reduce of what differs between ranks and one host read.

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
