"""Settings for the watch tests: the shared helpers on sys.path, denormals flushed."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _flush_denormals():
    """Denormals flushed to zero: the vanishing nets push gradients below 1e-38, where CPUs
    slow down 10x; the verdicts do not depend on values that small. (tests/conftest.py sets
    one intra-op thread for the whole suite.)"""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
