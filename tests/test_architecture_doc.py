"""docs/architecture.md is kept true: it names every module of the operator and the runner, and every
module it names exists (a module moved or added without the map following fails here)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = (ROOT / "operator" / "dbmigrate_operator", ROOT / "migrations_image" / "dbmigrate_runner")


def modules() -> set[str]:
    """File names of the two packages' modules (a package's own __init__/__main__ aside; `tools/` as one)."""
    found: set[str] = set()
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            if path.name in ("__init__.py", "__main__.py"):
                continue
            found.add("tools/" if path.parent.name == "tools" else path.name)
    return found


def named() -> set[str]:
    """Module names in backquotes (a path's last part); the tests it cites are not modules."""
    found = re.findall(r"`(?:[\w/]+/)?(\w+\.py|tools/)`", DOC.read_text())
    return {name for name in found if not name.startswith("test_")}


def test_the_architecture_page_names_every_module() -> None:
    assert "reconcile.py" in modules(), "the packages were read"
    assert sorted(modules() - named()) == []


def test_every_module_the_architecture_page_names_exists() -> None:
    assert sorted(named() - modules()) == []
