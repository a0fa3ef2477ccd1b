"""Names a newcomer can tell apart, and texts that cite only what a reader can open."""

import re
from collections import Counter
from pathlib import Path

import gradwell

ROOT = Path(__file__).resolve().parents[1]


def test_no_two_packages_have_a_module_called_monitor_report_or_events():
    names = Counter(p.name for p in Path(gradwell.__file__).parent.rglob("*.py"))
    assert {n: names[n] for n in ("monitor.py", "report.py", "events.py") if names[n] > 1} == {}


def test_texts_cite_no_document_outside_the_repository():
    """No "doc 001"-style references, no "the issue" and no section signs: the documents they
    point to are not in the repository."""
    pattern = re.compile(r"\bdocs? 0\d\d|\bthe issue\b|§", re.IGNORECASE)
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "docs").rglob("*.md"), ROOT / "README.md"]
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line)]
    assert hits == []


def test_test_files_have_unique_names():
    """pytest imports the test folders (no ``__init__.py``) as top-level modules, so two test
    files of one name in different folders make collection fail ("import file mismatch")."""
    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert not [n for n, k in names.items() if k > 1]
