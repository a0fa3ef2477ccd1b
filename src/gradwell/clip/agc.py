"""Adaptive gradient clipping (AGC): cap each output unit's gradient relative to its weights.

Brock, De, Smith & Simonyan 2021, "High-Performance Large-Scale Image Recognition Without
Normalization" (ICML), section 4, eq. (3). For every unit :math:`i` (a row of a weight matrix,
one output filter of a convolution) of layer :math:`\\ell`:

.. math::

    G^\\ell_i \\leftarrow
    \\begin{cases}
      \\lambda \\dfrac{\\lVert W^\\ell_i\\rVert^\\star}{\\lVert G^\\ell_i\\rVert} G^\\ell_i
        & \\text{if } \\lVert G^\\ell_i\\rVert / \\lVert W^\\ell_i\\rVert^\\star > \\lambda \\\\
      G^\\ell_i & \\text{otherwise}
    \\end{cases}
    \\qquad \\lVert W_i\\rVert^\\star = \\max(\\lVert W_i\\rVert_F, \\epsilon)

with the clipping threshold :math:`\\lambda` (``clipping``) and :math:`\\epsilon = 10^{-3}`, which
keeps zero-initialised units (biases, gains) from being frozen. Units follow the paper's
reference code: a tensor with ``ndim >= 2`` has one unit per index of its output axis, the
first in torch's layout (``unit_axis=0``); a 1-D tensor (bias, norm gain) or a scalar is a
single unit. Hugging Face's ``Conv1D`` (GPT-2's attention and MLP) stores its weight as
(in, out): pass ``model=`` and those weights are clipped per output unit along their last
axis (detected by class name, ``Conv1D`` with an ``nf`` attribute equal to the last dim).

The paper does not clip the final classifier layer ("we find it is beneficial not to clip the
final linear layer"); pass it as ``exclude=`` (a module, a tensor, or an iterable of them).

Under FSDP2 (``Shard(0)``) every unit is whole on one rank, so row norms are local; the norms
of sharded 1-D weights (one unit each) are reduced in one all-reduce.

Cost: two row-norm reductions per matrix (gradient and weight; the norms of 1-D gradients come
from the caller), four foreach ops on the small list of unit norms, one broadcasting foreach
multiply; no value is read back to the host.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from .._checks import invalid
from .._distributed import param_unit_norms
from .base import Clipper, check_positive, refuse_sparse

__all__ = ["AGC", "unit_norms", "conv1d_weights"]

Excludable = nn.Module | Tensor | Iterable[nn.Module | Tensor]


class AGC(Clipper):
    """Unit-wise adaptive gradient clipping (Brock et al. 2021), in place.

    Args:
        clipping: lambda, the largest allowed ratio ``||G_i|| / max(||W_i||, eps)``, > 0.
            The paper uses 0.01 for batch size 4096 and larger values for smaller batches.
        eps: the floor on unit weight norms, > 0 (paper: 1e-3).
        exclude: parameters left unclipped, typically the final classifier
            (``exclude=model.fc``): modules (all their parameters), tensors, or an iterable
            of either. Matched by identity, so it works the same through ``clip=``,
            ``chain`` and ``clip_``.
        unit_axis: the output-unit axis of ``ndim >= 2`` weights (default 0, torch's
            ``Linear``/``Conv`` layout; -1 or 1 for weights stored (in, out)).
        model: optional; its Hugging Face ``Conv1D`` weights (stored (in, out)) get their
            units on the last axis whatever ``unit_axis`` says.
    """

    scales_globally = False

    def __init__(self, clipping: float = 0.01, eps: float = 1e-3, *,
                 exclude: Excludable | None = None, unit_axis: int = 0,
                 model: nn.Module | None = None) -> None:
        self.clipping = check_positive("clipping", clipping)
        self.eps = check_positive("eps", eps)
        if isinstance(unit_axis, bool) or not isinstance(unit_axis, int):
            raise invalid("unit_axis", "an int (the output-unit axis of weights, 0 for torch's "
                          "layout)", unit_axis, TypeError)
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module or None, got "
                            f"{type(model).__qualname__}")
        self.unit_axis = unit_axis
        self._last_axis = {id(p) for p in conv1d_weights(model)} if model is not None else set()
        self._excluded = _collect(exclude)
        self._excluded_ids = {id(p) for p in self._excluded}

    def __call__(self, grads: list[Tensor], params: list[Tensor], norms: list[Tensor],
                 total: Tensor) -> None:
        if len(grads) != len(params):
            raise ValueError(f"AGC needs one parameter per gradient, got {len(grads)} gradients "
                             f"and {len(params)} parameters")
        keep = [i for i, p in enumerate(params) if id(p) not in self._excluded_ids]
        refuse_sparse("AGC", [grads[i] for i in keep])
        if not keep:
            return None
        gs = [grads[i] for i in keep]
        axes = [-1 if id(params[i]) in self._last_axis else self.unit_axis for i in keep]
        g_units = unit_norms(gs, [norms[i] for i in keep] if norms else None, axes)
        max_norms = param_unit_norms([params[i] for i in keep], unit_norms, axes)  # FSDP2-aware
        torch._foreach_clamp_min_(max_norms, self.eps)
        torch._foreach_mul_(max_norms, self.clipping)
        # min(1, max_norm / ||G_i||): an all-zero unit gives inf -> 1, i.e. it is left alone.
        factors = torch._foreach_div(max_norms, g_units)
        torch._foreach_clamp_max_(factors, 1.0)
        torch._foreach_mul_(gs, factors)  # factors broadcast over each unit
        return None

    @property
    def excluded(self) -> list[Tensor]:
        """The parameters this clipper leaves alone."""
        return list(self._excluded)

    def __repr__(self) -> str:
        extra = f", exclude=<{len(self._excluded)} tensors>" if self._excluded else ""
        if self.unit_axis != 0:
            extra += f", unit_axis={self.unit_axis}"
        if self._last_axis:
            extra += f", model=<{len(self._last_axis)} Conv1D weights>"
        return f"AGC(clipping={self.clipping}, eps={self.eps}{extra})"


def conv1d_weights(model: nn.Module) -> list[Tensor]:
    """The weights of Hugging Face ``Conv1D`` modules in ``model``: stored (in, out), so their
    output units lie along the last axis (matched by class name and ``nf``, no import)."""
    out = []
    for m in model.modules():
        w = getattr(m, "weight", None)
        if (type(m).__name__ == "Conv1D" and isinstance(w, Tensor) and w.ndim == 2
                and getattr(m, "nf", None) == w.shape[-1]):
            out.append(w)
    return out


def unit_norms(tensors: list[Tensor], whole: list[Tensor] | None = None,
               axes: list[int] | None = None) -> list[Tensor]:
    """Frobenius norm of every unit of every tensor (see the module docstring for units).

    Tensors with ``ndim <= 1`` are one unit each: a 0-dim norm from one foreach pass (or from
    ``whole``, the per-tensor norms the caller already has). Larger tensors get one reduction
    over all axes but their unit axis (``axes[i]``, default 0), kept as size-1 axes so that it
    broadcasts.
    """
    out: list[Tensor | None] = [None] * len(tensors)
    small = [i for i, t in enumerate(tensors) if t.ndim <= 1]
    if small:
        if whole is not None:
            found = [whole[i] for i in small]
        else:
            found = list(torch._foreach_norm([tensors[i] for i in small], 2.0))
        for i, n in zip(small, found):
            out[i] = n
    for i, t in enumerate(tensors):
        if t.ndim > 1:
            unit = axes[i] if axes is not None else 0
            if not -t.ndim <= unit < t.ndim:
                raise ValueError(f"unit_axis {unit} is out of range for a {t.ndim}-D weight of "
                                 f"shape {tuple(t.shape)}: allowed {-t.ndim}..{t.ndim - 1}")
            unit %= t.ndim
            dims = tuple(d for d in range(t.ndim) if d != unit)
            out[i] = torch.linalg.vector_norm(t, 2.0, dim=dims, keepdim=True)
    return out  # type: ignore[return-value]


def _collect(exclude: Excludable | None) -> list[Tensor]:
    """The tensors named by ``exclude`` (modules expand to their parameters)."""
    if exclude is None:
        return []
    items = [exclude] if isinstance(exclude, (nn.Module, Tensor)) else exclude
    try:
        items = list(items)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError("exclude must be a module, a tensor or an iterable of them, got "
                        f"{type(exclude).__qualname__}: {exclude!r}") from None
    found: list[Tensor] = []
    for item in items:
        if isinstance(item, nn.Module):
            found.extend(item.parameters())
        elif isinstance(item, Tensor):
            found.append(item)
        else:
            raise TypeError("exclude must hold modules or tensors (e.g. exclude=model.fc), got "
                            f"{type(item).__qualname__}: {item!r}")
    return found
