"""Gradients of chosen tensors that leave ``.grad`` alone, also through a reentrant checkpoint.

The locator's backward replay and the guard's per-sample gradient norms take gradients with
``torch.autograd.grad``, which writes no ``.grad``. A graph holding a reentrant activation
checkpoint (``torch.utils.checkpoint.checkpoint(..., use_reentrant=True)``, Hugging Face
``gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})``,
DeepSpeed's) refuses it: its backward recomputes the block and runs a backward of its own,
which only a plain ``backward()`` allows. There :func:`grad` runs that ``backward()``, reads
the gradients of ``inputs`` through tensor hooks, and puts the ``.grad`` of ``inputs`` and of
every leaf the graph reaches back as it was.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["grad", "reentrant_leaves"]

#: the autograd node of torch's (and DeepSpeed's) reentrant ``CheckpointFunction``
REENTRANT_NODE = "CheckpointFunctionBackward"


def reentrant_leaves(roots: Sequence[Tensor]) -> list[Tensor] | None:
    """The leaf tensors the graph behind ``roots`` reaches, if it holds a reentrant checkpoint
    node; ``None`` if it holds none (then ``autograd.grad`` works)."""
    todo = [t.grad_fn for t in roots if t.grad_fn is not None]
    seen: set[Any] = set()
    leaves: list[Tensor] = []
    found = False
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        found = found or node.name() == REENTRANT_NODE
        variable = getattr(node, "variable", None)      # AccumulateGrad: a leaf
        if isinstance(variable, Tensor):
            leaves.append(variable)
        todo.extend(f for f, _ in node.next_functions)
    return leaves if found else None


def grad(outputs: Sequence[Tensor], inputs: Sequence[Tensor],
         grad_outputs: Sequence[Tensor] | None = None) -> tuple[Tensor | None, ...]:
    """``torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True)``, also through
    a reentrant checkpoint (module docstring); no ``.grad`` is changed either way."""
    leaves = reentrant_leaves(outputs)
    if leaves is None:
        return torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True)
    got: dict[int, Tensor] = {}

    def keep(i: int) -> Any:
        def hook(g: Tensor) -> None:
            got[i] = g if i not in got else got[i] + g
        return hook

    # the checkpointed blocks' parameters are reached only in the recompute: saved as inputs
    held = {id(t): t for t in [*leaves, *(t for t in inputs if t.is_leaf)]}
    saved = [(t, t.grad) for t in held.values()]
    handles = [t.register_hook(keep(i)) for i, t in enumerate(inputs) if t.requires_grad]
    try:
        for t in held.values():
            t.grad = None
        torch.autograd.backward(list(outputs), grad_outputs)
    finally:
        for h in handles:
            h.remove()
        for t, g in saved:
            t.grad = g
    return tuple(got.get(i) for i in range(len(inputs)))
