"""Every Python snippet of README.md runs as written, each on its own (a reader copies one)."""

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_its_snippets():
    assert len(SNIPPETS) >= 6


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_a_readme_snippet_runs_as_written(code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                   # snippets may write files (flow.png, ...)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                      # tiny models: threads only add contention
    torch.manual_seed(0)
    try:
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    finally:
        torch.set_num_threads(threads)
