"""On-device statistics: everything stays a tensor until one transfer per recorded step.

* gradient, weight and update norms of all parameters: one ``torch._foreach_norm`` pass each;
  module norms are ``sqrt(sum of squares)`` of their parameters' norms (one ``index_add_``);
* activation statistics are accumulated by forward hooks as running sums (so gradient
  accumulation over several micro-batches is summarised as one step), and the norm of the
  gradient that flows back into each layer's output by a tensor hook; the spread (std,
  saturated share) of outputs and output gradients of more than :data:`SAMPLE` values is
  estimated on an evenly spaced sample of rows (:func:`sample`); the mean and dead units
  always read the whole output;
* :mod:`gradwell.watch.row` assembles a recorded step from them: one flat vector, one
  all-reduce of what differs between ranks under ``torch.distributed``, one read back.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._distributed import local
from ..clip.base import grad_norms, square_sum
from .alive import Slot
from .layers import LayerIndex
from .transformer import LogitStats

__all__ = ["ActivationStats", "norms", "first_tensor", "sample", "SAMPLE"]

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

    DTensors (FSDP2) give the norms of their local shards; :func:`gradwell.watch.row.finalize`
    reduces them."""
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
