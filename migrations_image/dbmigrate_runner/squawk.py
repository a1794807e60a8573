"""Lock and downtime hazards of a plan, from squawk, the PostgreSQL migration linter.

Why squawk: its rules are the field's shared vocabulary for what takes a lock or rewrites a table
(``require-concurrent-index-creation``, ``constraint-missing-not-valid``, ``adding-not-nullable-field``,
…); findings carry its rule ids, so a team's ``spec.lint.ignore`` reads like its squawk config. The
binary ships in the ``squawk-cli`` wheel (runner extra), so the image needs nothing else.

The whole plan is linted as one file, one statement per block of lines, and squawk's line numbers
are mapped back to (migration, statement). Style rules (``prefer-*``, timeouts, robustness) are
left out: they say nothing about what the statement does to a running app. When the binary cannot
run, that is a finding itself (``lint-unavailable``): what was not checked is not declared safe.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dbmigrate_runner.destructive import DESTRUCTIVE, HAZARD, UNCLASSIFIED, Hit, subject
from dbmigrate_runner.sqlplan import Step

# Squawk rules that judge style or robustness, not what a statement does to a running database.
STYLE_RULES = frozenset(
    {
        "prefer-robust-stmts",
        "prefer-bigint-over-int",
        "prefer-bigint-over-smallint",
        "prefer-identity",
        "prefer-text-field",
        "prefer-timestamp-tz",
        "prefer-timestamptz",
        "prefer-repack",
        "ban-char-field",
        "require-lock-timeout",
        "require-statement-timeout",
        "require-timeout-settings",
        "transaction-nesting",
        "ban-uncommitted-transaction",
        "require-table-schema",
        "require-enum-value-ordering",
        "identifier-too-long",
        "unused-ignore",
        "syntax-error",  # pglast is the parser that decides; its rejection is a finding of its own
    }
)
# Opt-in squawk rules about locks that we want too.
INCLUDE_RULES = ("require-concurrent-partition-detach", "require-concurrent-reindex")
# Squawk rules whose statements lose data: destructive, not a mere hazard.
DESTRUCTIVE_RULES = frozenset(
    {"ban-drop-column", "ban-drop-table", "ban-drop-database", "ban-truncate-cascade", "changing-column-type"}
)
UNAVAILABLE_RULE = "lint-unavailable"
_TIMEOUT_S = 60


def binary() -> str | None:
    """The squawk of this environment: next to the interpreter (the image's venv), else on PATH."""
    here = Path(sys.executable).parent / "squawk"
    return str(here) if here.exists() else shutil.which("squawk")


def _script(steps: Sequence[Step]) -> tuple[str, list[tuple[int, str, int]]]:
    """The plan as one SQL file, and for each statement its first line (0-based), migration, index."""
    lines: list[str] = []
    where: list[tuple[int, str, int]] = []
    for step in steps:
        for index, statement in enumerate(step.statements):
            where.append((len(lines), step.migration, index))
            text = statement.rstrip()
            lines += (text if text.endswith(";") else text + ";").splitlines() or [";"]
    return "\n".join(lines) + "\n", where


def _locate(line: int, where: list[tuple[int, str, int]]) -> tuple[str, int] | None:
    found = None
    for first, migration, index in where:
        if first > line:
            break
        found = (migration, index)
    return found


def hazards(steps: Sequence[Step], pg_version: str | None = None) -> dict[tuple[str, int], list[Hit]]:
    """Squawk's findings per (migration, statement index); style rules left out."""
    statements = {(s.migration, i): text for s in steps for i, text in enumerate(s.statements)}
    if not statements:
        return {}
    exe = binary()
    if exe is None:
        return _unavailable(steps, "the squawk binary is not installed (package squawk-cli)")
    script, where = _script(steps)
    with tempfile.TemporaryDirectory(prefix="dbmigrate-lint-") as tmp:
        path = Path(tmp) / "plan.sql"
        path.write_text(script, encoding="utf-8")
        args = [exe, "--reporter", "json", *(f"--include={r}" for r in INCLUDE_RULES)]
        if pg_version:
            args.append(f"--pg-version={pg_version}")
        try:
            done = subprocess.run(
                [*args, str(path)], capture_output=True, text=True, timeout=_TIMEOUT_S, check=False, cwd=tmp
            )
            reported = json.loads(done.stdout or "[]")
        except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
            return _unavailable(steps, f"squawk failed: {type(exc).__name__}")
    if not isinstance(reported, list):
        return _unavailable(steps, "squawk's output is not a list of findings")
    found: dict[tuple[str, int], list[Hit]] = {}
    for item in reported:
        rule = str(item.get("rule_name", "")) if isinstance(item, dict) else ""
        if not rule or rule in STYLE_RULES:
            continue
        at = _locate(int(item.get("line", 0)), where)
        if at is None:
            continue
        name, keys = subject(statements[at])
        severity = DESTRUCTIVE if rule in DESTRUCTIVE_RULES else HAZARD
        message = str(item.get("message", "")).strip()
        advice = str(item.get("help") or "").strip()
        hits = found.setdefault(at, [])
        if all(h.rule != rule for h in hits):
            kind = "".join(part.title() for part in rule.split("-"))
            hits.append(Hit(rule, kind, name, f"{message} {advice}".strip(), severity, keys))
    return found


def _unavailable(steps: Sequence[Step], why: str) -> dict[tuple[str, int], list[Hit]]:
    first = next((s.migration for s in steps if s.statements), None)
    if first is None:
        return {}
    hit = Hit(
        UNAVAILABLE_RULE,
        "Unclassified",
        "squawk",
        f"lock and downtime hazards were not checked: {why}",
        UNCLASSIFIED,
    )
    return {(first, 0): [hit]}
