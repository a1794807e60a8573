"""aerich 0.10: applies each version file like ``aerich upgrade`` does, with two differences.

* The tracking row is written on the migration's own transaction connection (``using_db``), so a
  crash can never leave a committed schema change without its row. (Upstream ``Aerich.create()``
  without ``using_db`` only lands in the transaction because the model resolves its connection
  through the transaction context; we do not rely on that.)
* The ``aerich`` table is created, inside that same transaction, when the migration itself did
  not create it (multi-app configs, where only one app's first migration contains it).

Files with ``RUN_IN_TRANSACTION = False`` cannot be atomic; their row is written right after.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from dbmigrate_runner import sources
from dbmigrate_runner.database import Identity
from dbmigrate_runner.errors import ConfigError, MigrationFailed
from dbmigrate_runner.log import log
from dbmigrate_runner.planning import Plan, Target
from dbmigrate_runner.project import AERICH_MODELS, Project, aerich_dir
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

TABLE = "aerich"


class _Rollback(Exception):
    """Ends the planning transaction (rolled back) carrying the SQL ``upgrade()`` returned."""

    def __init__(self, sql: str | None) -> None:
        super().__init__("planning transaction rolled back")
        self.sql = sql


class _Watched:
    """A connection proxy that notes which query methods a migration's ``upgrade()`` calls."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.queried: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("execute"):
            self.queried.add(name)
        return getattr(self._conn, name)


class AerichTool:
    name = "aerich"
    table = TABLE

    def __init__(self) -> None:
        self.before_commit: BeforeCommit = no_check
        self.attempt: Attempt = just_run
        self.session_settings: dict[str, str] = {}
        self.identity: Identity | None = None
        self.lock_pid: int | None = None
        self.project: Project | None = None
        self.config: dict[str, Any] = {}
        self._table_ready = False
        self._table_known = False  # committed: the table exists
        self._describe: dict[str, dict[str, Any]] = {}

    async def read_applied(self, conn: asyncpg.Connection) -> dict[str, list[str]]:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{TABLE}"'):
            return {}
        rows = await conn.fetch(f'SELECT "app", "version" FROM "{TABLE}" ORDER BY "id"')
        return group_rows(list(rows), "version", strip_suffix=True)

    async def open(self, project: Project, db: DbParams, apps: list[str]) -> None:
        self.project = project
        config = with_runner_connection(project.config, db, self.session_settings, apps)
        holders = [
            label for label, app in config["apps"].items() if AERICH_MODELS in (app.get("models") or [])
        ]
        if not holders:
            # Like `aerich` itself does for one-app configs: register the tracking model in the first app.
            first = apps[0] if apps else next(iter(config["apps"]))
            config["apps"][first]["models"] = [*config["apps"][first].get("models", []), AERICH_MODELS]
        self.config = config
        await init_tortoise(config, project)
        await check_same_database(config, self.identity, self.lock_pid)

    def _connection_name(self, app: str) -> str:
        return str(self.config["apps"][app].get("default_connection", "default"))

    async def _ensure_table(self, conn: Any) -> None:
        """Create the ``aerich`` table on ``conn`` (the migration's transaction) if it is still missing."""
        if self._table_ready:
            return
        _, rows = await conn.execute_query("SELECT to_regclass('\"aerich\"') IS NOT NULL AS present")
        if not rows[0]["present"]:
            from aerich.models import Aerich
            from tortoise import Tortoise

            client = Tortoise.get_connection(Aerich._meta.default_connection or "default")
            sql = client.schema_generator(client)._get_table_sql(Aerich, safe=True)["table_creation_string"]
            await conn.execute_script(sql)
            log.info("bootstrap.table", "created the aerich tracking table", table=TABLE)
        self._table_ready = True

    async def bootstrap(self) -> None:
        """Nothing up front: the table is created inside the first migration's transaction if needed."""

    def _module(self, app: str, version: str) -> Any:
        from aerich.utils import import_py_file

        assert self.project is not None
        path = Path(aerich_dir(self.project, app), f"{version}.py")
        if not path.is_file():
            raise ConfigError(f"migration file {path} is missing")
        return import_py_file(path)

    def _state(self, app: str, module: Any) -> Any:
        from aerich.utils import decompress_dict, get_models_describe

        state_text = getattr(module, "MODELS_STATE", None)
        if state_text:
            return decompress_dict(state_text)
        # Old-format file: the current models, as aerich does (computed once).
        if app not in self._describe:
            self._describe[app] = get_models_describe(app)
        return self._describe[app]

    async def record_baseline(self, app: str, versions: list[str]) -> None:
        from aerich.models import Aerich
        from tortoise.transactions import in_transaction

        label = f"{app}:{versions[-1]}"

        async def record() -> None:
            self._table_ready = self._table_known
            async with in_transaction(self._connection_name(app)) as conn:
                await self._ensure_table(conn)
                for version in versions:
                    state = self._state(app, self._module(app, version))
                    await Aerich.create(version=f"{version}.py", app=app, content=state, using_db=conn)
                await self.before_commit(label)
            self._table_known = self._table_ready

        with migration_errors(label):
            await self.attempt(label, record)

    async def upgrade(self, plan: Plan, target: Target | None, on_done: OnDone) -> None:
        from aerich.models import Aerich

        for app_plan in plan.apps:
            for version in app_plan.to_apply:
                label = f"{app_plan.app}:{version}"
                log.info("migration.apply", f"applying {label}", migration=label)
                with migration_errors(label):
                    module = self._module(app_plan.app, version)

                    async def apply(
                        conn: Any, module: Any = module, app: str = app_plan.app, version: str = version
                    ) -> None:
                        sql = await module.upgrade(conn)
                        if sql and sql.strip():
                            await conn.execute_script(sql)
                        await self._ensure_table(conn)
                        state = self._state(app, module)
                        await Aerich.create(version=f"{version}.py", app=app, content=state, using_db=conn)

                    atomic = bool(getattr(module, "RUN_IN_TRANSACTION", True))
                    name = self._connection_name(app_plan.app)
                    await self.attempt(
                        label, functools.partial(self._once, name, label, apply, atomic), atomic=atomic
                    )
                on_done(label)

    async def _once(self, name: str, label: str, apply: Any, atomic: bool) -> None:
        """One migration, its row with it: re-runnable (a lock-timeout retry starts it anew)."""
        from tortoise import Tortoise
        from tortoise.transactions import in_transaction

        self._table_ready = self._table_known  # a rolled-back attempt created nothing
        if atomic:
            async with in_transaction(name) as conn:
                await apply(conn)
                await self.before_commit(label)
        else:
            await self.before_commit(label)
            await apply(Tortoise.get_connection(name))
        self._table_known = self._table_ready

    async def _revert(self, app: str, version: str, module: Any) -> None:
        from tortoise.transactions import in_transaction

        label = f"{app}:{version}"
        async with in_transaction(self._connection_name(app)) as conn:
            sql = await module.downgrade(conn)
            if not sql or not sql.strip():
                raise MigrationFailed(f"{label} has no downgrade SQL", migration=label)
            await conn.execute_script(sql)
            await conn.execute_query(
                f'DELETE FROM "{TABLE}" WHERE "app" = $1 AND "version" = $2', [app, f"{version}.py"]
            )
            await self.before_commit(label)

    async def downgrade(self, plan: Plan, target: Target, on_done: OnDone) -> None:

        for app_plan in plan.apps:
            for version in app_plan.to_revert:
                label = f"{app_plan.app}:{version}"
                log.info("migration.revert", f"reverting {label}", migration=label)
                with migration_errors(label):
                    module = self._module(app_plan.app, version)

                    await self.attempt(label, functools.partial(self._revert, app_plan.app, version, module))
                on_done(label)

    async def plan_sql(self, plan: Plan) -> list[Step]:
        """Each file's ``upgrade()`` called on a read-only transaction that is rolled back: the SQL it
        returns is the SQL ``aerich upgrade`` would run. A function that queries the connection itself
        (a data migration) or fails is marked: its effect is not all in the returned SQL."""
        from tortoise.transactions import in_transaction

        from dbmigrate_runner.destructive import split_statements
        from dbmigrate_runner.sqlplan import Step

        steps: list[Step] = []
        for app_plan in plan.apps:
            for version in app_plan.to_apply:
                step = Step(f"{app_plan.app}:{version}")
                module = self._module(app_plan.app, version)
                step.source = sources.of_module(module, step.migration)  # the code, not only its SQL
                try:
                    async with in_transaction(self._connection_name(app_plan.app)) as conn:
                        # Read-only also inside an upgrade's read-write session (--expect-plan), so
                        # both make the same plan: a write fails, the step is marked, nothing lands.
                        await conn.execute_script("SET TRANSACTION READ ONLY")
                        watched = _Watched(conn)
                        sql = await module.upgrade(watched)
                        raise _Rollback(sql)
                except _Rollback as done:
                    step.statements = split_statements(done.sql or "")
                    if watched.queried:
                        step.opaque.append(
                            f"upgrade() runs queries itself ({', '.join(sorted(watched.queried))}): "
                            "what they change is not in its SQL"
                        )
                except Exception as exc:
                    step.opaque.append(
                        f"upgrade() failed on a read-only connection: {type(exc).__name__}: {exc}"
                    )
                steps.append(step)
        return steps

    async def close(self) -> None:
        from tortoise import Tortoise

        await Tortoise.close_connections()
