"""The ``plan`` command's common end for every tool: findings, the hash, and where the plan goes.

The plan leaves the Job two ways (the Job has no API access): its summary (hash, pending versions,
counts, findings) in the report — the termination message — and the whole document, SQL included,
as one ``plan.document`` log line. The operator takes the document from the Pod's log and accepts it
only if its content hashes to the hash the termination message carries.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import asyncpg

from dbmigrate_runner.errors import ConfigError
from dbmigrate_runner.log import log
from dbmigrate_runner.report import PlanFinding, PlanSummary
from dbmigrate_runner.settings import Settings
from dbmigrate_runner.sqlplan import Finding, SqlPlan, Step, content_hash, render_sql


def _quoted(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


async def _holds_rows(conn: asyncpg.Connection, table: str) -> bool | None:
    """Whether ``table`` exists and has a row now; None when that cannot be read."""
    with contextlib.suppress(asyncpg.PostgresError):
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", _quoted(table)):
            return False
        return bool(await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {_quoted(table)})"))
    return None


_NOT_NULL_RULES = ("adding-required-field", "adding-not-nullable-field")


async def _keep(conn: asyncpg.Connection | None, finding: Finding) -> bool:
    """A NOT NULL column added to a table that exists and is empty cannot fail: no finding."""
    if finding.rule not in _NOT_NULL_RULES or conn is None or finding.target.count(".") < 1:
        return True
    table = finding.target.rsplit(".", 1)[0]
    return await _holds_rows(conn, table) is not False


async def _server_version(conn: asyncpg.Connection | None) -> str | None:
    """``16.4``: squawk's rules depend on it (a constant default rewrites no table since 11)."""
    if conn is None:
        return None
    version = conn.get_server_version()
    return f"{version.major}.{version.minor}"


async def finish_plan(
    settings: Settings, tool: str, steps: list[Step], conn: asyncpg.Connection | None
) -> SqlPlan:
    from dbmigrate_runner.destructive import analyse  # pglast: planning only
    from dbmigrate_runner.squawk import hazards

    pg_version = await _server_version(conn)
    analysed = await asyncio.to_thread(analyse, steps, settings.lint_ignore, lambda s: hazards(s, pg_version))
    findings = [f for f in analysed if await _keep(conn, f)]
    plan = SqlPlan(
        tool=tool,
        target=steps[-1].migration if steps else None,
        steps=steps,
        findings=findings,
        lint_ignore=list(settings.lint_ignore),
    )
    plan.seal()
    review = [f for f in findings if f.severity in NEEDS_REVIEW]
    log.info(
        "plan.summary",
        f"{len(steps)} migration(s) pending, {plan.statement_count} statement(s), "
        f"{len(findings)} finding(s), {len(review)} to review",
        hash=plan.hash,
        target=plan.target,
        pending=plan.pending,
        findings=[f"{f.migration}#{f.statement} {f.severity} {f.rule} {f.target}" for f in ranked(findings)],
        opaque=[s.migration for s in steps if s.opaque],
        lint_ignore=list(settings.lint_ignore),
    )
    log.info("plan.document", "the whole plan; the operator checks it against the hash", plan=plan.to_dict())
    await asyncio.to_thread(_write_files, settings, plan)
    return plan


def _write_files(settings: Settings, plan: SqlPlan) -> None:
    """``--plan-file`` and ``--sql-file``, for a person running the command by hand."""
    for path, text in ((settings.plan_file, plan.to_json() + "\n"), (settings.sql_file, render_sql(plan))):
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")


def check_expected(settings: Settings, tool: str, steps: list[Step]) -> None:
    """An approved run (``--expect-plan``) applies exactly the approved plan: under the lock, before
    anything is applied, the plan is made again and must hash the same."""
    if not settings.expect_plan:
        return
    now = content_hash(tool, steps, settings.lint_ignore)
    if now != settings.expect_plan:
        raise ConfigError(
            f"the approved plan {settings.expect_plan} is not what would run now (plan {now}: the "
            "database or the image changed since); nothing was applied — review and approve the new plan",
            kind="PlanChanged",
        )
    log.info("plan.approved", "the plan matches the approved hash", hash=now)


_FIRST_RULES = ("ban-drop-table", "ban-drop-column", "ban-drop-schema", "ban-drop-database")
# destructive.SEVERITIES, most severe first; here so that importing this module needs no parser.
SEVERITIES = ("destructive", "unclassified", "hazard", "in-plan")
NEEDS_REVIEW = SEVERITIES[:3]


def ranked(findings: list[Finding]) -> list[Finding]:
    """Most severe first (a dropped table or column of an existing table before anything else),
    then plan order: the report keeps the first ones when it must trim."""

    def key(item: tuple[int, Finding]) -> tuple[int, int, int]:
        index, f = item
        severity = SEVERITIES.index(f.severity) if f.severity in SEVERITIES else 1
        return (severity, 0 if severity == 0 and f.rule in _FIRST_RULES else 1, index)

    return [f for _, f in sorted(enumerate(findings), key=key)]


def summarize(plan: SqlPlan) -> PlanSummary:
    """What the termination message carries of a plan (the report shrinks it to fit), findings
    ranked most severe first."""
    return PlanSummary(
        hash=plan.hash,
        target=plan.target,
        pending=plan.pending,
        pending_count=len(plan.steps),
        statements=plan.statement_count,
        opaque=[s.migration for s in plan.steps if s.opaque],
        findings=[
            PlanFinding(f.migration, f.statement, f.kind, f.target, f.rule, f.severity)
            for f in ranked(plan.findings)
        ],
        findings_count=len(plan.findings),
        review_count=sum(1 for f in plan.findings if f.severity in NEEDS_REVIEW),
        lint_ignore=list(plan.lint_ignore),
        steps=[s.wire() for s in plan.steps],
    )
