"""docs/promises.md names the test behind each promise: every test it names exactly must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "promises.md"


def test_every_test_the_promises_page_names_exists() -> None:
    named = re.findall(r"`(?:[\w/]+/)?(test_\w+\.py)::(test_\w+)`", DOC.read_text())
    assert len(named) > 20, "the page names tests as `file.py::test_name`"
    missing = []
    for file, test in named:
        paths = list((ROOT / "tests").rglob(file))
        if not any(re.search(rf"^(?:async )?def {test}\(", p.read_text(), re.M) for p in paths):
            missing.append(f"{file}::{test}")
    assert not missing, f"docs/promises.md names tests that do not exist: {missing}"
