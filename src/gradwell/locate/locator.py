"""`locate(model)`: a context manager that names where the first NaN/Inf of a step was born.

While armed it costs almost nothing: two hooks on the model itself (to keep the call's
inputs, its RNG and autocast state, and the gradient its outputs receive), a torch-function
mode over the few ops that compute the loss from the outputs, and at the end one check of the
loss and the gradients. Only when these are not finite does it look closer:

* the loss ops were observed as they ran, so a NaN/Inf born there is already known;
* otherwise the model's forward is replayed op by op (a ``TorchDispatchMode``), and if the
  outputs are finite the backward too, from the gradients the outputs received.

So the op-level cost is paid once, on a bad step. ``torch.autograd.detect_anomaly`` instead
pays it on every step (and names only backward nodes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .._checks import check_bool
from .._distributed import local, sharded
from .._modules import unwrap
from .origin import Origin, input_stats
from .replay import Call, autocast_state, leaves_of, replay, rng_state
from .taint import LossTracer, Tracer, all_finite, floats, kind_of

__all__ = ["Locator", "locate"]


#: dtypes GradScaler's fused non-finite check takes
_FUSED_DTYPES = frozenset([torch.float16, torch.bfloat16, torch.float32, torch.float64])
_ONES: dict[torch.device, Tensor] = {}


def _fusable(t: Tensor) -> bool:
    """Can the fused kernel, which writes back what it reads, take ``t``? Not a tensor whose
    elements share memory: the gradient a ``sum()`` hands its input is one value expanded."""
    return (type(t) is Tensor and t.layout == torch.strided and t.dtype in _FUSED_DTYPES
            and not t.requires_grad and (t.is_contiguous()
                                         or t.is_contiguous(memory_format=torch.channels_last)))


def _finite(tensors: list[Tensor]) -> bool:
    """Are all ``tensors`` finite? One fused kernel and one host read per device.

    Plain dense float tensors go through GradScaler's non-finite check
    (``torch._amp_foreach_non_finite_check_and_unscale_``) with an unscale factor of 1, which
    the kernel returns unchanged: every value is written back bit for bit. It flags any NaN or
    Inf element in one pass, with no norm that could overflow; a sparse tensor is checked by
    its stored values. Anything else (DTensor shards, complex tensors, tensors that require
    grad) is checked element-wise.
    """
    fused: dict[torch.device, list[Tensor]] = {}
    with torch.no_grad():
        for t in tensors:
            if t.is_sparse:                  # nn.Embedding(sparse=True): its stored values
                t = t.coalesce().values()
            elif t.layout != torch.strided:
                t = t.to_dense()
            if not t.numel():
                continue
            if _fusable(t):
                fused.setdefault(t.device, []).append(t)
            elif not all_finite(t.detach()):
                return False
        for device, ts in fused.items():
            found = torch.zeros(1, device=device)
            one = _ONES.get(device)
            if one is None:
                one = _ONES[device] = torch.ones(1, device=device)
            torch._amp_foreach_non_finite_check_and_unscale_(ts, found, one)
            if found.item():
                return False
    return True


def _grads(model: nn.Module) -> list[Tensor]:
    """The ``.grad`` of every parameter of ``model`` (shared ones once).

    The walk ``Module.parameters()`` makes, without building a qualified name for every
    module: on a small model that naming is a measurable part of an armed step.
    """
    out: list[Tensor] = []
    seen: set[int] = set()
    todo = [model]
    while todo:
        module = todo.pop()
        for p in module._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                if p.grad is not None:
                    out.append(p.grad)
        todo.extend(m for m in module._modules.values() if m is not None)
    return out


class Locator:
    """Armed by ``with``; afterwards :attr:`origin` says where a NaN/Inf was born (or ``None``).

    Args:
        model: the module whose forward is called in the block (DDP, ``DataParallel`` and
            ``torch.compile`` are unwrapped for replays, which run the model's own modules
            eagerly, so module names are the model's, without ``module.`` or ``_orig_mod.``).
        replay: replay the forward/backward op by op when the step ends non-finite (the
            default). ``False``: only the loss ops and the phase are known.
    """

    def __init__(self, model: nn.Module, *, replay: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__qualname__}")
        check_bool("replay", replay)
        self.model, self.replay = model, replay
        self.origin: Origin | None = None
        self.calls: list[Call] = []
        self.losses: list[Tensor] = []
        self._handles: list[Any] = []
        self._loss: LossTracer | None = None
        self._tape: list[tuple[str, Any, Any]] = []
        self._nodes: list[tuple[str, Any, Any]] = []

    # ------------------------------------------------------------------ arming and disarming
    def __enter__(self) -> "Locator":
        if self._handles:
            raise RuntimeError("this locator is already armed; use a new gradwell.locate(...)")
        self.origin, self.calls, self.losses, self._tape, self._nodes = None, [], [], [], []
        self._handles = [
            self.model.register_forward_pre_hook(self._pre, with_kwargs=True),
            self.model.register_forward_hook(self._post, always_call=True)]
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop_loss()
        for h in self._handles:
            h.remove()
        self._handles = []
        if exc[0] is None:
            self.origin = self._conclude()
        # references into the step (inputs, outputs, gradients): let them go now. A gradient
        # hook on an output refers to its Call, so the Call must drop the output (no cycle
        # keeping the step's graph alive until the garbage collector runs).
        for call in self.calls:
            call.args, call.kwargs, call.outputs, call.grads = (), {}, [], {}
        self._tape, self._nodes, self.calls, self.losses = [], [], [], []

    def _pre(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        self._stop_loss()
        self.calls.append(Call(args, dict(kwargs), rng_state(), autocast_state(),
                               grad_enabled=torch.is_grad_enabled()))

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self.calls:
            return
        call = self.calls[-1]
        call.outputs = floats(output)
        for i, t in enumerate(call.outputs):
            if t.requires_grad:
                t.register_hook(self._keep_grad(call, i))
        if self._loss is None:
            self._loss = LossTracer(self._on_backward)
            self._loss.__enter__()

    def _on_backward(self, roots: list[Tensor]) -> None:
        """``backward`` is called on ``roots``: watch the loss's own backward nodes."""
        self.losses.extend(roots)
        stop = {o.grad_fn for c in self.calls for o in c.outputs if o.grad_fn is not None}
        todo, seen = [t.grad_fn for t in roots if t.grad_fn is not None], set()
        while todo and len(seen) < 10_000:
            node = todo.pop()
            if node is None or node in seen or node in stop:
                continue
            seen.add(node)
            if not hasattr(node, "variable"):        # AccumulateGrad: nothing to check
                node.register_hook(self._check_node(node.name()))
            todo.extend(f for f, _ in node.next_functions)

    def _check_node(self, name: str) -> Any:
        # the hook keeps the name, not the node: a node referring to itself would never be freed
        def hook(grad_inputs: Any, grad_outputs: Any) -> None:
            self._nodes.append((name, grad_inputs, grad_outputs))  # checked if bad
        return hook

    def _loss_backward_origin(self) -> Origin | None:
        """The first loss node whose incoming gradients were finite and outputs were not."""
        for name, grad_inputs, grad_outputs in self._nodes:
            bad = [g for g in floats(list(grad_inputs)) if not all_finite(g)]
            incoming = floats(list(grad_outputs))
            if bad and all(all_finite(g) for g in incoming):
                return Origin("backward", None, name, kind_of(bad), str(bad[0].dtype), node=name,
                              inputs=input_stats(incoming),
                              nonfinite=sum(int((~torch.isfinite(g)).sum()) for g in bad),
                              numel=sum(g.numel() for g in bad))
        return None

    @staticmethod
    def _keep_grad(call: Call, i: int) -> Any:
        def hook(grad: Tensor) -> None:
            call.grads[i] = grad
        return hook

    def _stop_loss(self) -> None:
        if self._loss is not None:
            self._loss.__exit__(None, None, None)
            self._tape.extend(self._loss.tape)
            self._loss = None

    # ------------------------------------------------------------------------- the verdict
    def _conclude(self) -> Origin | None:
        model = unwrap(self.model)   # DDP (a replay must not sync), torch.compile (op by op)
        # the losses are copied: the fused check writes to what it checks, and a loss may be
        # saved by a graph that is still alive
        losses = [t.detach().clone() for t in self.losses]
        ends = losses + _grads(model) if losses else [o.detach().clone() for c in self.calls
                                                       for o in c.outputs]
        if _finite(ends):
            return None
        for call in self.calls:                      # forward (or a non-finite input)
            if not _finite(call.outputs):
                return self._replayed(model, [call], "forward", backward=False)
        tracer = Tracer("loss", {}, lambda: (None, None), untracked="input")
        for op, args, out in self._tape:               # the loss ops, from the tape
            tracer.observe(op, args, out)
        found = tracer.origin_of(self.losses)
        if found is not None:
            return found
        found = self._loss_backward_origin()          # the loss's own backward
        if found is not None:
            return found
        for call in self.calls:
            if call.grads and not _finite(list(call.grads.values())):
                return self._backward_of_loss(call)
        # backward through the model: with several calls (a siamese loss), the backward runs
        # the last call's nodes first, so the calls are replayed from the last
        called = [call for call in reversed(self.calls) if call.grads]
        if called:
            return self._replayed(model, called, "backward", backward=True)
        return Origin("backward", None, None, "nan", "unknown", reproduced=False)

    def _replayed(self, model: nn.Module, calls: list[Call], phase: str,
                  backward: bool) -> Origin:
        """The origin the first of ``calls`` whose op-by-op replay is not finite finds; without
        a replay (``replay=False``, or FSDP2, whose replay would gather parameters on this rank
        alone) what the calls' inputs and parameters say, else the phase (``reproduced=None``:
        not replayed)."""
        if not self.replay or sharded(model.parameters()):   # FSDP2
            return _unreplayed(model, calls, phase, reproduced=None)
        for call in calls:
            found, _ = replay(model, call, backward)
            if found is not None:
                return found
        if backward and _ddp_ranks(self.model) > 1:
            return _from_other_rank(model)
        return _unreplayed(model, calls, phase, reproduced=False)

    def _backward_of_loss(self, call: Call) -> Origin:
        """The loss's own backward made the outputs' gradients non-finite."""
        grads = [g for g in call.grads.values() if not all_finite(g)]
        node = self.losses[0].grad_fn.name() if self.losses and self.losses[0].grad_fn else None
        return Origin("backward", None, "loss backward", "nan" if any(bool(g.isnan().any())
                                                                      for g in grads) else "inf",
                      str(grads[0].dtype), node=node, reproduced=False)

    def __repr__(self) -> str:
        state = "armed" if self._handles else "disarmed"
        return f"Locator({state}, origin={self.origin!r})"


def _ddp_ranks(model: nn.Module) -> int:
    """How many ranks ``model``'s DistributedDataParallel all-reduces gradients over (1: none)."""
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return 1
    return dist.get_world_size(model.process_group) if dist.is_initialized() else 1


def _unreplayed(model: nn.Module, calls: list[Call], phase: str,
                reproduced: bool | None) -> Origin:
    """What is known without an op-by-op replay: a non-finite input of one of ``calls``,
    parameter or buffer (this rank's shard of it), else the phase and the kind of the
    non-finite values."""
    for call in calls:
        for t, kind, module, name in leaves_of(model, call).values():
            v = local(t).detach()
            if v.is_floating_point() and not all_finite(v):
                return Origin("input", module, kind, kind_of([v]), str(v.dtype), tensor=name,
                              nonfinite=int((~torch.isfinite(v)).sum()), numel=v.numel())
    outputs = [t for call in calls for t in call.outputs]
    bad = [t for t in (outputs if phase == "forward" else _grads(model))
           if not all_finite(local(t))]
    return Origin(phase, None, None, kind_of([local(t) for t in bad]) if bad else "nan",
                  str(bad[0].dtype) if bad else "unknown", reproduced=reproduced)


def _from_other_rank(model: nn.Module) -> Origin:
    """This rank's own step, replayed, stayed finite, yet its gradients are not: they came
    through DDP's gradient all-reduce from another rank."""
    bad = [g for g in _grads(model) if not all_finite(g)]
    return Origin("backward", None, "all_reduce", kind_of(bad) if bad else "nan",
                  str(bad[0].dtype) if bad else "unknown", node="DDP all-reduce",
                  nonfinite=sum(int((~torch.isfinite(g)).sum()) for g in bad),
                  numel=sum(g.numel() for g in bad))


def locate(model: nn.Module, *, replay: bool = True) -> Locator:
    """Arm the NaN/Inf locator around one forward and backward pass of ``model``.

    >>> with gradwell.locate(model) as loc:
    ...     loss = loss_fn(model(x), y); loss.backward()
    >>> print(loc.origin)      # None, or where the first NaN/Inf was born, and the likely fix

    See :class:`Locator` and ``docs/locate.md``.
    """
    return Locator(model, replay=replay)
