"""``gradwell doctor FILE`` whose make_data() returns a tuple that is not (train, eval): a
usage error (exit 2) naming make_data() and what it may return, no traceback."""

from __future__ import annotations

import pytest

from gradwell.cli import main

SOURCE = '''
import torch
from torch import nn

def make_model():
    return nn.Linear(4, 3)

def make_data():
    batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    return {ret}
'''


@pytest.mark.parametrize("ret", ["([batch], [batch], [batch])", "([batch],)"])
def test_make_data_tuple_of_wrong_length_is_a_usage_error(tmp_path, capsys, ret) -> None:
    path = tmp_path / "net.py"
    path.write_text(SOURCE.format(ret=ret))
    code = main(["doctor", str(path), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "make_data()" in err and "(train_loader, eval_loader)" in err
    assert "Traceback" not in err
