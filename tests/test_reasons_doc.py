"""Every condition reason the operator can write is explained where users look: the conditions table
of docs/operator.md and the README's troubleshooting table (kubectl get dbm -o wide shows the reason;
a reason no page names leaves the user guessing). A reason added to status.py without its rows fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from dbmigrate_operator.status import Reason

ROOT = Path(__file__).parents[1]


def section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n")
    rest = text[start + len(heading) :]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def missing(text: str) -> list[str]:
    return sorted(reason.value for reason in Reason if f"`{reason.value}`" not in text)


def test_the_operator_page_explains_every_reason() -> None:
    table = section((ROOT / "docs" / "operator.md").read_text(), "### Conditions and reasons")
    assert "`Applied`" in table, "the section was found"
    assert missing(table) == []


def test_the_readme_troubleshooting_has_every_reason() -> None:
    table = section((ROOT / "README.md").read_text(), "## Troubleshooting")
    assert "`Applied`" in table, "the section was found"
    assert missing(table) == []
