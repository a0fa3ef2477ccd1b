"""Progress from the first second: ``gradwell demo`` and ``gradwell doctor`` show a spinner
on the terminal before torch is even imported (importing it and loading the data take
seconds before the first trial). Run in a pseudo-terminal, as a user would."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gradwell

#: reports on the terminal the moment anything imports torch, then lets the import go on
HOOK = """
import sys
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.stderr.write("\\n<<torch import>>\\n"); sys.stderr.flush()
            sys.meta_path.remove(self)
        return None
sys.meta_path.insert(0, Spy())
from gradwell.cli import main
sys.exit(main(sys.argv[1:]))
"""

NET = """
import torch
from torch import nn
def make_model():
    return nn.Linear(64, 10)
def make_data():
    return [(torch.randn(8, 64), torch.randint(0, 10, (8,)))]
"""


def _terminal_until_torch(args: list[str], cwd: Path) -> str:
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(Path(gradwell.__file__).parents[1]),
           "COLUMNS": "80", "TERM": "xterm"}
    env.pop("FORCE_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-c", HOOK, *args], stdin=slave, stdout=slave,
                            stderr=slave, cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    seen, deadline = b"", time.monotonic() + 60
    try:
        while b"<<torch import>>" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
            if proc.poll() is not None and not select.select([master], [], [], 0)[0]:
                break
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    return seen.decode(errors="replace")


@pytest.mark.parametrize("command", ["demo", "doctor"])
def test_a_spinner_shows_before_torch_is_imported(command, tmp_path):
    if command == "doctor":
        (tmp_path / "net.py").write_text(NET)
        args = ["doctor", "net.py", "--out", "out"]
    else:
        args = ["demo", "--quick", "--workers", "1", "--out", "out"]
    out = _terminal_until_torch(args, tmp_path)
    assert "<<torch import>>" in out, out[-2000:]
    before = out.split("<<torch import>>")[0]
    assert "starting:" in before, before[-2000:]
