"""Re-running one forward (and backward) of a model op by op, to find where a NaN/Inf was born.

The replay runs ``model(*args, **kwargs)`` again with the RNG state the original call started
from (so dropout draws the same masks), under the autocast state it ran in, with a
:class:`~gradwell.locate.taint.DispatchTracer` observing every aten op. Module names come from
forward hooks (a stack of the modules running); each autograd node created in a module is
marked with its name, so the backward replay - ``torch.autograd.grad`` of the outputs with the
gradients the original outputs received, under the same mode - can name the module of a node
(through a reentrant activation checkpoint, which refuses ``autograd.grad``, a ``backward()``
that puts every ``.grad`` back: :mod:`gradwell._autograd`).
``autograd.grad`` never touches ``.grad``; buffers (BatchNorm statistics) are copied back
afterwards, and the RNG state is restored: a replay changes nothing the training sees.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from .._autograd import grad as autograd_grad
from .._modules import clean_name, is_compiled
from .origin import Origin
from .taint import DispatchTracer, Tracer, floats

__all__ = ["Call", "replay", "preserved", "rng_state", "leaves_of"]


@dataclass
class Call:
    """One call of the model's forward as the locator saw it."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    rng: dict[str, Any]
    autocast: list[tuple[str, torch.dtype]]
    outputs: list[Tensor] = field(default_factory=list)
    grads: dict[int, Tensor] = field(default_factory=dict)  # position in outputs -> gradient
    grad_enabled: bool = True


def rng_state() -> dict[str, Any]:
    """The CPU (and, if initialised, every CUDA device's) RNG state."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def autocast_state() -> list[tuple[str, torch.dtype]]:
    """The device types autocast is enabled for, with their dtype."""
    out = []
    for dev in ("cpu", "cuda"):
        if torch.is_autocast_enabled(dev):
            out.append((dev, torch.get_autocast_dtype(dev)))
    return out


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore the RNG state and every buffer of ``model`` on exit."""
    state = rng_state()
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        set_rng_state(state)


def leaves_of(model: nn.Module, call: Call) -> dict[int, tuple[Tensor, str, str | None, str]]:
    """The tensors that exist before the forward: parameters, buffers and the call's inputs."""
    leaves: dict[int, tuple[Tensor, str, str | None, str]] = {}
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            leaves[id(t)] = (t, kind, name.rpartition(".")[0], name)
    for i, t in enumerate(floats(call.args)):
        leaves[id(t)] = (t, "input", None, f"input[{i}]")
    for key, value in call.kwargs.items():
        for j, t in enumerate(floats(value)):
            leaves[id(t)] = (t, "input", None, key if j == 0 else f"{key}[{j}]")
    return leaves


class _Modules:
    """Forward hooks on every submodule: which module is running, which made each node."""

    def __init__(self, model: nn.Module) -> None:
        self.stack: list[tuple[str, set[Any]]] = []
        self.nodes: dict[Any, str] = {}
        self.handles = []
        for name, m in model.named_modules():
            if is_compiled(m):            # a compiled submodule: its _orig_mod is listed next
                continue
            name = clean_name(name) if name else name
            self.handles.append(m.register_forward_pre_hook(self._enter(name), with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._leave, always_call=True))

    def _enter(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> None:
            inputs = {t.grad_fn for t in floats((args, kwargs)) if t.grad_fn is not None}
            self.stack.append((name, inputs))
        return hook

    def _leave(self, module: nn.Module, args: Any, output: Any) -> None:
        name, stop = self.stack.pop()
        todo = [t.grad_fn for t in floats(output) if t.grad_fn is not None]
        while todo:
            node = todo.pop()
            if node is None or node in self.nodes or node in stop:
                continue
            self.nodes[node] = name
            todo.extend(f for f, _ in node.next_functions)

    def current(self) -> str | None:
        return self.stack[-1][0] if self.stack else None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _forward(model: nn.Module, call: Call, mods: _Modules) -> tuple[Tracer, list[Tensor]]:
    tracer = Tracer("forward", leaves_of(model, call), lambda: (mods.current(), None))
    set_rng_state(call.rng)
    with contextlib.ExitStack() as stack:
        for dev, dtype in call.autocast:
            stack.enter_context(torch.autocast(dev, dtype=dtype))
        stack.enter_context(torch.set_grad_enabled(call.grad_enabled))
        stack.enter_context(DispatchTracer(tracer))
        out = model(*call.args, **call.kwargs)
    return tracer, floats(out)


def _backward(model: nn.Module, call: Call, outputs: list[Tensor], mods: _Modules,
              forward: Tracer) -> Origin | None:
    pairs = [(outputs[i], g) for i, g in sorted(call.grads.items())
             if i < len(outputs) and outputs[i].requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    inputs = params + [t for t in floats(call.args) if t.requires_grad]
    if not pairs or not inputs:
        return None

    def where() -> tuple[str | None, str | None]:
        node = torch._C._current_autograd_node()
        return (mods.nodes.get(node) if node is not None else None,
                node.name() if node is not None else None)

    tracer = Tracer("backward", {}, where, untracked="ignore", parent=forward)
    with DispatchTracer(tracer):
        grads = autograd_grad([o for o, _ in pairs], inputs, [g for _, g in pairs])
    return tracer.origin_of([g for g in grads if g is not None])


def replay(model: nn.Module, call: Call, backward: bool) -> tuple[Origin | None, bool]:
    """Replay ``call``; the origin of its non-finite outputs (or gradients, if ``backward``).

    Returns ``(origin, outputs_finite)``: the origin is ``None`` when the replay stayed
    finite.
    """
    mods = _Modules(model)
    try:
        with preserved(model):
            tracer, outputs = _forward(model, call, mods)
            origin = tracer.origin_of(outputs)
            if origin is not None or not backward:
                return origin, origin is None
            return _backward(model, call, outputs, mods, tracer), True
    finally:
        mods.remove()
