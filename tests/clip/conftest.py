"""Fixtures for the clipping tests: ``no_host_sync`` fails a block that reads a tensor value
back to the host (the adaptive clippers must not)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import pytest
import torch

_SYNCING = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy")


@contextlib.contextmanager
def _forbid_host_sync() -> Iterator[None]:
    """Make every Tensor method that reads a value back to the host raise."""
    saved = {name: getattr(torch.Tensor, name) for name in _SYNCING}

    def make(name: str) -> Callable:
        def forbidden(self, *args, **kwargs):
            raise AssertionError(f"host synchronisation: Tensor.{name}() called")
        return forbidden

    try:
        for name in _SYNCING:
            setattr(torch.Tensor, name, make(name))
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


@pytest.fixture
def no_host_sync() -> Callable[[], contextlib.AbstractContextManager]:
    """``with no_host_sync(): ...`` fails if the block reads a tensor value on the host."""
    return _forbid_host_sync
