"""The report's optional parts: an error, a plan summary, the lock waits of a run.

They are fields of :class:`~dbmigrate_runner.report.Report` and part of the same contract (their
fields, in this order, are the JSON the operator reads); ``report.py`` re-exports them, so they are
imported from there. They live apart only because a run that needs none of them, the no-op of every
pod start (figure 1 of docs/benchmarks.md), should not pay for building their classes: a dataclass
costs about half a millisecond to create, and ``report.py`` imports this module only when a report
carries one of them or is decoded.

Pure standard library, like ``report.py``: the operator imports it without the ORM stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ErrorInfo:
    kind: str  # exception class, e.g. "UndefinedColumnError"
    message: str  # the database's own text, credentials already masked
    migration: str | None = None  # "app:version" that failed, when known


@dataclass
class LockWaits:
    """Table locks a migration waited for in this run (``lock_timeout``, see ``locking.py``).

    Present when a migration hit its lock timeout at least once, or when there is a ``note``."""

    timeout_ms: int = 0  # the lock_timeout migrations ran with; 0: off
    timeouts: int = 0  # lock timeouts in this run, each rolled back and retried (or given up)
    attempts: int = 0  # attempts of ``migration``, the last one that hit a timeout
    retries: int = 0  # attempts allowed per migration
    migration: str | None = None
    blocker: str | None = None  # who held the lock the last time, described (masked, truncated)
    waited_ms: int = 0  # spent in timed-out attempts and backoff
    note: str | None = None  # e.g. where the timeout could not be set, an INVALID index left behind


@dataclass
class PlanFinding:
    """A lint finding, compactly: the migration, its statement's index, what kind, on what, the rule
    (what ``spec.lint.ignore`` names) and the severity (destructive, unclassified, hazard, in-plan)."""

    migration: str
    statement: int
    kind: str
    target: str
    rule: str = ""
    severity: str = ""


@dataclass
class PlanSummary:
    """The ``plan`` command's result as the operator needs it to gate a run (the SQL itself travels
    in the Pod's log, checked against ``hash``). Lists keep their first entries; ``*_omitted`` say
    how many were left out to fit, ``*_count`` are always exact."""

    hash: str
    target: str | None = None  # the last migration the approved run may apply
    pending: list[str] = field(default_factory=list)  # in run order
    pending_count: int = 0
    pending_omitted: int = 0
    statements: int = 0
    opaque: list[str] = field(default_factory=list)  # migrations with steps that are not SQL
    opaque_omitted: int = 0
    findings: list[PlanFinding] = field(default_factory=list)  # most severe first
    findings_count: int = 0
    findings_omitted: int = 0
    # Findings whose severity needs a person under OnDestructive (destructive, unclassified, hazard);
    # None from a runner older than the lint's severities: then every finding counts.
    review_count: int | None = None
    lint_ignore: list[str] = field(default_factory=list)  # rules silenced (spec.lint.ignore), hashed
    # The whole plan's steps ({migration, statements, opaque, source}) when the report still fits with them;
    # else None and ``steps_omitted`` True: the SQL is then only in the plan Job's log.
    steps: list[dict[str, Any]] | None = None
    steps_omitted: bool = False
