"""On-device statistics: everything stays a tensor until one transfer per recorded step.

* gradient, weight and update norms of all parameters: one ``torch._foreach_norm`` pass each;
  module norms are ``sqrt(sum of squares)`` of their parameters' norms (one ``index_add_``);
* activation statistics are accumulated by forward hooks as running sums (so gradient
  accumulation over several micro-batches is summarised as one step), and the norm of the
  gradient that flows back into each layer's output by a tensor hook;
* :func:`finalize` assembles one flat vector, all-reduces what differs between ranks under
  ``torch.distributed`` (activation sums, loss), and reads it back once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..clip.base import grad_norms
from .layers import LayerIndex

__all__ = ["ActivationStats", "Pending", "norms", "first_tensor"]

#: Karpathy ("Building makemore", part 3): a tanh unit with |a| > 0.97 passes < 6% of the
#: gradient (1 - 0.97**2 = 0.059). The sigmoid band with the same relative slope
#: (sigma' / max sigma' = 0.059) is |sigma - 0.5| > 0.485, since tanh(x) = 2 sigma(2x) - 1.
TANH_SATURATED = 0.97
SIGMOID_SATURATED = 0.485


def norms(tensors: list[Tensor], device: torch.device) -> Tensor:
    """L2 norms of ``tensors`` as one float32 vector on ``device`` (one foreach pass, no sync;
    a sparse gradient counts by its stored values, as in clipping)."""
    if not tensors:
        return torch.zeros(0, device=device)
    out = grad_norms(tensors)
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
        self.acc: dict[str, Tensor] = {}        # [sum, sum of squares(, saturated count)]
        self.count: dict[str, int] = {}
        self.alive: dict[str, dict[tuple[int, ...], Tensor]] = {}
        self.out_grad: dict[str, Tensor] = {}   # sum of squares of d loss / d output
        self.out_grad_count: dict[str, int] = {}
        self.forward_order: list[str] = []
        self.backward_order: list[str] = []

    @torch.no_grad()
    def on_output(self, name: str, kind: str | None, t: Tensor) -> None:
        """Add one output ``t`` of module ``name`` (activation ``kind`` or None) to the sums."""
        t = t.detach()
        if kind == "tanh":
            sat = torch.count_nonzero(t.abs() > TANH_SATURATED)
        elif kind == "sigmoid":
            sat = torch.count_nonzero((t - 0.5).abs() > SIGMOID_SATURATED)
        else:
            sat = None
        acc = None if t.dtype in (torch.float32, torch.float64) else torch.float32
        parts = [t.sum(dtype=acc), torch.linalg.vector_norm(t, dtype=acc).square()]
        if sat is not None:
            parts.append(sat.to(parts[0].dtype))
        vec = torch.stack(parts).to(torch.float64)    # float32 passes, float64 running sums
        if name in self.acc:
            self.acc[name].add_(vec)
            self.count[name] += t.numel()
        else:
            self.acc[name], self.count[name] = vec, t.numel()
            self.forward_order.append(name)
        if kind == "relu":
            self._add_alive(name, t)

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

    @torch.no_grad()
    def on_out_grad(self, name: str, g: Tensor) -> None:
        """Add the gradient ``g`` of the loss with respect to module ``name``'s output."""
        acc = None if g.dtype in (torch.float32, torch.float64) else torch.float32
        sq = torch.linalg.vector_norm(g, dtype=acc).square().to(torch.float64)
        if name in self.out_grad:
            self.out_grad[name].add_(sq)
            self.out_grad_count[name] += g.numel()
        else:
            self.out_grad[name], self.out_grad_count[name] = sq, g.numel()
            self.backward_order.append(name)

    def raw(self, index: LayerIndex,
            device: torch.device) -> tuple[Tensor, tuple[tuple[int, int], ...]]:
        """All sums as one float64 vector (to all-reduce) and the dead-unit segment layout.

        Layout: [sum, sum of squares, saturated] per tracked module, output-gradient sums of
        squares per layer, output counts, output-gradient counts, alive flags of ReLU units.
        """
        z = index.zeros(device)
        acc = [self._triple(self.acc.get(n), z).to(device) for n in index.tracked]
        counts = [float(self.count.get(n, 0)) for n in index.tracked]
        layers = index.layer_names
        og = [self.out_grad.get(n, z[0]).to(device).reshape(1) for n in layers]
        og_counts = [float(self.out_grad_count.get(n, 0)) for n in layers]
        alive, segments = [], []
        for i, n in enumerate(index.rectified):
            for mask in self.alive.get(n, {}).values():
                alive.append(mask.to(device, torch.float64).reshape(-1))
                segments.append((i, mask.numel()))
        host = torch.tensor(counts + og_counts, dtype=torch.float64).to(device)
        return torch.cat([*acc, *og, host, *alive]), tuple(segments)

    @staticmethod
    def _triple(vec: Tensor | None, zeros: Tensor) -> Tensor:
        if vec is None:
            return zeros
        return vec if vec.numel() == 3 else torch.cat([vec, zeros[:1]])


class Pending:
    """Device tensors of one recorded step, waiting for the update norms and the transfer."""

    def __init__(self, step: int, grad: Tensor, weight: Tensor, loss: Tensor | None,
                 acts: ActivationStats | None) -> None:
        self.step, self.grad, self.weight, self.loss, self.acts = step, grad, weight, loss, acts
        self.snapped = False      # True when the parameters were copied to measure the update


def finalize(p: Pending, index: LayerIndex, update: Tensor | None, device: torch.device,
             world: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Assemble a recorded step as one row (see ``LayerIndex.columns``) with one host read.

    Returns the row and the host-side extras (which modules ran, forward and backward order).
    """
    owner = index.on_device("owner", device)
    n_layers = len(index.layers)

    def per_layer(v: Tensor) -> Tensor:
        return torch.zeros(n_layers, device=device).index_add_(0, owner, v.square()).sqrt()

    grad_l, weight_l = per_layer(p.grad), per_layer(p.weight)
    upd_l = (per_layer(update) / weight_l if update is not None
             else torch.full((n_layers,), float("nan"), device=device))
    loss = (p.loss.detach().reshape(1).to(device, torch.float64) if p.loss is not None
            else torch.full((1,), float("nan"), dtype=torch.float64, device=device))
    raw, segments = (p.acts.raw(index, device) if p.acts is not None
                     else (torch.zeros(0, dtype=torch.float64, device=device), []))
    shared = torch.cat([loss, raw])
    if world > 1:
        torch.distributed.all_reduce(shared)     # sums over ranks: every rank gets the same
        shared[0] /= world
    parts = [shared[:1].float(), p.grad.square().sum().sqrt().reshape(1), grad_l, weight_l,
             upd_l, p.grad]
    extra: dict[str, Any] = {}
    if p.acts is not None:
        act_part, ran = _activation_columns(shared[1:], segments, index, device)
        parts.append(act_part)
        parts.append(ran)
        extra = {"forward_order": p.acts.forward_order, "backward_order": p.acts.backward_order}
    row = torch.cat([x.to(torch.float64) for x in parts]).cpu().numpy()   # the one transfer
    if p.acts is not None:
        n_tracked = len(index.tracked)
        extra["ran"] = {n: bool(c > 0) for n, c in zip(index.tracked, row[-n_tracked:])}
        row = row[:-n_tracked]
    return row, extra


def _activation_columns(raw: Tensor, segments: tuple[tuple[int, int], ...], index: LayerIndex,
                        device: torch.device) -> tuple[Tensor, Tensor]:
    """out_grad_rms, out_mean, out_std, saturated, dead (+ output counts) from the sums."""
    n_t, n_l = len(index.tracked), len(index.layers)
    acc = raw[:3 * n_t].reshape(n_t, 3)
    og = raw[3 * n_t:3 * n_t + n_l]
    counts = raw[3 * n_t + n_l:4 * n_t + n_l]
    og_counts = raw[4 * n_t + n_l:4 * n_t + 2 * n_l]
    alive = raw[4 * n_t + 2 * n_l:]
    mean = acc[:, 0] / counts
    std = (acc[:, 1] / counts - mean.square()).clamp_min(0).sqrt()
    og_rms = (og / og_counts).sqrt()
    sat_idx = index.on_device("saturating_pos", device)
    sat = acc[sat_idx, 2] / counts[sat_idx]
    seg = index.segments(segments, device)
    n_r = len(index.rectified)
    units = torch.zeros(n_r, dtype=torch.float64, device=device).index_add_(
        0, seg, torch.ones_like(alive))
    dead = torch.zeros(n_r, dtype=torch.float64, device=device).index_add_(
        0, seg, (alive == 0).to(torch.float64)) / units
    return torch.cat([og_rms, mean, std, sat, dead]), counts
