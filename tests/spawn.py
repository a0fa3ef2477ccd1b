"""A free local port for the ranks of a distributed test, and another try when it was taken.

A port found free (bound to port 0, then released) can be taken by another process before
rank 0 listens on it: pytest-xdist runs other distributed tests, and the benchmarks, beside
this one. Rank 0 then fails with ``EADDRINUSE``; :func:`on_free_port` starts again on a new
port (up to ``tries`` times) and re-raises any other failure at once.
"""

from __future__ import annotations

import socket
from typing import Callable, TypeVar

T = TypeVar("T")

#: how many ports a start may try
TRIES = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_taken(text: str) -> bool:
    """Does a failure's text say that the port was already in use?"""
    text = text.lower()
    return "address already in use" in text or "eaddrinuse" in text


def on_free_port(start: Callable[[int], T], tries: int = TRIES) -> T:
    """``start(port)`` on a free port; on a failure that says the port was taken, once more on
    a new port (at most ``tries`` ports in all)."""
    for attempt in range(1, tries + 1):
        try:
            return start(free_port())
        except Exception as e:  # noqa: BLE001 - only a taken port is retried
            if attempt == tries or not port_taken(str(e)):
                raise
    raise AssertionError("unreachable")
