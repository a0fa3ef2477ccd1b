"""The lab's user-facing error: light to import (the CLI catches it without loading torch)."""

from __future__ import annotations

__all__ = ["StoreError"]


class StoreError(RuntimeError):
    """A lab directory that cannot be read or written; the message names the path and says
    what to do."""
