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

from .._checks import check_bool
from .._distributed import LocalView, StateView, is_dtensor, local, reducer_for, sharded
from ..clip.base import (Clipper, apply_factor_, call_clipper, check_clipper, effective_factor,
                         grad_norms, nonfinite_flag, total_norm)
from .base import Chain, Quotient, Transform, as_tensors, check_range

__all__ = ["Optimizer", "GroupBatch"]

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]


class GroupBatch:
    """The parameters of one group that have gradients, with their gradients and states.

    Under FSDP2 ``params``, ``grads`` and ``states`` are the local shards (the update is
    elementwise, so kernels run on them unchanged); ``originals`` are the DTensor parameters.
    ``index`` is the group's position in ``param_groups``.
    """

    __slots__ = ("group", "params", "grads", "states", "fresh", "sparse", "originals", "index")

    def __init__(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                 states: list[dict[str, Any]], fresh: list[Tensor], index: int = 0) -> None:
        self.originals = params
        if sharded(params):
            states = [LocalView(s, p) if is_dtensor(p) else s  # type: ignore[misc]
                      for s, p in zip(states, params)]
            params, grads = [local(p) for p in params], [local(g) for g in grads]
        self.group, self.params, self.grads, self.states, self.fresh, self.index = (
            group, params, grads, states, fresh, index)
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

    #: Group keys a subclass accepts besides the transformation's hyperparameters.
    flag_keys: tuple[str, ...] = ()

    def __init__(self, params: ParamsT, transform: Transform, lr: float | Tensor = 1e-3, *,
                 clip: Clipper | None = None, skip_nonfinite: bool = False,
                 maximize: bool = False, **hyper: Any) -> None:
        if isinstance(transform, Clipper):
            transform = Chain(transform)
        if not isinstance(transform, Transform):
            raise TypeError("transform must be a gradwell.optim transformation (e.g. "
                            f"scale_by_adam() or chain(...)), got {type(transform).__qualname__}")
        unknown = sorted(set(hyper) - set(transform.defaults) - set(self.flag_keys))
        if unknown:
            allowed = sorted({"lr", "clip", "skip_nonfinite", "maximize", *transform.defaults,
                              *self.flag_keys})
            raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument "
                            f"{unknown[0]!r}; allowed: {allowed}")
        self.transform = transform
        self.clip = check_clipper(clip)
        self.skip_nonfinite = check_bool("skip_nonfinite", skip_nonfinite)
        self._skipped: Tensor | None = None
        #: ``(params, per-tensor norms, total norm)`` of the last step's gradients before
        #: clipping, when the step computed them (``clip=`` or ``skip_nonfinite=True``), else
        #: None. A public attribute: ``gradwell.watch`` reads it so that monitoring costs no
        #: second pass over the gradients.
        self.last_grad_norms: tuple[list[Tensor], list[Tensor], Tensor] | None = None
        #: State of stateful clippers (AutoClip's history, ZClip's statistics), owned by the
        #: optimizer and saved by :meth:`state_dict`: ``"clip"`` for ``clip=``, ``"groups"``
        #: one ``{chain position: state}`` per parameter group for clippers inside a chain.
        self.clip_state: dict[str, Any] = {"clip": {}, "groups": []}
        check_lr(lr)
        defaults = {"lr": lr, "maximize": maximize, **transform.defaults, **hyper}
        super().__init__(_materialize(params), defaults)

    # ----------------------------------------------------------------- construction and state
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group exactly as torch does (any iterable, a single tensor, named parameters,
        torch's duplicate warning and errors), then check its hyperparameters; a group that
        fails the check is not added."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            check_lr(group["lr"])
            self._transform_for(group).check(group)
            self.check_group(group)
        except (ValueError, TypeError, RuntimeError):
            self.param_groups.pop()
            raise
        self.__dict__.setdefault("clip_state", {"clip": {}, "groups": []})
        self.clip_state["groups"].append({})

    def check_group(self, group: dict[str, Any]) -> None:
        """Subclasses check group flags here (raise ValueError, TypeError or RuntimeError)."""

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(transform=self.transform, clip=self.clip, clip_state=self.clip_state,
                     skip_nonfinite=self.skip_nonfinite, _skipped=self._skipped)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # also called by load_state_dict with state and groups only
        self.__dict__.setdefault("last_grad_norms", None)
        self.__dict__.setdefault("_fusable_cache", {})
        self.__dict__.setdefault("clip_state", {"clip": {}, "groups": [{} for _ in
                                                                       self.param_groups]})
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)

    def state_dict(self) -> dict[str, Any]:
        """torch's ``state_dict``, plus ``"gradwell"``: skipped steps and the clippers' state
        (``"clip"`` for ``clip=``, ``"groups"``: per group, ``{chain position: state}``)."""
        sd = super().state_dict()
        cs = self.clip_state
        sd["gradwell"] = {
            "skipped_steps": self.skipped_steps,
            "clip_state": {
                "clip": self.clip.copy_state(cs["clip"]) if self.clip is not None else {},
                "groups": [{i: self._chain_clipper(g, i).copy_state(st) for i, st in gs.items()}
                           for g, gs in zip(self.param_groups, cs["groups"])]}}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("gradwell", None)
        clip_state = self._checked_clip_state(extra or {})  # before anything changes
        super().load_state_dict(state_dict)
        for p, s in self.state.items():  # fused kernels want step counters on the device
            step = s.get("step")
            if isinstance(step, Tensor) and step.device != p.device:
                s["step"] = step.to(p.device)
        if extra is not None:
            self._skipped = None
            if extra.get("skipped_steps"):
                self._skipped = torch.tensor(extra["skipped_steps"], dtype=torch.int64)
            self.clip_state = clip_state

    def _checked_clip_state(self, extra: dict[str, Any]) -> dict[str, Any]:
        """The saved clipper state, validated against this optimizer's clippers."""
        saved = extra.get("clip_state") or self._from_clipper_list(extra.get("clippers", []))
        groups = saved.get("groups") or [{} for _ in self.param_groups]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict holds clipper state for {len(groups)} parameter "
                             f"groups, but this optimizer has {len(self.param_groups)}")
        glob = saved.get("clip") or {}
        if glob and self.clip is None:
            raise ValueError("state_dict holds state of a clip= clipper, but this optimizer "
                             "has clip=None")
        return {"clip": self.clip.check_state(glob) if self.clip is not None else {},
                "groups": [{int(i): self._chain_clipper(g, int(i)).check_state(st)
                            for i, st in gs.items()}
                           for g, gs in zip(self.param_groups, groups)]}

    def _from_clipper_list(self, saved: list[dict[str, Any]]) -> dict[str, Any]:
        """Read the layout of earlier versions: one state per distinct clipper object, ``clip=``
        first, then the chains' clippers in order of first appearance (shared by groups)."""
        from .base import ClipTransform
        out: dict[str, Any] = {"clip": {}, "groups": [{} for _ in self.param_groups]}
        if not any(saved):
            return out
        states, by_id = iter(saved), {}
        if self.clip is not None:
            out["clip"] = next(states, {})
        for gs, group in zip(out["groups"], self.param_groups):
            for i, t in enumerate(self._transform_for(group).transforms()):
                if isinstance(t, ClipTransform):
                    gs[i] = by_id.setdefault(id(t.clipper), next(states, {}))
        return out

    def _chain_clipper(self, group: dict[str, Any], position: int) -> Clipper:
        from .base import ClipTransform
        parts = self._transform_for(group).transforms()
        if not (0 <= position < len(parts) and isinstance(parts[position], ClipTransform)):
            raise ValueError(f"state_dict holds clipper state for chain position {position}, "
                             f"but this optimizer's chain there is {parts[position:position + 1]}")
        return parts[position].clipper

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
        batches = [b for b in (self._gather(g, i) for i, g in enumerate(self.param_groups))
                   if b.params]
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
            factor = effective_factor(call_clipper(self.clip, grads, params, per_tensor, total,
                                                   self.clip_state["clip"]))
        for b in batches:
            if b.sparse:
                self._sparse_step(b, factor)
            elif not self._fused_step(b, factor, found_inf):
                if factor is not None:
                    apply_factor_(b.grads, factor)
                self._transform_step(b)
        return loss

    def _gather(self, group: dict[str, Any], index: int) -> GroupBatch:
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
        return GroupBatch(group, params, [p.grad for p in params], states, fresh, index)

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
        transform = self._transform_for(group)
        if transform.uses_group_state:
            updates = transform.update(grads, states, params, group,  # type: ignore[call-arg]
                                       self.clip_state["groups"][b.index])
        else:
            updates = transform.update(grads, states, params, group)
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
    """``list(params)`` (once, so a generator is not exhausted), refusing what torch refuses."""
    if isinstance(params, Tensor):
        raise TypeError("params argument given to the optimizer should be an iterable of Tensors "
                        f"or dicts, but got {torch.typename(params)}; pass model.parameters() or "
                        "[tensor]")
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list (params is empty); pass "
                         "model.parameters() or a list of parameter groups")
    return params


def check_lr(lr: Any) -> None:
    """torch's rules for ``lr``: a number >= 0, or a 1-element Tensor."""
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError(f"Tensor lr must be 1-element, got shape {tuple(lr.shape)}")
    check_range("lr", lr)
