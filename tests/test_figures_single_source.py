"""Measured figures are written once, in docs/benchmarks.md; other pages point there.

A figure copied into the README or the chart's values drifts the day the bench is re-run (the
README once said ~190 MiB idle a round after the operator measured 81). This test fails when a
page states a memory figure or a test-suite time that docs/benchmarks.md does not record.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "docs" / "benchmarks.md"
COPIES = [ROOT / "README.md", ROOT / "charts" / "dbmigrate-operator" / "values.yaml"]
# Any memory figure, and any approximate ("~") duration: settings such as "after 5 min" are not measurements.
FIGURE = re.compile(r"(?:(\d[\d.,]*(?:[–-]\d[\d.,]*)?)\s*(MiB)|~(\d[\d.,]*(?:[–-]\d[\d.,]*)?)\s*(min)\b)")


def figures(text: str) -> set[str]:
    found = set()
    for memory, mib, duration, minutes in FIGURE.findall(text):
        found.add(f"{memory} {mib}" if mib else f"{duration} {minutes}")
    return found


@pytest.mark.parametrize("page", COPIES, ids=lambda p: p.name)
def test_no_figure_without_its_source(page: Path) -> None:
    recorded = figures(SOURCE.read_text())
    stray = sorted(figures(page.read_text()) - recorded)
    assert not stray, f"{page.name} states {stray}, which docs/benchmarks.md does not record: point there"


def test_the_pattern_finds_copied_figures() -> None:
    copied = "~190 MiB idle and 214–284 MiB; ~12 min warm, after 5 min"
    assert figures(copied) == {"190 MiB", "214–284 MiB", "12 min"}
