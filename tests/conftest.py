"""Settings for the whole suite."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread per test: the tensors are small and pytest-xdist already runs one
    worker per core, so more threads only add overhead."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
