"""A plan: the SQL each pending migration would run, its destructive-change findings, and a content hash.

The hash is what a reviewer approves (``spec.approvedPlan`` or the ``dbmigrate.dev/approve``
annotation). It covers what the run would do — the tool, the pending migrations in order, each
one's statements, whether some of its steps cannot be shown as SQL, and the digest of its file's
bytes (``source``: the Python code, which the SQL alone does not pin down; see ``sources.py``) —
and nothing incidental (no timestamps, no findings: those are derived from the SQL). So the same
image against the same database state always gives the same hash, and any change to either, SQL
or code, gives another.

Pure standard library on purpose: the operator imports it to check a plan document against the
hash in the termination message, without the ORM stack or the SQL parser.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

# 2: each step's ``source`` (its migration file's digest) is hashed too. Version 1 documents (older
# runner images) are still read and checked, by the version they say they are.
PLAN_VERSION = 2
# ``opaque`` text of a step whose effect is Python code, not SQL (RunPython, a data migration).
OPAQUE_PYTHON = "runs Python code: its SQL cannot be known before it runs"


@dataclass
class Finding:
    """One destructive change: which migration, which statement (0-based), what it does."""

    migration: str  # "app:version"
    statement: int
    kind: str  # e.g. "DropTable", "DropColumn", "AlterColumnType", "Truncate", "Unclassified"
    target: str  # the object it hits, e.g. "public.product.description"
    message: str
    rule: str = ""  # the lint rule (squawk's id where it has one): what spec.lint.ignore names
    severity: str = ""  # destructive, unclassified, hazard or in-plan (destructive.py)


@dataclass
class Step:
    """One pending migration: its statements in order, and the parts that are not SQL."""

    migration: str  # "app:version"
    statements: list[str] = field(default_factory=list)
    # Why some of this migration's effect cannot be shown as SQL (empty: the statements are all of it).
    opaque: list[str] = field(default_factory=list)
    # "sha256:<hex>" of the migration's file, byte for byte (empty only in version 1 documents).
    source: str = ""

    def wire(self) -> dict[str, Any]:
        """The step as plan documents and reports carry it."""
        return {
            "migration": self.migration,
            "statements": self.statements,
            "opaque": self.opaque,
            "source": self.source,
        }


def step_from(data: dict[str, Any]) -> Step:
    """A step from its wire form (see :meth:`Step.wire`)."""
    return Step(
        migration=str(data.get("migration", "")),
        statements=[str(x) for x in data.get("statements", [])],
        opaque=[str(x) for x in data.get("opaque", [])],
        source=str(data.get("source") or ""),
    )


@dataclass
class SqlPlan:
    tool: str
    target: str | None  # the last migration the run would apply ("app:version"), None when nothing pends
    steps: list[Step] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    hash: str = ""
    v: int = PLAN_VERSION
    # Lint rules silenced for this resource (spec.lint.ignore): part of the hash, since what a
    # reviewer approves includes what was not shown to them.
    lint_ignore: list[str] = field(default_factory=list)

    @property
    def pending(self) -> list[str]:
        return [step.migration for step in self.steps]

    @property
    def statement_count(self) -> int:
        return sum(len(step.statements) for step in self.steps)

    @property
    def opaque_count(self) -> int:
        return sum(1 for step in self.steps if step.opaque)

    def seal(self) -> SqlPlan:
        """Compute the hash over the canonical form; returns self for chaining."""
        self.hash = content_hash(self.tool, self.steps, self.lint_ignore, v=self.v)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def canonical(
    tool: str, steps: list[Step], lint_ignore: list[str] | tuple[str, ...] = (), *, v: int = PLAN_VERSION
) -> bytes:
    """The bytes the hash covers: the version, the tool, then each step's name, statements, opaque
    marks and (from version 2) its file's digest, in order, and the silenced lint rules (only when
    there are some: plans without any keep their hash)."""
    body: dict[str, Any] = {"v": v, "tool": tool, "steps": [s.wire() if v >= 2 else _v1(s) for s in steps]}
    if lint_ignore:
        body["lint_ignore"] = sorted(set(lint_ignore))
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def _v1(step: Step) -> dict[str, Any]:
    return {"migration": step.migration, "statements": step.statements, "opaque": step.opaque}


def content_hash(
    tool: str, steps: list[Step], lint_ignore: list[str] | tuple[str, ...] = (), *, v: int = PLAN_VERSION
) -> str:
    """Lower-case hex sha256 (64 characters): long enough that nobody can craft a second plan with it."""
    return hashlib.sha256(canonical(tool, steps, lint_ignore, v=v)).hexdigest()


def hashes_to(
    tool: str, steps: list[Step], expected: str, lint_ignore: list[str] | tuple[str, ...] = ()
) -> bool:
    """Do these steps hash to ``expected``, as a plan of this version or (steps without a source,
    from an older runner image) of version 1?"""
    if content_hash(tool, steps, lint_ignore) == expected:
        return True
    return not any(s.source for s in steps) and content_hash(tool, steps, lint_ignore, v=1) == expected


def from_dict(data: dict[str, Any]) -> SqlPlan:
    """Parse a plan document; raises ``ValueError`` when it is not one or its hash does not match."""
    if not isinstance(data, dict) or "steps" not in data:
        raise ValueError("not a plan document")
    version = data.get("v", 1)
    if not isinstance(version, int) or not 1 <= version <= PLAN_VERSION:
        raise ValueError(f"plan version {version!r} is not one this reader knows (1 to {PLAN_VERSION})")
    steps = [step_from(s) for s in data["steps"]]
    findings = [
        Finding(
            migration=str(f["migration"]),
            statement=int(f["statement"]),
            kind=str(f["kind"]),
            target=str(f.get("target", "")),
            message=str(f.get("message", "")),
            rule=str(f.get("rule", "")),
            severity=str(f.get("severity", "")),
        )
        for f in data.get("findings", [])
    ]
    plan = SqlPlan(
        tool=str(data.get("tool", "")),
        target=data.get("target"),
        steps=steps,
        findings=findings,
        hash=str(data.get("hash", "")),
        v=version,
        lint_ignore=[str(r) for r in data.get("lint_ignore", [])],
    )
    if plan.hash != content_hash(plan.tool, plan.steps, plan.lint_ignore, v=plan.v):
        raise ValueError("the plan's hash does not match its content")
    return plan


def render_sql(plan: SqlPlan) -> str:
    """The plan as a readable SQL script: one commented block per migration, findings marked."""
    lines = [f"-- dbmigrate plan {plan.hash}", f"-- tool {plan.tool}, target {plan.target or '(none)'}"]
    if plan.lint_ignore:
        lines.append(f"-- lint rules silenced (spec.lint.ignore): {', '.join(sorted(plan.lint_ignore))}")
    if not plan.steps:
        lines.append("-- nothing to apply")
    by_statement: dict[tuple[str, int], list[Finding]] = {}
    for f in plan.findings:
        by_statement.setdefault((f.migration, f.statement), []).append(f)
    for step in plan.steps:
        lines += ["", f"-- migration {step.migration}"]
        if step.source:
            lines.append(f"-- file {step.source}")
        for reason in step.opaque:
            lines.append(f"-- NOT SQL: {reason}")
        for index, statement in enumerate(step.statements):
            for finding in by_statement.get((step.migration, index), ()):
                label = (finding.severity or "destructive").upper()
                rule = f"{finding.rule}, " if finding.rule else ""
                lines.append(f"-- {label} ({rule}{finding.kind}): {finding.message}")
            text = statement.rstrip()
            lines.append(text if text.endswith(";") else text + ";")
    return "\n".join(lines) + "\n"
