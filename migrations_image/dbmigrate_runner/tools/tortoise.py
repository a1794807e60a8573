"""Tortoise ORM 1.1 built-in migrations, driven step by step instead of through ``MigrationExecutor.migrate``.

Why not call ``migrate`` directly:

* it writes the ``tortoise_migrations`` row after the migration's transaction has committed, on
  another pooled connection, so a crash in between leaves an unrecorded schema change and the next
  run fails with "already exists". Here the row is written on the transaction's own connection;
* its default direction "both" silently rolls back to an older target. Here ``upgrade`` only
  accepts forward steps and ``downgrade`` only backward ones.

The plan itself (graph order, cross-app dependencies) still comes from the executor.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from dbmigrate_runner import sources
from dbmigrate_runner.database import Identity
from dbmigrate_runner.errors import ConfigError, DowngradeRefused
from dbmigrate_runner.log import log
from dbmigrate_runner.planning import ZERO, Plan, Target
from dbmigrate_runner.project import Project, tortoise_migrations_module
from dbmigrate_runner.settings import DbParams
from dbmigrate_runner.tools.base import (
    Attempt,
    BeforeCommit,
    OnDone,
    check_same_database,
    group_rows,
    init_tortoise,
    just_run,
    migration_errors,
    no_check,
    with_runner_connection,
)

if TYPE_CHECKING:
    from dbmigrate_runner.sqlplan import Step

TABLE = "tortoise_migrations"
# What Migration.apply(collect_sql=True) writes for an operation without SQL (RunPython).
_NOT_SQL = "-- THIS OPERATION CANNOT BE REPRESENTED AS SQL"


async def _record(client: Any, app: str, name: str, *, applied: bool) -> None:
    """The recorder's row change, on ``client`` (the migration's transaction).

    Plain SQL instead of ``MigrationRecorder(client)``: constructing a recorder defines a model class,
    which costs several milliseconds per migration.
    """
    if applied:
        await client.execute_query(
            f'INSERT INTO "{TABLE}" ("app", "name", "applied_at") VALUES ($1, $2, $3)',
            [app, name, datetime.now(UTC)],
        )
    else:
        await client.execute_query(f'DELETE FROM "{TABLE}" WHERE "app" = $1 AND "name" = $2', [app, name])


def _promised(plan: Plan, apps_config: Any) -> list[tuple[str, str]]:
    """``(app, version)`` pairs the plan promises to apply on the executor holding ``apps_config``."""
    return [(p.app, version) for p in plan.apps if p.app in apps_config for version in p.to_apply]


def _check_covers(steps: list[Any], promised: list[tuple[str, str]]) -> None:
    """Refuse, before changing anything, a graph plan that would leave a promised version out."""
    planned = {(step.migration.app_label, step.migration.name) for step in steps}
    missing = [f"{app}:{name}" for app, name in promised if (app, name) not in planned]
    if missing:
        raise ConfigError(
            f"Tortoise's migration graph does not reach {', '.join(missing)} "
            "(is it applied out of order, or a dependency missing?); nothing was applied"
        )


class _Apply:
    """One forward migration in its transaction with its row; re-runnable (a lock-timeout retry)."""

    def __init__(
        self,
        tool: TortoiseTool,
        executor: Any,
        migration: Any,
        key: Any,
        label: str,
        applied: Any,
        states: list[Any],
    ) -> None:
        self.tool, self.executor, self.migration, self.key, self.label = tool, executor, migration, key, label
        self.applied, self.states, self.tries = applied, states, 0

    async def __call__(self) -> None:
        from tortoise.transactions import in_transaction

        self.tries += 1
        if not self.states or self.tries > 1:  # apply() moves the state on: a retry starts anew
            self.states[:] = [await self.executor._project_state(self.applied)]
        state, executor, migration, key = self.states[0], self.executor, self.migration, self.key
        editor = executor._schema_editor(atomic=migration.atomic)
        if editor.atomic_migration:
            async with in_transaction(executor.connection.connection_name) as txn:
                editor.client = txn
                await migration.apply(state, schema_editor=editor)
                await _record(txn, key.app_label, key.name, applied=True)
                await self.tool.before_commit(self.label)
        else:
            await self.tool.before_commit(self.label)
            await migration.apply(state, schema_editor=editor)
            await executor.recorder.record_applied(key.app_label, key.name)


class _Revert:
    """One backward migration in its transaction with the removal of its row; re-runnable."""

    def __init__(
        self, tool: TortoiseTool, executor: Any, migration: Any, key: Any, label: str, state: Any
    ) -> None:
        self.tool, self.executor, self.migration, self.key, self.label = tool, executor, migration, key, label
        self.state = state

    async def __call__(self) -> None:
        from tortoise.transactions import in_transaction

        executor, migration, key = self.executor, self.migration, self.key
        editor = executor._schema_editor(atomic=migration.atomic)
        if editor.atomic_migration:
            async with in_transaction(executor.connection.connection_name) as txn:
                editor.client = txn
                await migration.unapply(self.state, schema_editor=editor)
                await _record(txn, key.app_label, key.name, applied=False)
                await self.tool.before_commit(self.label)
        else:
            await self.tool.before_commit(self.label)
            await migration.unapply(self.state, schema_editor=editor)
            await executor.recorder.record_unapplied(key.app_label, key.name)


class TortoiseTool:
    name = "tortoise"
    table = TABLE

    def __init__(self) -> None:
        self.before_commit: BeforeCommit = no_check
        self.attempt: Attempt = just_run
        self.session_settings: dict[str, str] = {}
        self.identity: Identity | None = None
        self.lock_pid: int | None = None
        self.config: dict[str, Any] = {}
        self.executors: list[Any] = []

    async def read_applied(self, conn: asyncpg.Connection) -> dict[str, list[str]]:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{TABLE}"'):
            return {}
        rows = await conn.fetch(f'SELECT "app", "name" FROM "{TABLE}" ORDER BY "applied_at", "id"')
        return group_rows(list(rows), "name")

    async def open(self, project: Project, db: DbParams, apps: list[str]) -> None:
        from tortoise.connection import get_connection
        from tortoise.migrations.executor import MigrationExecutor

        config = with_runner_connection(project.config, db, self.session_settings, apps)
        for app_config in config["apps"].values():
            if module := tortoise_migrations_module(app_config):
                app_config.setdefault("migrations", module)
        self.config = config
        await init_tortoise(config, project)
        await check_same_database(config, self.identity, self.lock_pid)
        # One executor per connection, loaded with every app on it so cross-app dependencies resolve.
        by_connection: dict[str, dict[str, Any]] = {}
        for label, app_config in config["apps"].items():
            by_connection.setdefault(app_config.get("default_connection", "default"), {})[label] = app_config
        self.executors = [
            MigrationExecutor(get_connection(name), subset)
            for name, subset in by_connection.items()
            if any(label in subset for label in apps)
        ]
        try:
            for executor in self.executors:
                await executor.loader.build_graph()
        except Exception as exc:  # a broken or missing migration module is a defect of the image
            raise ConfigError(f"cannot load the migration graph: {type(exc).__name__}: {exc}") from exc

    async def bootstrap(self) -> None:
        for executor in self.executors:
            await executor.recorder.ensure_schema(executor._schema_editor(atomic=False))

    async def record_baseline(self, app: str, versions: list[str]) -> None:
        from tortoise.transactions import in_transaction

        executor = next(e for e in self.executors if app in e.loader.apps_config)
        label = f"{app}:{versions[-1]}"

        async def record() -> None:
            async with in_transaction(executor.connection.connection_name) as txn:
                for version in versions:
                    await _record(txn, app, version, applied=True)
                await self.before_commit(label)

        with migration_errors(label):
            await self.attempt(label, record)

    async def _steps(self, executor: Any, targets: list[Any]) -> tuple[list[Any], set[Any]]:
        applied = set(await executor.recorder.applied_migrations())
        try:
            steps = executor._migration_plan(targets, applied, executor.loader.graph)
        except ValueError as exc:
            raise ConfigError(f"cannot plan the migration: {exc}") from exc
        return list(steps), applied

    async def _promised_steps(self, executor: Any, plan: Plan) -> tuple[list[Any], set[Any]] | None:
        """The forward steps that apply what ``plan`` promised of ``executor``'s apps (None: nothing).

        Every promised version is a target of its own: "__latest__" means the app's leaf nodes, and a
        migration another app depends on is no leaf, so it would be silently skipped.
        """
        from tortoise.migrations.executor import MigrationTarget

        promised = _promised(plan, executor.loader.apps_config)
        if not promised:
            return None
        targets = [MigrationTarget(app_label=app, name=name) for app, name in promised]
        steps, applied = await self._steps(executor, targets)
        if any(step.backward for step in steps):
            raise DowngradeRefused("the plan would roll back applied migrations; upgrade never rolls back")
        _check_covers(steps, promised)
        return steps, applied

    async def upgrade(self, plan: Plan, target: Target | None, on_done: OnDone) -> None:
        from tortoise.migrations.graph import MigrationKey

        for executor in self.executors:
            found = await self._promised_steps(executor, plan)
            if found is None:
                continue
            steps, applied = found
            states: list[Any] = []  # the project state, moved on by each migration (computed once)
            for step in steps:
                migration = step.migration
                key = MigrationKey(app_label=migration.app_label, name=migration.name)
                label = f"{key.app_label}:{key.name}"
                log.info("migration.apply", f"applying {label}", migration=label)
                with migration_errors(label):
                    atomic = bool(executor._schema_editor(atomic=migration.atomic).atomic_migration)
                    once = _Apply(self, executor, migration, key, label, applied, states)
                    await self.attempt(label, once, atomic=atomic)
                applied.add(key)
                on_done(label)

    async def downgrade(self, plan: Plan, target: Target, on_done: OnDone) -> None:
        from tortoise.migrations.executor import MigrationTarget
        from tortoise.migrations.graph import MigrationKey

        for executor in self.executors:
            if target.app not in executor.loader.apps_config:
                continue
            name = "__first__" if target.version == ZERO else target.version
            steps, applied = await self._steps(executor, [MigrationTarget(app_label=target.app, name=name)])
            if any(not step.backward for step in steps):
                raise ConfigError("the downgrade plan contains forward steps; use upgrade to move forward")
            cache = await executor._project_state_cache(applied) if steps else {}
            for step in steps:
                migration = step.migration
                key = MigrationKey(app_label=migration.app_label, name=migration.name)
                label = f"{key.app_label}:{key.name}"
                log.info("migration.revert", f"reverting {label}", migration=label)
                with migration_errors(label):
                    atomic = bool(executor._schema_editor(atomic=migration.atomic).atomic_migration)
                    revert = _Revert(self, executor, migration, key, label, cache[key])
                    await self.attempt(label, revert, atomic=atomic)
                on_done(label)

    async def plan_sql(self, plan: Plan) -> list[Step]:
        """The steps the upgrade would take (same graph plan), each one's SQL collected by the schema
        editor exactly as ``tortoise sqlmigrate`` does; operations that do not reduce to SQL
        (``RunPython``) are marked."""

        from dbmigrate_runner.destructive import split_statements
        from dbmigrate_runner.sqlplan import OPAQUE_PYTHON, Step

        steps: list[Step] = []
        for executor in self.executors:
            found = await self._promised_steps(executor, plan)
            if found is None:
                continue
            graph_steps, _ = found
            for graph_step in graph_steps:
                migration = graph_step.migration
                step = Step(f"{migration.app_label}:{migration.name}")
                module = f"{executor.loader.migrations_module(migration.app_label)}.{migration.name}"
                step.source = sources.of_module_name(module, step.migration)  # RunPython is code, not SQL
                collected = await executor.collect_sql(migration.app_label, migration.name)
                described = ""
                for text in collected:
                    if text.strip().startswith("--"):
                        if text.strip() == _NOT_SQL:
                            step.opaque.append(f"{described or 'an operation'}: {OPAQUE_PYTHON}")
                        elif text.strip() not in ("--", "-- (no-op)"):
                            described = text.strip().removeprefix("-- ")
                        continue
                    step.statements += split_statements(text)
                steps.append(step)
        return steps

    async def close(self) -> None:
        from tortoise import Tortoise

        await Tortoise.close_connections()
