"""`Optimizer`: a real ``torch.optim.Optimizer`` that applies a gradient transformation.

One step, for every parameter group:

1. gradients are gathered (parameters without ``.grad`` are left alone, as in torch.optim);
2. across *all* groups, once: the optional ``clip=`` clipper and the ``skip_nonfinite=`` check
   share one foreach norm pass; a step whose gradients hold NaN/Inf changes nothing and is
   counted in :attr:`Optimizer.skipped_steps`;
3. the transformation turns gradients into updates ``u`` and the parameters move by
   ``p <- p - lr * u``.

Subclasses (the drop-in optimizers) may replace step 3 for a group by one fused kernel call that
also takes the clip factor (``grad_scale = 1 / factor``) and the non-finite flag (``found_inf``),
so neither costs a pass over memory or a host synchronisation. On the CPU, where reading a value
is free, both are settled first: a non-finite step returns before any kernel, and a factor of
exactly 1 (nothing to clip) is dropped, so the kernel runs as if there were no clipper.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from .._distributed import LocalView, StateView, is_dtensor, local, reducer_for
from ..clip.base import (Clipper, apply_factor_, check_clipper, effective_factor, grad_norms,
                         nonfinite_flag, total_norm)
from .base import Chain, Quotient, Transform, as_tensors, check_range

__all__ = ["Optimizer", "GroupBatch"]

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]


class GroupBatch:
    """The parameters of one group that have gradients, with their gradients and states.

    Under FSDP2 ``params``, ``grads`` and ``states`` are the local shards (the update is
    elementwise, so kernels run on them unchanged); ``originals`` are the DTensor parameters.
    """

    __slots__ = ("group", "params", "grads", "states", "fresh", "sparse", "originals")

    def __init__(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                 states: list[dict[str, Any]], fresh: list[Tensor]) -> None:
        self.originals = params
        if any(is_dtensor(p) for p in params):
            states = [LocalView(s, p) if is_dtensor(p) else s  # type: ignore[misc]
                      for s, p in zip(states, params)]
            params, grads = [local(p) for p in params], [local(g) for g in grads]
        self.group, self.params, self.grads, self.states, self.fresh = (
            group, params, grads, states, fresh)
        self.sparse = any(g.is_sparse for g in grads)


class Optimizer(torch.optim.Optimizer):
    """Apply ``transform`` to the gradients, then ``p <- p - lr * update``.

    Args:
        params: parameters or parameter groups, exactly as for any torch optimizer.
        transform: a :class:`~gradwell.optim.Transform`, e.g. ``chain(AGC(0.01), scale_by_adam())``.
        lr: learning rate (a group hyperparameter: schedulers and per-group values work).
        clip: a :mod:`gradwell.clip` object applied to the gradients of *all* groups together
            before the transformation (in place, like ``clip_grad_norm_``), or None.
        skip_nonfinite: if True, a step whose gradients contain NaN or Inf changes no parameter
            and no state, and is counted in :attr:`skipped_steps`.
        maximize: maximise the objective instead of minimising it.
    """

    #: Drop-ins whose torch namesake accepts sparse gradients (SGD, Adagrad) set this.
    supports_sparse: bool = False

    def __init__(self, params: ParamsT, transform: Transform, lr: float | Tensor = 1e-3, *,
                 clip: Clipper | None = None, skip_nonfinite: bool = False,
                 maximize: bool = False, **hyper: Any) -> None:
        if isinstance(transform, Clipper):
            transform = Chain(transform)
        if not isinstance(transform, Transform):
            raise TypeError("transform must be a gradwell.optim transformation (e.g. "
                            f"scale_by_adam() or chain(...)), got {type(transform).__qualname__}")
        self.transform = transform
        self.clip = check_clipper(clip)
        if not isinstance(skip_nonfinite, bool):
            raise TypeError(f"skip_nonfinite must be True or False, got {skip_nonfinite!r}")
        self.skip_nonfinite = skip_nonfinite
        self._skipped: Tensor | None = None
        #: ``(params, per-tensor norms, total norm)`` of the last step's gradients before
        #: clipping, when the step computed them (``clip=`` or ``skip_nonfinite=True``); read by
        #: ``gradwell.watch`` so that monitoring costs no second pass.
        self.last_grad_norms: tuple[list[Tensor], list[Tensor], Tensor] | None = None
        defaults = {"lr": lr, "maximize": maximize, **transform.defaults, **hyper}
        params = _materialize(params)
        super().__init__(params, defaults)

    # ----------------------------------------------------------------- construction and state
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        check_range("lr", param_group.get("lr", self.defaults["lr"]))
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if isinstance(p, Tensor) and id(p) in seen:
                raise ValueError("a parameter appears in more than one parameter group "
                                 f"(shape {tuple(p.shape)}); give each parameter to one group only")
        super().add_param_group(param_group)
        self._transform_for(self.param_groups[-1]).check(self.param_groups[-1])

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(transform=self.transform, clip=self.clip,
                     skip_nonfinite=self.skip_nonfinite, _skipped=self._skipped)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # also called by load_state_dict with state and groups only
        self.__dict__.setdefault("last_grad_norms", None)
        self.__dict__.setdefault("_fusable_cache", {})
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["gradwell"] = {"skipped_steps": self.skipped_steps,
                          "clippers": [c.state_dict() for c in self._clippers()]}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("gradwell", None)
        super().load_state_dict(state_dict)
        for p, s in self.state.items():  # fused kernels want step counters on the device
            step = s.get("step")
            if isinstance(step, Tensor) and step.device != p.device:
                s["step"] = step.to(p.device)
        if extra is not None:
            self._skipped = None
            if extra.get("skipped_steps"):
                self._skipped = torch.tensor(extra["skipped_steps"], dtype=torch.int64)
            self._load_clippers(extra.get("clippers", []))

    def _load_clippers(self, saved: list[dict[str, Any]]) -> None:
        """Restore clipper state; clippers new since the save (none saved) start fresh."""
        clippers = self._clippers()
        if not any(saved):
            return
        if len(saved) != len(clippers):
            raise ValueError(f"state_dict holds the state of {len(saved)} clippers, but this "
                             f"optimizer has {len(clippers)}: {clippers}")
        for c, s in zip(clippers, saved):
            c.load_state_dict(s)

    def _clippers(self) -> list[Clipper]:
        from .base import ClipTransform
        found = [self.clip] if self.clip is not None else []
        seen = {id(c) for c in found}
        for group in self.param_groups:
            for t in self._transform_for(group).transforms():
                if isinstance(t, ClipTransform) and id(t.clipper) not in seen:
                    seen.add(id(t.clipper))
                    found.append(t.clipper)
        return found

    @property
    def skipped_steps(self) -> int:
        """How many steps were skipped for non-finite gradients (reads one value)."""
        return 0 if self._skipped is None else int(self._skipped)

    # ----------------------------------------------------------------------------- the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        batches = [b for b in (self._gather(g) for g in self.param_groups) if b.params]
        if not batches:
            return loss
        norms = self._norms(batches)
        grads = [g for b in batches for g in b.grads]
        found_inf = None
        if self.skip_nonfinite:
            params, per_tensor, total = norms
            found_inf, per_tensor, total = nonfinite_flag(
                grads, per_tensor, total, self._norm_type(), reducer_for(params))
            norms = self.last_grad_norms = (params, per_tensor, total)
            self._count_skip(found_inf)
            if found_inf.device.type == "cpu" or any(
                    b.fresh or b.sparse or not self._fusable(b) for b in batches):
                if bool(found_inf):  # free on the CPU; elsewhere one read, none on fused paths
                    self._forget_fresh_state(batches)
                    return loss
                found_inf = None
        factor = None
        if self.clip is not None:
            params, per_tensor, total = norms
            factor = effective_factor(self.clip(grads, params, per_tensor, total))
        for b in batches:
            if b.sparse:
                self._sparse_step(b, factor)
            elif not self._fused_step(b, factor, found_inf):
                if factor is not None:
                    apply_factor_(b.grads, factor)
                self._transform_step(b)
        return loss

    def _gather(self, group: dict[str, Any]) -> GroupBatch:
        params = [p for p in group["params"] if p.grad is not None]
        states, fresh = [], []
        transform = self._transform_for(group)
        for p in params:
            if p.grad.is_sparse and not self.supports_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state[p]
            if not state:
                state.update(transform.init(p, group))
                fresh.append(p)
            states.append(state)
        return GroupBatch(group, params, [p.grad for p in params], states, fresh)

    def _norms(self, batches: list[GroupBatch]) -> tuple[list[Tensor], list[Tensor], Tensor] | None:
        """Per-tensor and total gradient norms of all groups in one foreach pass, if needed."""
        self.last_grad_norms = None
        if self.clip is None and not self.skip_nonfinite:
            return None
        params = [p for b in batches for p in b.originals]
        norms = grad_norms([g for b in batches for g in b.grads], self._norm_type())
        reducer = reducer_for(params)  # FSDP2: full-tensor norms, one all-reduce
        if reducer is not None:
            norms, _ = reducer.reduce(norms, self._norm_type())
        self.last_grad_norms = (params, norms, total_norm(norms, self._norm_type()))
        return self.last_grad_norms

    def _norm_type(self) -> float:
        return self.clip.norm_type if self.clip is not None else 2.0

    def _count_skip(self, found_inf: Tensor) -> None:
        if self._skipped is None:
            self._skipped = torch.zeros((), dtype=torch.int64, device=found_inf.device)
        self._skipped.add_(found_inf.to(torch.int64))

    def _forget_fresh_state(self, batches: list[GroupBatch]) -> None:
        """A skipped first step leaves no state behind, as if the batch had never come."""
        for b in batches:
            for p in b.fresh:
                self.state.pop(p, None)

    def _transform_step(self, b: GroupBatch) -> None:
        group = b.group
        params, grads, states = b.params, b.grads, b.states
        if any(p.is_complex() for p in params):  # complex numbers as pairs of reals, like torch
            params, grads = _real_views(params), _real_views(grads)
            states = [RealView(s) if p.is_complex() else s for p, s in zip(b.params, states)]
        grads = list(torch._foreach_neg(grads)) if group["maximize"] else grads
        updates = self._transform_for(group).update(grads, states, params, group)
        lr = group["lr"]
        if isinstance(lr, Tensor):
            torch._foreach_add_(params, torch._foreach_mul(as_tensors(updates), -lr))
        elif isinstance(updates, Quotient):
            torch._foreach_addcdiv_(params, updates.num, updates.den, -lr)
        else:
            torch._foreach_add_(params, updates, alpha=-lr)

    # --------------------------------------------------------------- hooks for subclasses
    def _sparse_step(self, b: GroupBatch, factor: Tensor | None) -> None:
        """A step for a group with sparse gradients (SGD and Adagrad override this)."""
        raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")

    def _transform_for(self, group: dict[str, Any]) -> Transform:
        """The transformation for ``group`` (drop-ins choose by group flags)."""
        return self.transform

    def _fusable(self, b: GroupBatch) -> bool:
        """True if ``b`` will take a fused kernel that honours ``found_inf``."""
        return False

    def _fused_step(self, b: GroupBatch, factor: Tensor | None, found_inf: Tensor | None) -> bool:
        """Run ``b`` through a fused kernel if one applies; return False to use the transform."""
        return False

    def __repr__(self) -> str:
        head = super().__repr__()
        extra = []
        if self.clip is not None:
            extra.append(f"clip: {self.clip!r}")
        if self.skip_nonfinite:
            extra.append("skip_nonfinite: True")
        if type(self) is Optimizer:
            extra.append(f"transform: {self.transform!r}")
        return head[:-1] + "".join(f"    {e}\n" for e in extra) + ")" if extra else head


def _real_views(tensors: list[Tensor]) -> list[Tensor]:
    return [torch.view_as_real(t) if t.is_complex() else t for t in tensors]


class RealView(StateView):
    """A complex parameter's state seen as real pairs (``torch.view_as_real``), written through."""

    def __getitem__(self, key: str) -> Any:
        v = self.state[key]
        return torch.view_as_real(v) if isinstance(v, Tensor) and v.is_complex() else v

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[-1] == 2:
            value = torch.view_as_complex(value.contiguous())
        self.state[key] = value


def _materialize(params: ParamsT) -> list[Any]:
    """Turn ``params`` into a list and reject an empty one with a clear message."""
    if isinstance(params, Tensor):
        raise TypeError("params must be an iterable of Tensors or dicts (e.g. "
                        "model.parameters()), got a single Tensor")
    params = list(params)
    if not params:
        raise ValueError("params is empty: the optimizer got no parameters to optimize; pass "
                         "model.parameters() or a list of parameter groups")
    return params
