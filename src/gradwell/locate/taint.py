"""Following NaN/Inf through a computation, op by op, to the op where it was born.

A :class:`Tracer` sees every op (a ``TorchDispatchMode`` in a replay, a ``TorchFunctionMode``
on the loss) and keeps a *taint*: for each non-finite tensor, the :class:`Origin` it descends
from. An op whose outputs are all finite costs one check. An op with a non-finite output
inherits the earliest origin among its non-finite inputs (propagation); if it has none, it is
a birth and a new origin is made. Only origins whose taint reaches the end of the step (the
outputs, the loss, the gradients) are reported, so a ``-inf`` attention mask that a softmax
absorbs is never blamed.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from .origin import Origin, input_stats

__all__ = ["Tracer", "DispatchTracer", "LossTracer", "floats", "all_finite", "kind_of"]

#: Ops that only re-view or copy their input: never a birth, whatever their input held.
ALIASES = frozenset(["detach", "alias", "view", "_unsafe_view", "expand", "t", "transpose",
                     "permute", "slice", "select", "squeeze", "unsqueeze", "as_strided",
                     "clone", "contiguous", "lift_fresh", "reshape", "unbind", "split",
                     "split_with_sizes", "chunk", "narrow", "flatten", "unflatten"])


def floats(obj: Any) -> list[Tensor]:
    """The floating-point tensors in a (nested) structure of args or outputs."""
    if isinstance(obj, Tensor):  # the common case, without pytree
        return [obj] if obj.is_floating_point() or obj.is_complex() else []
    leaves, _ = tree_flatten(obj)
    return [t for t in leaves if isinstance(t, Tensor) and (t.is_floating_point()
                                                            or t.is_complex())]


def all_finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t).all()) if t.numel() else True


def kind_of(tensors: list[Tensor]) -> str:
    return "nan" if any(bool(torch.isnan(t).any()) for t in tensors) else "inf"


def _op_name(func: Any) -> str:
    name = str(func) if isinstance(func, torch._ops.OpOverload) else getattr(func, "__name__",
                                                                            str(func))
    return name


def _base(name: str) -> str:
    return name.split(".")[1] if name.startswith("aten.") else name


class Tracer:
    """The taint bookkeeping, shared by the dispatch (replay) and function (loss) modes.

    Args:
        phase: the phase new origins get.
        leaves: ``id(tensor) -> (tensor, op, module, name)`` for tensors that existed before
            the traced computation (model inputs, parameters, buffers): a non-finite one is an
            ``"input"`` origin of its own.
        where: returns ``(module, node)`` for the op being run.
        untracked: what a non-finite input that is neither a leaf nor made here is: ``"input"``
            (a target in the loss), ``"birth"`` (blame the op) or ``"ignore"`` (backward: a
            saved forward value is not an incoming gradient).
        parent: the forward's tracer, for the backward: a non-finite saved forward value
            descends from the forward origin that made it.
    """

    def __init__(self, phase: str, leaves: dict[int, tuple[Tensor, str, str | None, str]],
                 where: Callable[[], tuple[str | None, str | None]],
                 untracked: str = "birth", parent: "Tracer | None" = None) -> None:
        self.phase, self.leaves, self.where, self.untracked = phase, leaves, where, untracked
        self.parent = parent
        self._leaf_storage = {t.untyped_storage().data_ptr(): id(t)
                              for t, *_ in leaves.values() if t.numel()}
        self.taint: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._storage: dict[int, Origin] = {}
        self._count = 0

    def _new(self, **kw: Any) -> Origin:
        self._count += 1
        return Origin(index=self._count, **kw)

    def _source(self, t: Tensor, op: str, position: int) -> Origin | None:
        """The origin a non-finite input ``t`` descends from (``None``: treat as finite)."""
        got = self.taint.get(t)
        if got is None and t.numel():
            got = self._storage.get(t.untyped_storage().data_ptr())
        if got is not None:
            return got
        if self.parent is not None:  # a saved forward value, read by the backward
            return self.parent._source(t, op, position)
        leaf = self.leaves.get(id(t))
        if leaf is None and t.numel():
            leaf = self.leaves.get(self._leaf_storage.get(t.untyped_storage().data_ptr(), -1))
        if leaf is not None or self.untracked == "input":
            src, kind, module, name = leaf or (t, "target", None, f"argument {position} of {op}")
            bad = int((~torch.isfinite(t)).sum())
            got = self._new(phase="input", module=module, op=kind, kind=kind_of([t]),
                            dtype=str(t.dtype), tensor=name, nonfinite=bad, numel=t.numel())
            self._mark(t, got)
            return got
        return None

    def _mark(self, t: Tensor, origin: Origin) -> None:
        self.taint[t] = origin
        if t.numel():
            self._storage[t.untyped_storage().data_ptr()] = origin

    def observe(self, op: str, args: Any, out: Any) -> None:
        """Record ``out = op(*args)``: a birth, a propagation, or (usually) nothing."""
        outs = floats(out)
        bad = [t for t in outs if not all_finite(t)]
        if not bad:
            for t in outs:
                if t in self.taint:
                    del self.taint[t]  # an in-place op made it finite again
            return
        ins = [t for t in floats(args) if all(t is not o for o in bad) or t in self.taint]
        found = None
        for i, t in enumerate(ins):
            if t in self.taint or not all_finite(t):
                src = self._source(t, op, i)
                if src is not None and (found is None or src.index < found.index):
                    found = src
        if found is None and (_base(op) in ALIASES and self.untracked == "ignore"):
            return
        if found is None:
            module, node = self.where()
            found = self._new(phase=self.phase, module=module, op=op, kind=kind_of(bad),
                              dtype=str(bad[0].dtype), node=node, inputs=input_stats(ins),
                              nonfinite=sum(int((~torch.isfinite(t)).sum()) for t in bad),
                              numel=sum(t.numel() for t in bad))
        for t in bad:
            self._mark(t, found)

    def origin_of(self, tensors: list[Tensor]) -> Origin | None:
        """The earliest origin among the non-finite ``tensors`` (``None``: all finite or untraced)."""
        found = None
        for i, t in enumerate(tensors):
            if not all_finite(t):
                src = self._source(t, "output", i)
                if src is not None and (found is None or src.index < found.index):
                    found = src
        return found


class DispatchTracer(TorchDispatchMode):
    """Every aten op under this mode is observed by ``tracer`` (used only on a replay)."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.tracer.observe(_op_name(func), (args, kwargs), out)
        return out


_BACKWARD = {torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad}


class LossTracer(TorchFunctionMode):
    """Records the torch functions computing the loss from the model's outputs, unchecked.

    Entered when the model's forward returns. Each call is kept on a tape (the function, its
    arguments and outputs: references, no copies); only if the step ends non-finite is the tape
    run through a :class:`Tracer`, in order. At ``loss.backward()`` / ``torch.autograd.backward`` /
    ``grad`` it reports the tensors the backward starts from and stops recording.
    """

    def __init__(self, on_backward: Callable[[list[Tensor]], None]) -> None:
        super().__init__()
        self.on_backward, self.active = on_backward, True
        self.tape: list[tuple[str, Any, Any]] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _BACKWARD:
            roots = args[0] if args else kwargs.get("tensors", kwargs.get("outputs"))
            self.on_backward(floats(roots))
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        if self.active and isinstance(out, (Tensor, tuple, list)):
            self.tape.append((_op_name(func), (args, kwargs), out))
        return out
