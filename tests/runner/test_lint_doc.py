"""docs/reviewing-changes.md says which of squawk's rules the plan leaves out; the list is the code's.
A rule added to squawk.STYLE_RULES (or dropped from it) without the page following fails here."""

from __future__ import annotations

import re
from pathlib import Path

from dbmigrate_runner.squawk import STYLE_RULES

DOC = Path(__file__).parents[2] / "docs" / "reviewing-changes.md"


def test_the_page_names_every_rule_left_out() -> None:
    text = DOC.read_text()
    start = text.index("its style and robustness rules are left out")
    sentence = text[start : text.index(").", start)]
    named = set(re.findall(r"`([a-z*-]+)`", sentence))
    assert "prefer-*" in named, "the sentence was found"
    expected = {rule for rule in STYLE_RULES if not rule.startswith("prefer-")} | {"prefer-*"}
    assert named - {"unparsed-statement"} == expected
