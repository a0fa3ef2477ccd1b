"""tests/spawn.py: a port taken by another process is retried on a new one, nothing else is."""

from __future__ import annotations

import datetime
import socket

import pytest
import torch.distributed as dist

from spawn import TRIES, on_free_port, port_taken


def _store(port: int) -> dist.TCPStore:
    return dist.TCPStore("127.0.0.1", port, is_master=True,
                         timeout=datetime.timedelta(seconds=5))


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_a_port_taken_by_another_process_is_retried_on_a_new_port() -> None:
    with socket.socket() as other:                  # another process got there first
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        with pytest.raises(Exception) as err:        # torch's own message for it
            _store(taken)
        assert port_taken(str(err.value))
        ports: list[int] = []

        def start(port: int) -> dist.TCPStore:
            ports.append(port)
            return _store(taken if len(ports) == 1 else port)
        store = on_free_port(start)
        assert len(ports) == 2 and ports[1] != taken
        store.set("k", "v")
        assert store.get("k") == b"v"


def test_other_failures_are_not_retried_and_a_taken_port_at_most_tries_times() -> None:
    calls: list[int] = []

    def broken(port: int) -> None:
        calls.append(port)
        raise ValueError("rank 1 failed: a real bug")
    with pytest.raises(ValueError, match="a real bug"):
        on_free_port(broken)
    assert len(calls) == 1
    calls.clear()

    def always_taken(port: int) -> None:
        calls.append(port)
        raise RuntimeError(f"port: {port}, code: -98, name: EADDRINUSE")
    with pytest.raises(RuntimeError, match="EADDRINUSE"):
        on_free_port(always_taken)
    assert len(calls) == TRIES
