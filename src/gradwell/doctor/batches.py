"""Batches in, losses out: the one training step that ``lr_find`` and ``doctor`` share.

A batch is ``(inputs, targets)``: ``inputs`` a tensor (``model(x)``), a tuple or list
(``model(*x)``) or a dict (``model(**x)``); the loss is ``loss_fn(model(inputs), targets)``.
Tensors move to the device of the model's first parameter.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["cycle", "batch_loss", "optimizer_step", "check_loader"]


def check_loader(loader: Any, name: str = "loader") -> Iterable[Any]:
    """``loader`` if it can be iterated more than once (a DataLoader, a list of batches)."""
    if not hasattr(loader, "__iter__"):
        raise TypeError(f"{name} must be an iterable of (inputs, targets) batches (a "
                        f"torch DataLoader or a list), got {type(loader).__qualname__}")
    if iter(loader) is loader:
        raise TypeError(f"{name} is a one-pass iterator; pass something that can be iterated "
                        "again (a torch DataLoader or a list of batches)")
    return loader


def cycle(loader: Iterable[Any], name: str = "loader") -> Iterator[Any]:
    """The batches of ``loader`` for ever, re-iterating it (a DataLoader reshuffles) at the end."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"{name} yielded no batches")


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x


def batch_loss(model: nn.Module, batch: Any, loss_fn: Callable[..., Tensor]) -> Tensor:
    """``loss_fn(model(inputs), targets)`` for one ``(inputs, targets)`` batch."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError("each batch must be a pair (inputs, targets), got "
                        f"{type(batch).__qualname__}"
                        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
    device = next(model.parameters()).device
    x, y = _to(batch[0], device), _to(batch[1], device)
    if isinstance(x, dict):
        out = model(**x)
    elif isinstance(x, (tuple, list)):
        out = model(*x)
    else:
        out = model(x)
    loss = loss_fn(out, y)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor (e.g. nn.CrossEntropyLoss()); got "
                         + (f"shape {tuple(loss.shape)}" if isinstance(loss, Tensor)
                            else type(loss).__qualname__))
    return loss


def optimizer_step(model: nn.Module, opt: torch.optim.Optimizer, batch: Any,
                   loss_fn: Callable[..., Tensor]) -> Tensor:
    """One training step on ``batch``; returns the detached loss (no host read)."""
    loss = batch_loss(model, batch, loss_fn)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach().reshape(())
