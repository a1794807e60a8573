"""One run: wait for the database, lock, plan, (maybe) migrate, read back, report.

The no-op path (nothing pending) reads the tracking table over the runner's own asyncpg
connection and lists migration files on disk; tortoise and aerich, the lock-timeout retries
(``locking``, ``attempts``) and planning's modules are imported only when there is work.

Every pod start pays for what that path imports (figure 1 of docs/benchmarks.md), so the modules
on it define no dataclasses: creating one costs about half a millisecond (Python compiles its
methods at import), a dozen of them as much as the run's own decision. Immutable records there are
NamedTuples, mutable state plain classes; the report's optional parts live in ``report_parts.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING

import asyncpg

from dbmigrate_runner import database
from dbmigrate_runner.errors import ConfigError, ConnectionLost, LockTimeout, MigrationFailed, RunnerError
from dbmigrate_runner.log import log
from dbmigrate_runner.planning import Plan, Target, plan_run, resolve_target, sort_versions, unfulfilled
from dbmigrate_runner.project import Project, discover, load_project
from dbmigrate_runner.report import AppState, Outcome, Report
from dbmigrate_runner.settings import Settings
from dbmigrate_runner.tools import MigrationTool, get_tool

if TYPE_CHECKING:  # planning's modules and the lock retries are imported only when needed
    from dbmigrate_runner.attempts import Attempts
    from dbmigrate_runner.locking import Retrier
    from dbmigrate_runner.sqlplan import SqlPlan, Step


class RunState:
    """What the report is built from, filled in as far as the run got. A plain class, not a
    dataclass: modules on the no-op path make no dataclasses (see the module's docstring)."""

    __slots__ = (
        "applied_now",
        "apps",
        "final_applied",
        "heads",
        "identity",
        "pending",
        "plan",
        "retrier",
        "verified",
    )

    def __init__(self) -> None:
        self.applied_now: list[str] = []
        self.final_applied: dict[str, list[str]] | None = None
        self.apps: list[str] = []
        self.pending: dict[str, list[str]] = {}
        self.plan: SqlPlan | None = None  # the plan command's result
        # Alembic: the head(s) read with final_applied (which is then their ancestry).
        self.heads: dict[str, list[str]] = {}
        self.retrier: Retrier | None = None  # lock timeouts met (the report's "locking")
        # The approved plan's migrations, once checked (--expect-plan): a resumed run must be its tail.
        self.verified: list[str] | None = None
        # The database the runner's connection is on (the one it locks), once connected.
        self.identity: database.Identity | None = None


def app_states(
    applied: dict[str, list[str]], apps: list[str], heads: dict[str, list[str]] | None = None
) -> dict[str, AppState]:
    """Per-app state for the report: every selected app, plus any other app found in the table."""
    names = list(dict.fromkeys([*apps, *applied]))
    return {
        app: AppState(
            current=applied[app][-1] if applied.get(app) else None,
            count=len(applied.get(app, [])),
            versions=list(applied.get(app, [])),
            heads=list((heads or {}).get(app, [])),
        )
        for app in names
    }


def build_report(settings: Settings, state: RunState, started: float, error: RunnerError | None) -> Report:
    if state.plan is not None:
        from dbmigrate_runner.plans import summarize  # planning's imports (pglast) only when planning
    if error is not None:
        from dbmigrate_runner.report import ErrorInfo  # the report's optional parts: report_parts.py
    outcome = error.outcome if error else Outcome.SUCCEEDED
    return Report(
        outcome=outcome,
        tool=settings.tool,
        command=settings.command,
        # Unknown (not read) stays empty, so nobody mistakes "not read" for "nothing applied".
        apps=(
            {} if state.final_applied is None else app_states(state.final_applied, state.apps, state.heads)
        ),
        applied=list(state.applied_now),
        applied_count=len(state.applied_now),
        duration_ms=int((time.monotonic() - started) * 1000),
        error=ErrorInfo(kind=error.kind, message=error.message, migration=error.migration) if error else None,
        plan=summarize(state.plan) if state.plan is not None else None,
        locking=state.retrier.waits.report() if state.retrier is not None else None,
        database=state.identity.as_report() if state.identity is not None else None,
    )


async def _read_applied(tool: MigrationTool, conn: asyncpg.Connection) -> dict[str, list[str]]:
    return await tool.read_applied(conn)


async def run(settings: Settings, state: RunState) -> None:
    """Raises :class:`RunnerError` on any known failure; ``state`` keeps what is known for the report."""
    # Configs commonly build their db_url from DATABASE_URL at import time; with the split form
    # (DB_HOST, ...) provide it, so such a config imports. The runner's own connection wins anyway.
    os.environ.setdefault("DATABASE_URL", settings.db.url())
    if settings.tool == "alembic":
        from dbmigrate_runner.tools import alembic

        await alembic.run(settings, state)
        return
    project = load_project(settings.tool, settings.project_dir, settings.config, settings.location)
    disk = discover(project, settings.apps)
    state.apps = list(disk)
    tool = get_tool(settings.tool)
    log.info(
        "run.start",
        f"{settings.command} with {settings.tool}",
        command=settings.command,
        tool=settings.tool,
        config=project.config_path,
        apps=state.apps,
        target=settings.target,
        database=settings.db.describe(),
    )

    conn = await database.connect(settings.db, settings.wait_timeout)
    log.debug("database.connected", "runner connection open", backend_pid=conn.get_server_pid())
    try:
        state.identity = tool.identity = await database.identity(conn)
        if settings.command == "status":
            await _status(tool, conn, disk, state)
            return
        if settings.command == "plan":
            await _plan(settings, tool, conn, disk, project, state)
            return
        try:
            conn = await database.take_lock(conn, settings.lock_timeout, settings.db, settings.wait_timeout)
        except LockTimeout:
            # Reading is safe without the lock; the report then still tells what is applied.
            with contextlib.suppress(asyncpg.PostgresError):
                state.final_applied = await _read_applied(tool, conn)
            raise
        resumes = 0
        try:
            while True:
                try:
                    await _locked(settings, tool, conn, disk, project, state)
                    return
                except ConnectionLost as exc:
                    # Before or between migrations: nothing is in flight; take the lock again and go
                    # on from what the tracking table says. A bounded number of times.
                    if not exc.resumable or resumes >= MAX_RESUMES:
                        raise
                    resumes += 1
                    conn = await database.reconnect(
                        conn, settings.db, settings.wait_timeout, exc, f"migrating (resume {resumes})"
                    )
                    conn = await database.take_lock(
                        conn, settings.lock_timeout, settings.db, settings.wait_timeout
                    )
        finally:
            if state.retrier is not None:
                await state.retrier.close()
            await database.release_lock(conn)
    finally:
        await database.close(conn)


# Connection losses between migrations the runner resumes from by itself before leaving it to the Job.
MAX_RESUMES = 5


async def _locked(
    settings: Settings,
    tool: MigrationTool,
    conn: asyncpg.Connection,
    disk: dict[str, list[str]],
    project: Project,
    state: RunState,
) -> None:
    """Under the advisory lock: read what is applied, plan, migrate, read back."""
    try:
        guard = await database.LockGuard.start(conn)
        applied = await _read_applied(tool, conn)
    except Exception as exc:
        if isinstance(exc, RunnerError) or not database.lost(conn, exc):
            raise
        raise ConnectionLost(f"lost the database connection ({type(exc).__name__})", resumable=True) from exc
    tool.before_commit, tool.lock_pid = guard.check, guard.pid
    state.final_applied = applied
    target = _target(settings, disk, applied)
    baseline = _baseline(settings, tool, disk, applied)
    if baseline:
        applied = {**applied, **baseline}  # planned as if recorded; recorded before the upgrade
    plan = plan_run(settings.command, disk, applied, target)
    for app_plan in plan.apps:
        if app_plan.unknown_applied:
            log.warning(
                "plan.unknown_applied",
                "applied versions not in this image",
                app=app_plan.app,
                versions=list(app_plan.unknown_applied),
            )
    if plan.empty and not baseline:
        log.info("plan.noop", "nothing to do", applied={a: len(v) for a, v in applied.items()})
        if settings.fast_noop:
            return
        log.info("plan.full", "DBMIGRATE_FAST_NOOP=false: opening the tool anyway", tool=tool.name)
    attempts = _attempts(settings, tool, state)
    attempts.guard = guard  # this lock's session (a resumed run has a new one)
    tool.attempt = attempts
    log.info(
        "plan",
        "migrations to run",
        apply=[f"{p.app}:{v}" for p in plan.apps for v in p.to_apply],
        revert=[f"{p.app}:{v}" for p in plan.apps for v in p.to_revert],
    )
    state.final_applied = None  # stale from here on until read back
    try:
        await _execute(
            settings,
            tool,
            plan,
            target,
            project_apps=state.apps,
            state=state,
            project=project,
            baseline=baseline,
        )
    except Exception as exc:
        # A loss inside a migration is already a ConnectionLost (see attempts.py); one that reaches
        # here raw happened outside any migration (opening Tortoise, bootstrapping the table).
        if isinstance(exc, RunnerError) or not database.is_connection_lost(exc):
            raise
        raise ConnectionLost(f"lost the database connection ({type(exc).__name__})", resumable=True) from exc
    finally:
        state.final_applied = await _read_back(tool, conn, settings)


def _attempts(settings: Settings, tool: MigrationTool, state: RunState) -> Attempts:
    """The lock-timeout retries of this run's migrations, made once (a resumed run keeps what it
    waited); only when there is work, so that a no-op does not import them."""
    from dbmigrate_runner.attempts import Attempts
    from dbmigrate_runner.locking import Retrier

    if state.retrier is None:
        state.retrier = Retrier(settings.locking, settings.db)
        tool.session_settings = state.retrier.session_settings()
    return Attempts(state.retrier)


async def _read_back(
    tool: MigrationTool, conn: asyncpg.Connection, settings: Settings
) -> dict[str, list[str]] | None:
    """Best effort, after migrating: a failure here must not hide the run's own error (the report then
    says "unknown" with an empty apps map). A lost lock connection is replaced by a short-lived one."""
    with contextlib.suppress(Exception):
        async with database.live(conn, settings.db, settings.wait_timeout) as reading:
            return await _read_applied(tool, reading)
    return None


def _baseline(
    settings: Settings, tool: MigrationTool, disk: dict[str, list[str]], applied: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Versions to record as applied without running them (``--baseline``): only into an empty
    tracking table. Once the baseline version is recorded (a later run with the same spec), nothing."""
    if not settings.baseline or settings.command != "upgrade":
        return {}
    base = resolve_target(settings.baseline, disk, allow_zero=False)
    if base.version in applied.get(base.app, []):
        log.info(
            "baseline.done", "the baseline version is already recorded", baseline=f"{base.app}:{base.version}"
        )
        return {}
    recorded = sum(len(versions) for versions in applied.values())
    if recorded:
        raise ConfigError(
            f"baseline refused: {tool.table} already records {recorded} migrations "
            f"(not including {base.app}:{base.version})"
        )
    versions = sort_versions(disk[base.app])
    return {base.app: versions[: versions.index(base.version) + 1]}


def _target(settings: Settings, disk: dict[str, list[str]], applied: dict[str, list[str]]) -> Target | None:
    if not settings.target:
        return None
    known = {app: [*disk[app], *applied.get(app, [])] for app in disk}
    return resolve_target(settings.target, known, allow_zero=settings.command == "downgrade")


async def _execute(
    settings: Settings,
    tool: MigrationTool,
    plan: Plan,
    target: Target | None,
    *,
    project_apps: list[str],
    state: RunState,
    project: Project,
    baseline: dict[str, list[str]] | None = None,
) -> None:
    started = time.monotonic()
    await tool.open(project, settings.db, project_apps)
    try:
        if settings.expect_plan and settings.command == "upgrade":
            labels = [f"{p.app}:{v}" for p in plan.apps for v in p.to_apply]
            if state.verified is None:
                from dbmigrate_runner.plans import check_expected

                check_expected(settings, tool.name, await tool.plan_sql(plan))
                state.verified = labels
            elif labels != state.verified[len(state.verified) - len(labels) :]:
                raise ConfigError(
                    "after reconnecting, the pending migrations are no longer the rest of the approved "
                    f"plan ({', '.join(labels)}); nothing more was applied"
                )
        await tool.bootstrap()
        for app, versions in (baseline or {}).items():
            await tool.record_baseline(app, versions)
            log.info(
                "baseline.recorded",
                f"recorded {len(versions)} migration(s) of {app} as applied without running them",
                app=app,
                versions=versions,
            )
        if settings.command == "upgrade":
            await tool.upgrade(plan, target, state.applied_now.append)
        else:
            assert target is not None
            await tool.downgrade(plan, target, state.applied_now.append)
        _check_fulfilled(settings.command, plan, state.applied_now)
    finally:
        with contextlib.suppress(Exception):  # a dead server must not hang or hide the run's outcome
            await asyncio.wait_for(tool.close(), 10)
        log.info(
            "migrations.done",
            f"{len(state.applied_now)} migration(s) "
            f"{'applied' if settings.command == 'upgrade' else 'reverted'}",
            count=len(state.applied_now),
            duration_ms=int((time.monotonic() - started) * 1000),
        )


def _check_fulfilled(command: str, plan: Plan, done: list[str]) -> None:
    """A tool that returns without doing all the plan listed must not end in "Succeeded"."""
    missing = unfulfilled(command, plan, done)
    if missing:
        verb = "applied" if command == "upgrade" else "reverted"
        raise MigrationFailed(
            f"the plan listed {', '.join(missing)} but the tool returned without it being {verb}",
            kind="PlanNotFulfilled",
            migration=missing[0],
        )


async def _status(
    tool: MigrationTool, conn: asyncpg.Connection, disk: dict[str, list[str]], state: RunState
) -> None:
    """Read-only: no lock, no bootstrap, no writes."""
    applied = await _read_applied(tool, conn)
    state.final_applied = applied
    for app, versions in disk.items():
        done = set(applied.get(app, []))
        state.pending[app] = [v for v in versions if v not in done]
        log.info(
            "status",
            f"app {app}: {len(done)} applied, {len(state.pending[app])} pending",
            app=app,
            current=applied[app][-1] if applied.get(app) else None,
            applied=applied.get(app, []),
            pending=state.pending[app],
        )


async def _plan(
    settings: Settings,
    tool: MigrationTool,
    conn: asyncpg.Connection,
    disk: dict[str, list[str]],
    project: Project,
    state: RunState,
) -> None:
    """Read-only, no lock: what ``upgrade`` with the same settings would run now."""
    from dbmigrate_runner.plans import finish_plan

    applied = await _read_applied(tool, conn)
    state.final_applied = applied
    target = _target(settings, disk, applied)
    baseline = _baseline(settings, tool, disk, applied)
    plan = plan_run("upgrade", disk, {**applied, **baseline}, target)
    steps: list[Step] = []
    if not plan.empty:
        await tool.open(project, settings.db, state.apps)
        try:
            steps = await tool.plan_sql(plan)
        finally:
            await tool.close()
    state.plan = await finish_plan(settings, tool.name, steps, conn)
