"""Fixtures of the lab tests."""

import pytest

from gradwell.lab.store import Store


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "lab") as s:
        yield s
