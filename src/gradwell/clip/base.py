"""The clipping protocol shared by every clipper, and the function that applies one.

A clipper sees the gradients of all parameters at once, together with their per-tensor norms
(computed once by the caller and re-used by `gradwell.watch`), and does one of two things:

* *global scaling* (``scales_globally = True``): it returns a 0-dim tensor ``factor`` and leaves
  the gradients alone; the caller multiplies every gradient by it. Gradwell's fused optimizer
  paths fold the factor into the optimizer kernel (``grad_scale = 1 / factor``), so clipping
  costs no extra pass over the gradients.
* *element- or unit-wise clipping* (``scales_globally = False``): it edits the gradients in place
  and returns ``None``.

Neither path reads a value back to the host: factors stay tensors on the gradients' device.
Only the caller, on the CPU where a read is free, looks at the factor
(:func:`effective_factor`) to leave out a multiplication by exactly 1.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import Tensor

from .._checks import check_number, is_number
from .._distributed import local, reducer_for

__all__ = ["Clipper", "clip_", "grad_norms", "square_sum", "total_norm", "check_clipper",
           "nonfinite_flag", "call_clipper"]


class Clipper:
    """Base class of gradwell's clippers. Subclasses implement :meth:`__call__`.

    A *stateful* clipper (``stateful = True``: AutoClip, ZClip) keeps what it learns between
    steps in a plain dict that the caller owns and passes as ``state=``: a gradwell optimizer
    keeps one per clipper position (global for ``clip=``, per parameter group inside a
    ``chain``) in its own ``state_dict()``, so one clipper object can serve several optimizers
    or groups without mixing their histories. Called without ``state=`` (``clip_``, or any
    use outside an optimizer), the clipper uses a dict of its own, saved by
    :meth:`state_dict`.
    """

    #: True when the clipper returns one factor for all gradients instead of editing them.
    scales_globally: bool = False
    #: True when the clipper keeps state between steps (its ``__call__`` takes ``state=``).
    stateful: bool = False
    #: The norm the caller computes per tensor and passes in (2.0, or ``math.inf``).
    norm_type: float = 2.0

    def __call__(self, grads: list[Tensor], params: list[Tensor], norms: list[Tensor],
                 total: Tensor) -> Tensor | None:
        """Clip ``grads``.

        Args:
            grads: the gradients, edited in place by clippers that do not scale globally.
            params: the parameters the gradients belong to, in the same order.
            norms: per-tensor ``norm_type``-norms of ``grads`` (before clipping).
            total: the ``norm_type``-norm of all gradients together (0-dim tensor).

        Stateful clippers take a fifth argument, ``state: dict | None = None``.

        Returns:
            A 0-dim tensor factor (``<= 1``) if :attr:`scales_globally`, else ``None``.
        """
        raise NotImplementedError

    def check_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A validated copy of a saved ``state`` (raises ValueError if it does not fit)."""
        if state:
            raise ValueError(f"{type(self).__name__} is stateless but got state {sorted(state)}")
        return {}

    def copy_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``state`` to save (tensors cloned)."""
        return {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}

    def state_dict(self) -> dict[str, Any]:
        """The clipper's own state (used when called without ``state=``). Stateless: ``{}``."""
        return self.copy_state(self.__dict__.get("_own_state", {}))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned into the clipper's own state."""
        self._own_state = self.check_state(state)

    def own_state(self, state: dict[str, Any] | None) -> dict[str, Any]:
        """``state``, or the clipper's own dict when the caller passes none."""
        if state is not None:
            return state
        return self.__dict__.setdefault("_own_state", {})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def call_clipper(clipper: Clipper, grads: list[Tensor], params: list[Tensor],
                 norms: list[Tensor], total: Tensor, state: dict[str, Any]) -> Tensor | None:
    """Call ``clipper``, handing a stateful one the caller-owned ``state`` dict."""
    if clipper.stateful:
        return clipper(grads, params, norms, total, state=state)  # type: ignore[call-arg]
    return clipper(grads, params, norms, total)


def check_clipper(clip: Any, name: str = "clip") -> Clipper | None:
    """Return ``clip`` if it is a :class:`Clipper` or None, else raise a TypeError naming ``name``."""
    if clip is None or isinstance(clip, Clipper):
        return clip
    raise TypeError(
        f"{name} must be a gradwell.clip object (Value, GlobalNorm, AGC, AutoClip, ZClip) or None, "
        f"got {type(clip).__module__}.{type(clip).__qualname__}: {clip!r}")


def grad_norms(grads: list[Tensor], norm_type: float = 2.0,
               dtype: torch.dtype | None = None, wide_half: bool = False) -> list[Tensor]:
    """Per-tensor ``norm_type``-norms of ``grads`` in one foreach pass (0-dim tensors, no sync);
    ``dtype``: accumulate and return in it (default: each tensor's own). ``wide_half``: float16
    2-norms in float32 (:func:`_two_norms`); the monitor and the guard judge with them, while
    clipping keeps torch's ``clip_grad_norm_`` arithmetic."""
    if not grads:
        return []
    grads = _values(grads)
    if math.isinf(norm_type) and any(g.numel() == 0 for g in grads):
        # an empty tensor (an FSDP2 shard with no rows) has inf-norm 0, the identity of max
        full = [i for i, g in enumerate(grads) if g.numel()]
        found = iter(torch._foreach_norm([grads[i] for i in full], norm_type, dtype=dtype)
                     if full else [])
        return [next(found) if g.numel() else g.new_zeros((), dtype=dtype or _real(g.dtype))
                for g in grads]
    if norm_type == 2.0 and dtype is None:
        return _two_norms(grads, wide_half)
    return list(torch._foreach_norm(grads, norm_type, dtype=dtype))


#: Below this many elements ``torch._foreach_norm`` is the faster way to a 2-norm on the CPU;
#: above it a BLAS dot product is (2.3x for 200 tensors of 100k float32 elements on 2 threads:
#: ``benchmarks/optim_step.py`` and docs/benchmarks.md).
_DOT_MIN_NUMEL = 32768


def _dot_norm_ok(g: Tensor) -> bool:
    # the size first: most tensors of a model (biases, norms) are small and stop there
    return (g.numel() >= _DOT_MIN_NUMEL and g.dtype in (torch.float32, torch.float64)
            and g.layout == torch.strided and g.is_cpu and g.is_contiguous())


def _two_norms(grads: list[Tensor], wide_half: bool = False) -> list[Tensor]:
    """2-norms: ``sqrt(g . g)`` (one BLAS dot) for large contiguous float32/float64 CPU tensors,
    one ``torch._foreach_norm`` pass for the rest; with ``wide_half`` float16 ones are
    accumulated and returned in float32 (a float16 gradient whose every value is finite can
    have a norm above its largest value, 65504: 1e5 values of 300). Otherwise the same
    overflow/underflow as torch's norm (neither rescales: a float32 gradient with norm above
    ~1.8e19 gives inf in both)."""
    out: list[Tensor | None] = [None] * len(grads)
    for i, g in enumerate(grads):
        if _dot_norm_ok(g):
            out[i] = square_sum(g).sqrt_()                # the dot path: one BLAS dot
    for half in (False, True):
        rest = [i for i, o in enumerate(out) if o is None
                and (wide_half and grads[i].dtype == torch.float16) == half]
        if rest:
            found = torch._foreach_norm([grads[i] for i in rest], 2.0,
                                        dtype=torch.float32 if half else None)
            for i, n in zip(rest, found):
                out[i] = n
    return out  # type: ignore[return-value]


def square_sum(t: Tensor) -> Tensor:
    """``sum(t ** 2)`` as a 0-dim tensor, accumulated in float32 (float64 for float64 ``t``).

    One BLAS dot ``t . t`` for a large contiguous float32/float64 CPU tensor (about 4x faster
    than ``torch.linalg.vector_norm(t) ** 2`` for 0.5M float32 elements on 2 threads);
    ``(t * t).sum()`` for other float32/float64 CPU tensors (strided views included, where
    ``vector_norm`` is 3-4x slower still); else ``vector_norm(t, dtype)`` squared, which
    upcasts half precision without overflow. ``t`` is read without autograd (detached)."""
    t = t.detach()
    if _dot_norm_ok(t):
        flat = t.view(-1)
        return torch.dot(flat, flat)
    if t.is_cpu and t.dtype in (torch.float32, torch.float64) and t.layout == torch.strided:
        return (t * t).sum()
    acc = None if t.dtype in (torch.float32, torch.float64) else torch.float32
    return torch.linalg.vector_norm(t, dtype=acc).square()


def _real(dtype: torch.dtype) -> torch.dtype:
    return dtype.to_real() if dtype.is_complex else dtype


def full_norms(tensors: list[Tensor], norms: list[Tensor], norm_type: float = 2.0
               ) -> list[Tensor]:
    """``norms`` of the local shards of ``tensors`` as norms of the full tensors (FSDP2: one
    all-reduce; plain tensors: unchanged, no collective)."""
    reducer = reducer_for(tensors)
    return norms if reducer is None else reducer.reduce(norms, norm_type)[0]


def _values(grads: list[Tensor]) -> list[Tensor]:
    """Sparse gradients by their stored values (same norm, same finiteness)."""
    return [g.coalesce().values() if g.is_sparse else g for g in grads]


def refuse_sparse(name: str, grads: list[Tensor]) -> None:
    """ValueError when ``grads`` holds a sparse gradient (a clipper that works element- or
    row-wise has no sparse kernels in torch)."""
    sparse = [tuple(g.shape) for g in grads if g.is_sparse]
    if sparse:
        raise ValueError(f"{name} does not support sparse gradients (got {len(sparse)}, shape "
                         f"{sparse[0]}: e.g. nn.Embedding(sparse=True)); use GlobalNorm, which "
                         "does, or a dense layer (sparse=False)")


def total_norm(norms: list[Tensor], norm_type: float = 2.0) -> Tensor:
    """Norm of the concatenation of all tensors, from their per-tensor norms.

    ``||g||_p = || (||g_1||_p, ..., ||g_n||_p) ||_p``, as in ``torch.nn.utils.clip_grad_norm_``.
    Norms on several devices are gathered on the first one.
    """
    if not norms:
        return torch.tensor(0.0)
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]), norm_type)


def nonfinite_flag(grads: list[Tensor], norms: list[Tensor], total: Tensor, norm_type: float,
                   reducer: Any = None) -> tuple[Tensor, list[Tensor], Tensor]:
    """``found_inf`` (0-dim float32, 1.0 if any gradient holds NaN/Inf) from the norm pass.

    A non-finite element makes the norm non-finite, so a finite ``total`` proves the step clean
    at no extra cost. The converse fails only when the norm itself overflows (float32 elements
    above ~1e19 for the 2-norm). On the CPU, where reading a value costs no synchronisation,
    that rare case is settled exactly: the elements are checked, and the norms of finite
    gradients are recomputed with float64 accumulation. On accelerators, where that read would
    stall the stream, an overflowing norm counts as non-finite.

    Under FSDP2 ``grads`` are local shards and ``reducer`` (a ``ShardReducer``) makes that
    settlement agreed: the element check and the float64 norms travel in one all-reduce, so
    every rank reaches the same verdict.

    Returns:
        ``(found_inf, norms, total)``, the norms recomputed if they had overflowed.
    """
    found_inf = (~torch.isfinite(total)).to(torch.float32)
    if total.device.type != "cpu" or not found_inf.item():
        return found_inf, norms, total
    grads = _values(grads)
    bad = torch.tensor([float(any(not bool(torch.isfinite(g).all()) for g in grads))])
    if reducer is None and bad.item():
        return found_inf, norms, total
    norms = grad_norms(grads, norm_type, torch.float64)
    if reducer is not None:
        norms, bad = reducer.reduce(norms, norm_type, bad)
        if bad.item():
            return found_inf, norms, total
    return torch.zeros((), dtype=torch.float32), norms, total_norm(norms, norm_type)


def clip_(parameters: Tensor | Iterable[Tensor], clipper: Clipper) -> tuple[Tensor, Tensor]:
    """Clip the ``.grad`` of ``parameters`` in place with ``clipper``; works with any optimizer.

    ``total, factor = gradwell.clip.clip_(model.parameters(), GlobalNorm(1.0))`` then
    ``optimizer.step()``. Parameters without a gradient are ignored.

    Returns:
        ``(total_norm, factor)`` as 0-dim tensors: the gradients' norm before clipping, and the
        factor by which their norm shrank, ``||g_clipped|| / ||g||`` (``1`` when nothing was
        clipped, ``nan`` when the gradients are not finite).
    """
    check_clipper(clipper, "clipper")
    if clipper is None:
        raise TypeError("clipper must be a gradwell.clip object, got None")
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.tensor(0.0), torch.tensor(1.0)
    grads = [local(p.grad) for p in params]
    norms = full_norms(params, grad_norms(grads, clipper.norm_type), clipper.norm_type)
    total = total_norm(norms, clipper.norm_type)
    factor = clipper(grads, params, norms, total)
    if factor is not None:
        if effective_factor(factor) is not None:
            apply_factor_(grads, factor)
    else:
        after = total_norm(full_norms(params, grad_norms(grads, clipper.norm_type),
                                      clipper.norm_type), clipper.norm_type)
        factor = torch.where(total > 0, after / total, torch.ones_like(total))
    return total, torch.where(torch.isfinite(total), factor, torch.full_like(factor, math.nan))


def effective_factor(factor: Tensor | None) -> Tensor | None:
    """``factor``, or None when it is a CPU tensor equal to 1: multiplying by 1 changes no bit,
    and on the CPU reading the value costs no synchronisation, so the pass can be left out.
    Factors on accelerators are never read (that would stall the stream), nor any factor while
    ``torch.compile`` traces the step (a read is a graph break; multiplying by 1 is exact)."""
    if (factor is not None and factor.device.type == "cpu"
            and not torch.compiler.is_compiling() and factor.item() == 1.0):
        return None
    return factor


def apply_factor_(grads: list[Tensor], factor: Tensor) -> None:
    """Multiply every gradient by a 0-dim ``factor`` in place (grouped by device)."""
    by_device: dict[torch.device, list[Tensor]] = {}
    for g in grads:
        by_device.setdefault(g.device, []).append(g)
    for device, gs in by_device.items():
        torch._foreach_mul_(gs, factor.to(device))


def check_positive(name: str, value: float, allow_inf: bool = False) -> float:
    """``value`` as a float if it is a positive finite number (or inf, when ``allow_inf``);
    else the vocabulary's ValueError (:mod:`gradwell._checks`)."""
    if allow_inf and is_number(value) and value == math.inf:
        return math.inf
    return check_number(name, value, 0, low_open=True, note=" or inf" if allow_inf else "")
