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


#: Test folders whose deep sigmoid/tanh nets push gradients below 1e-38, where CPUs slow down
#: about 10x on denormal numbers; their verdicts do not depend on values that small.
_FLUSH_DENORMALS = {"watch", "diagnose"}


@pytest.fixture(autouse=True)
def _flush_denormals(request: pytest.FixtureRequest):
    flush = bool(_FLUSH_DENORMALS & set(request.node.path.parts))
    if flush:
        torch.set_flush_denormal(True)
    yield
    if flush:
        torch.set_flush_denormal(False)
