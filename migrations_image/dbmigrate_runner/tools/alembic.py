"""Alembic: the image's ``alembic.ini`` and script directory, run through Alembic's own API in-process.

One run of the user's ``env.py`` does the work: our ``fn`` (the hook ``alembic.command`` uses too)
reads the current heads and the version table (name and schema as env.py configured them) from the
:class:`~alembic.runtime.migration.MigrationContext`, decides, and hands Alembic the steps. Nothing
to do is usually decided before that, without Alembic, under the same hold of the lock
(:func:`_fast_scan`, :func:`_read_from_source`); otherwise it is one env.py run whose ``fn``
returns no steps.

env.py may build its own URL and ignore the runner's: before its ``run_migrations()`` does
anything, the database its connection is on is compared with the one the runner locked
(:meth:`Work.check_database`); another database is a ConfigError and nothing runs.

env.py runs in a worker thread (the asyncio template calls ``asyncio.run``), while the event loop
keeps the advisory lock's asyncpg connection; an ``on_version_apply`` callback checks the lock from
inside each step's transaction, before it commits.

The database reaches env.py the documented ways: ``sqlalchemy.url`` in the Config, ``DATABASE_URL``
in the environment (both as a SQLAlchemy URL: ``postgresql+psycopg://``, or ``postgresql+asyncpg://``
for an async env.py), and ``config.attributes["connection"]`` (a psycopg connection) for env.py
files that follow the shared-connection recipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from dbmigrate_runner import database, sources
from dbmigrate_runner.errors import (
    ConfigError,
    ConnectionLost,
    DowngradeRefused,
    LockTimeout,
    MigrationFailed,
    RunnerError,
)
from dbmigrate_runner.log import log
from dbmigrate_runner.planning import ZERO
from dbmigrate_runner.settings import DbParams, Settings
from dbmigrate_runner.tools import alembic_scan
from dbmigrate_runner.tools.base import database_error

if TYPE_CHECKING:
    from dbmigrate_runner.locking import Retrier
    from dbmigrate_runner.sqlplan import Step

APP = "alembic"  # the one "app" of an Alembic project in the report
DEFAULT_INI = "alembic.ini"


def sqlalchemy_url(db: DbParams, driver: str) -> str:
    from sqlalchemy.engine import URL

    query: dict[str, str] = {}
    if db.ssl:
        query = {"sslmode": db.ssl} if driver == "psycopg" else {"ssl": db.ssl}
    # A Unix socket's directory cannot be a URL's host; both drivers take it as the query's host.
    socket = db.host.startswith("/")
    if socket:
        query |= {"host": db.host, "port": str(db.port)}
    url = URL.create(
        f"postgresql+{driver}",
        username=db.user,
        password=db.password,
        host=None if socket else db.host,
        port=None if socket else db.port,
        database=db.database,
        query=query,
    )
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True)
class VersionTable:
    name: str
    schema: str | None

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    def sql(self) -> str:
        quoted = '"' + self.name.replace('"', '""') + '"'
        return f'"{self.schema.replace(chr(34), chr(34) * 2)}".{quoted}' if self.schema else quoted


@dataclass
class Work:
    """The ``fn`` handed to Alembic for one env.py run, and what it found out."""

    script: Any
    mode: str  # "read", "upgrade", "downgrade", "plan"
    # The target and baseline as given ("head", a prefix…), resolved in ``__call__``: only then
    # has env.py said where the revisions are (it may set ``context.script.version_locations``).
    destination: str | None = None
    baseline: str | None = None
    on_apply: Callable[[str], None] | None = None
    table: VersionTable | None = None
    heads: tuple[str, ...] | None = None
    current: str | None = None  # the revision being applied or reverted
    done: list[str] = field(default_factory=list)
    # mode "plan": the start revisions and the steps an upgrade would take (nothing runs).
    start: tuple[str, ...] = ()
    planned: list[str] = field(default_factory=list)
    # Called with env.py's connection before anything runs (the runner checks its lock_timeout).
    on_connection: Callable[[Any], None] | None = None

    # The database the runner connected to (and the backend holding its lock): env.py's connection
    # must be on it (:meth:`check_database`), else nothing runs.
    expected: database.Identity | None = None
    lock_pid: int | None = None
    # The schema where env.py's session found an unqualified version table (its search_path).
    found_in: str | None = None

    def check_database(self, context: Any) -> None:
        """Before env.py's ``run_migrations`` touches anything (even the version table): refuse a
        connection that is not on the database the runner locked."""
        connection = context.connection
        if self.expected is None or context.as_sql or connection is None:
            return

        def execute(sql: str) -> tuple[Any, ...]:
            return tuple(connection.exec_driver_sql(sql).one())

        other = database.sync_identity(execute)
        seen = None
        if self.lock_pid is not None and database.undecided(self.expected, other):
            seen = bool(execute(database.holds_lock_sql(self.lock_pid))[0])
        if not database.same_database(self.expected, other, seen):
            raise ConfigError(
                f"env.py {database.MISMATCH}: its connection is on database {other.name!r} "
                f"(fingerprint {other.fingerprint}), the runner locked the one DATABASE_URL or DB_* name "
                f"(fingerprint {self.expected.fingerprint}; its name is the Secret's, not shown); nothing "
                "was applied. env.py ignores DATABASE_URL (it builds its own URL from other settings): "
                'make it use the runner\'s connection, config.attributes["connection"] when it is set '
                "(Alembic's shared-connection recipe), else an engine from "
                'config.get_main_option("sqlalchemy.url"); the runner sets both (and DATABASE_URL) '
                "to its own database",
                kind="DatabaseMismatch",
            )

    def __call__(self, heads: Any, context: Any) -> Iterable[Any]:
        self.table = VersionTable(context.version_table, context.version_table_schema)
        if self.on_connection is not None and context.connection is not None:
            self.on_connection(context.connection)
        if self.table.schema is None and not context.as_sql and context.connection is not None:
            self.found_in = _visible_schema(context.connection, context.version_table)
        self.heads = tuple(context.get_current_heads())
        if self.mode == "read":
            return []
        # The script directory's revisions are read first here, after env.py ran, as `alembic
        # upgrade` reads them: env.py may have pointed version_locations elsewhere.
        self.destination = resolve_destination(
            self.script, self.destination, "downgrade" if self.mode == "downgrade" else "upgrade"
        )
        if self.baseline:
            self.baseline = resolve_destination(self.script, self.baseline, "upgrade")
        context.on_version_apply_callbacks = (*context.on_version_apply_callbacks, self._applied)
        applied = ancestry(self.script, self.heads)
        start = self.heads
        stamp: list[Any] = []
        if self.baseline:
            if not self.heads:
                stamp = list(self.script._stamp_revs((self.baseline,), ()))
                start = (self.baseline,)
                applied = ancestry(self.script, start)
                log.info(
                    "baseline", f"recording {len(applied)} revision(s) as applied", baseline=self.baseline
                )
            elif self.baseline not in applied:
                raise ConfigError(
                    f"baseline refused: {self.table} already records {len(applied)} migrations "
                    f"(heads {', '.join(self.heads)}), not including {self.baseline}"
                )
        if self.mode in ("upgrade", "plan"):
            below = self.destination not in ("head", "heads", *start) and self.destination in applied
            if below:
                raise DowngradeRefused(
                    f"target {APP}:{self.destination} is below the applied head(s) "
                    f"{', '.join(start)}; upgrade never rolls back (use the downgrade command)"
                )
            steps = list(self.script._upgrade_revs(self.destination, start))
        else:
            if self.destination != "base" and self.destination not in applied:
                raise ConfigError(f"downgrade target {APP}:{self.destination} is not applied")
            steps = list(self.script._downgrade_revs(self.destination, start))
        if self.mode == "plan":
            self.start = tuple(start)
            self.planned = [s.revision.revision for s in steps]
            return []
        if not steps and not stamp:
            log.info("plan.noop", "nothing to do", applied={APP: len(applied)})
            return []
        log.info(
            "plan",
            "migrations to run",
            apply=[f"{APP}:{s.revision.revision}" for s in steps if self.mode == "upgrade"],
            revert=[f"{APP}:{s.revision.revision}" for s in steps if self.mode == "downgrade"],
        )
        # Lazily: Alembic pulls each step right before running it, so `current` names the running one.
        return itertools.chain(stamp, self._track(steps))

    def _track(self, steps: list[Any]) -> Iterator[Any]:
        for step in steps:
            self.current = f"{APP}:{step.revision.revision}"
            verb = "applying" if self.mode == "upgrade" else "reverting"
            event = "migration.apply" if self.mode == "upgrade" else "migration.revert"
            log.info(event, f"{verb} {self.current}", migration=self.current)
            yield step

    def _applied(self, *, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        """Inside the step's transaction (if any), right after its version row changed."""
        if step.is_stamp:
            return
        for revision in step.up_revision_ids:
            label = f"{APP}:{revision}"
            if self.on_apply is not None:
                self.on_apply(label)
            self.done.append(label)


def _visible_schema(connection: Any, table: str) -> str | None:
    """The schema of the version table env.py's session finds through its search_path (None when
    it has none yet), so the runner's own session reads back the same table."""
    from sqlalchemy import text

    found = connection.execute(
        text(
            "SELECT n.nspname FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(:t)"
        ),
        {"t": VersionTable(table, None).sql()},
    ).scalar()
    return None if found is None else str(found)


def ancestry(script: Any, heads: tuple[str, ...]) -> list[str]:
    """The revisions from ``heads`` down to base, oldest first (Alembic records only the heads), in
    :func:`alembic_scan.oldest_first`'s order, the same as the no-op path's."""
    if not heads:
        return []
    try:
        revs = list(script.iterate_revisions(heads, "base"))
    except Exception as exc:
        raise ConfigError(f"the database's head(s) {', '.join(heads)} are not in this image: {exc}") from exc
    ids = {rev.revision for rev in revs}
    down = {
        rev.revision: tuple(
            below for below in (*_ids(rev.down_revision), *_ids(rev.dependencies)) if below in ids
        )
        for rev in revs
    }
    ordered = alembic_scan.oldest_first(down, heads)
    return ordered if ordered is not None else [rev.revision for rev in reversed(revs)]


def _ids(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


@dataclass
class Project:
    config: Any  # alembic.config.Config
    script: Any  # alembic.script.ScriptDirectory
    ini: Path
    is_async: bool


def load(settings: Settings) -> Project:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if settings.apps:
        raise ConfigError("--app does not apply to alembic (an Alembic project has one version history)")
    root = settings.project_dir.resolve()
    if not root.is_dir():
        raise ConfigError(f"project directory {root} does not exist")
    os.chdir(root)  # like running `alembic` there: a relative script_location resolves against it
    if str(root) not in sys.path:  # as documented: env.py imports the project's modules from there
        sys.path.insert(0, str(root))
    ini = _ini(settings)
    if not ini.is_file():
        raise ConfigError(f"no Alembic config at {ini} (pass --config path/to/alembic.ini)")
    config = Config(str(ini))
    try:
        script = ScriptDirectory.from_config(config)
    except (CommandError, Exception) as exc:
        raise ConfigError(f"cannot load the Alembic script directory from {ini}: {exc}") from exc
    env_py = Path(script.dir, "env.py")
    text = env_py.read_text(encoding="utf-8") if env_py.is_file() else ""
    is_async = any(marker in text for marker in alembic_scan.ASYNC_MARKERS)
    url = sqlalchemy_url(settings.db, "asyncpg" if is_async else "psycopg")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    os.environ["DATABASE_URL"] = url
    return Project(config, script, ini, is_async)


def resolve_destination(script: Any, target: str | None, command: str) -> str:
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    spec = (target or "head").strip()
    spec = spec.removeprefix(f"{APP}:")  # as status.currentVersion writes it
    if command == "downgrade" and spec in (ZERO, "base"):
        return "base"
    if spec == "heads":
        return spec
    if spec == "head":
        heads = list(script.get_heads())
        if len(heads) > 1:
            raise ConfigError(
                f"MultipleHeads: the script directory has {len(heads)} heads ({', '.join(sorted(heads))}); "
                "merge them (alembic merge heads) or set the target to 'heads'",
                kind="MultipleHeads",
            )
        return spec
    try:
        rev = script.get_revision(spec)
    except (CommandError, RevisionError) as exc:
        raise ConfigError(f"target {spec!r}: {exc}") from None
    if rev is None:
        raise ConfigError(f"target {spec!r} matches no revision of this image")
    return str(rev.revision)


def _error(exc: BaseException, migration: str | None) -> RunnerError:
    if isinstance(exc, RunnerError):
        return exc
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, asyncpg.PostgresError):
            break
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException) and not isinstance(orig.__cause__, asyncpg.PostgresError):
            return MigrationFailed(str(orig).strip(), kind=type(orig).__name__, migration=migration)
        current = current.__cause__ or current.__context__
    kind, text = database_error(exc)
    return MigrationFailed(text, kind=kind, migration=migration)


@contextlib.contextmanager
def _no_file_config() -> Iterator[None]:
    """env.py templates call ``logging.config.fileConfig(alembic.ini)``, which would replace the
    runner's JSON (and masking) log handler: ignored while env.py runs."""
    import logging.config  # only when env.py runs: the no-op read from the source does not need it

    original = logging.config.fileConfig

    def skip(*args: Any, **kwargs: Any) -> None:
        log.debug("alembic.logging", "env.py's fileConfig() ignored: the runner keeps its JSON logs")

    logging.config.fileConfig = skip  # type: ignore[assignment]
    try:
        yield
    finally:
        logging.config.fileConfig = original  # type: ignore[assignment]


def run_env(
    project: Project, work: Work, dont_mutate: bool = False, session: dict[str, str] | None = None
) -> None:
    """Run env.py once with ``work`` as Alembic's ``fn`` (in a worker thread: env.py may ``asyncio.run``);
    every SQLAlchemy connection opened meanwhile gets the ``session`` settings (lock_timeout)."""
    from alembic.runtime.environment import EnvironmentContext
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from dbmigrate_runner import locking  # with env.py only: the no-op read does not import it

    sync_url = project.config.get_main_option("sqlalchemy.url")
    if project.is_async:
        sync_url = sync_url.replace("postgresql+asyncpg://", "postgresql+psycopg://", 1).replace(
            "ssl=", "sslmode="
        )
    engine = create_engine(sync_url, poolclass=NullPool)
    try:
        with locking.sqlalchemy_sessions(session or {}), engine.connect() as conn:
            project.config.attributes["connection"] = conn
            try:
                env = EnvironmentContext(project.config, project.script, fn=work, dont_mutate=dont_mutate)
                run_migrations = env.run_migrations

                def checked(**kw: Any) -> None:
                    """``context.run_migrations()`` checks env.py's connection first."""
                    work.check_database(env.get_context())
                    run_migrations(**kw)

                env.run_migrations = checked  # type: ignore[method-assign]  # alembic.context calls it
                with _no_file_config(), env:
                    project.script.run_env()
                if work.heads is None:
                    # `alembic upgrade` ends silently then; a report would describe nothing as done.
                    raise ConfigError(
                        "env.py never called context.run_migrations() (online mode): nothing was read "
                        "or applied, and the runner cannot tell what the database holds; env.py must "
                        "call it inside context.begin_transaction() after context.configure()",
                        kind="NoMigrationsRun",
                    )
                if conn.in_transaction():
                    conn.commit()
            finally:
                project.config.attributes.pop("connection", None)
    finally:
        engine.dispose()


async def read_heads(conn: asyncpg.Connection, table: VersionTable) -> tuple[str, ...]:
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table.sql()):
        return ()
    rows = await conn.fetch(f"SELECT version_num FROM {table.sql()}")
    return tuple(str(row["version_num"]) for row in rows)


def _ini(settings: Settings) -> Path:
    root = settings.project_dir.resolve()
    ini = Path(settings.config or DEFAULT_INI)
    return ini if ini.is_absolute() else root / ini


def _log_start(settings: Settings, ini: Path, async_env: bool | None) -> None:
    # async_env only once env.py was read (the no-op fast path does not read it): never a null.
    known = {} if async_env is None else {"async_env": async_env}
    log.info(
        "run.start",
        f"{settings.command} with alembic",
        command=settings.command,
        tool="alembic",
        config=str(ini),
        target=settings.target,
        baseline=settings.baseline,
        **known,
        database=settings.db.describe(),
    )


def _fast_scan(settings: Settings) -> alembic_scan.Scan | None:
    """The project as its source tells it, when a no-op may be decided from the source alone (an
    ``upgrade`` to head with nothing unusual, :mod:`alembic_scan`), else None."""
    target = (settings.target or "head").strip().removeprefix(f"{APP}:")
    if settings.command != "upgrade" or settings.baseline or settings.apps or target not in ("head", "heads"):
        return None
    if not settings.fast_noop:
        log.info("plan.source", "DBMIGRATE_FAST_NOOP=false: env.py decides, even when nothing is to do")
        return None
    root = settings.project_dir.resolve()
    reasons: list[str] = []
    found = alembic_scan.scan(_ini(settings), root, reasons) if root.is_dir() else None
    if reasons:
        log.info(
            "plan.source",
            "env.py may read another version table, database or revisions than the source: env.py decides",
            reason=reasons[0],
        )
    if found is None or (target == "head" and len(found.heads) != 1):
        return None  # MultipleHeads and anything unusual: the full path says it
    return found


async def _read_from_source(conn: asyncpg.Connection, found: alembic_scan.Scan, state: Any) -> bool:
    """Under the lock: True (and ``state`` filled) when the version table already holds the image's
    head(s); False when there is work (or heads this source does not know): Alembic decides."""
    heads = await read_heads(conn, VersionTable(found.table, found.schema))
    applied = found.ancestry(heads)
    if set(heads) != set(found.heads) or applied is None:
        log.debug("plan.source", "work to do: Alembic decides", heads=sorted(heads), image=list(found.heads))
        return False
    state.apps = [APP]
    state.final_applied = {APP: applied}
    state.heads = {APP: sorted(heads)}
    log.info("plan.noop", "nothing to do", applied={APP: len(applied)}, read="source")
    return True


async def _take_lock(
    conn: asyncpg.Connection, settings: Settings, state: Any, read: Callable[[], Any]
) -> asyncpg.Connection:
    """The advisory lock, once per run; on LockTimeout ``read`` (best effort) fills what is applied.
    Returns the connection holding the lock (a connection lost while waiting is replaced)."""
    try:
        return await database.take_lock(conn, settings.lock_timeout, settings.db, settings.wait_timeout)
    except LockTimeout:
        with contextlib.suppress(Exception):
            await read()
        raise


async def run(settings: Settings, state: Any) -> None:
    """The whole Alembic run (``state`` is the runner's RunState). One connection and, for the
    commands that write, one hold of the lock from the no-op check to the end of env.py's run."""
    found = _fast_scan(settings)
    if found is not None:
        _log_start(settings, _ini(settings), found.is_async)
    conn = await database.connect(settings.db, settings.wait_timeout)
    locked = False
    try:
        state.identity = await database.identity(conn)
        if found is not None:
            scanned = found

            async def read_source() -> None:
                heads = await read_heads(conn, VersionTable(scanned.table, scanned.schema))
                known = scanned.ancestry(heads)
                if known is not None:  # heads this source does not know: leave "unknown"
                    state.apps = [APP]
                    state.final_applied = {APP: known}
                    state.heads = {APP: sorted(heads)}

            conn = await _take_lock(conn, settings, state, read_source)
            locked = True
            if await _read_from_source(conn, found, state):
                return
        project = await asyncio.to_thread(load, settings)
        state.apps = [APP]
        if found is None:  # not logged yet
            _log_start(settings, project.ini, project.is_async)
        if settings.command == "status":
            read = Work(project.script, "read", expected=state.identity)
            await _env(project, read, dont_mutate=True)
            applied = ancestry(project.script, read.heads or ())
            state.final_applied = {APP: applied}
            state.heads = {APP: sorted(read.heads or ())}
            everything = [r.revision for r in project.script.walk_revisions()][::-1]
            state.pending[APP] = [r for r in everything if r not in set(applied)]
            log.info(
                "status",
                f"{len(applied)} applied, {len(state.pending[APP])} pending",
                app=APP,
                heads=list(read.heads or ()),
                applied=applied,
                pending=state.pending[APP],
            )
            return
        if settings.command == "plan":
            await _plan(settings, project, conn, state)
            return
        if not locked:

            async def read_env() -> None:
                read = Work(project.script, "read", expected=state.identity)
                await _env(project, read, dont_mutate=True)
                state.final_applied = {APP: ancestry(project.script, read.heads or ())}
                state.heads = {APP: sorted(read.heads or ())}

            conn = await _take_lock(conn, settings, state, read_env)
            locked = True
        guard = await database.LockGuard.start(conn)
        loop = asyncio.get_running_loop()
        check = guard.check

        def on_apply(label: str) -> None:
            asyncio.run_coroutine_threadsafe(check(label), loop).result()

        if settings.expect_plan and settings.command == "upgrade":
            from dbmigrate_runner.plans import check_expected

            planned, steps = await plan_steps(settings, project, state.identity)
            if planned.planned:
                check_expected(settings, "alembic", steps)
        work = Work(
            project.script,
            settings.command,
            settings.target,
            settings.baseline,
            on_apply,
            expected=state.identity,
            lock_pid=guard.pid,
        )
        from dbmigrate_runner.locking import Retrier  # lock retries only when env.py runs

        retrier = state.retrier = Retrier(settings.locking, settings.db)
        session = retrier.session_settings()
        work.on_connection = functools.partial(_check_session, retrier)
        try:
            # The unit of a retry is env.py's run: by default all its steps share one transaction.
            await retrier.run(lambda: work.current, functools.partial(_env, project, work, False, session))
        finally:
            await retrier.close()
            state.final_applied, state.heads = await _read_back(conn, settings, project, work)
            final = set(state.final_applied.get(APP, [])) if state.final_applied is not None else None
            for label in dict.fromkeys(work.done):  # a retried step was noted once per attempt
                revision = label.split(":", 1)[1]
                committed = final is None or (revision in final) == (settings.command == "upgrade")
                if committed:
                    state.applied_now.append(label)
    finally:
        if locked:
            await database.release_lock(conn)
        await database.close(conn)


def _check_session(retrier: Retrier, connection: Any) -> None:
    """env.py's connection must run with our lock_timeout; where it does not, the report says so."""
    if not retrier.policy.enabled:
        return
    try:
        shown = connection.exec_driver_sql("SELECT current_setting('lock_timeout')").scalar()
    except Exception:
        shown = None
    from dbmigrate_runner.locking import session_note

    note = session_note(None if shown is None else str(shown), retrier.policy)
    if note:
        retrier.waits.note(note)
        log.warning("lock.timeout_unset", note)


async def _env(
    project: Project, work: Work, dont_mutate: bool = False, session: dict[str, str] | None = None
) -> None:
    try:
        await asyncio.to_thread(run_env, project, work, dont_mutate, session)
    except RunnerError:
        raise
    except Exception as exc:
        if work.mode in ("upgrade", "downgrade") and database.is_connection_lost(exc):
            if work.current is None:
                raise ConnectionLost(
                    f"lost the database connection before any migration ran ({type(exc).__name__}: {exc}); "
                    "the Job's retry resumes the run",
                    resumable=False,
                ) from exc
            from dbmigrate_runner.attempts import lost_inside  # lock retries' module: with work only

            raise lost_inside(work.current, exc, atomic=True) from exc
        if work.current is None and work.mode != "read":
            kind, text = database_error(exc)
            err = _error(exc, None)
            raise ConfigError(f"env.py failed: {err.message or text}", kind=err.kind or kind) from exc
        if work.mode == "read":
            err = _error(exc, None)
            raise ConfigError(f"env.py failed: {err.message}", kind=err.kind) from exc
        raise _error(exc, work.current) from exc


async def _read_back(
    conn: asyncpg.Connection, settings: Settings, project: Project, work: Work
) -> tuple[dict[str, list[str]] | None, dict[str, list[str]]]:
    """What the version table holds after the run: the ancestry and the heads (unknown: None, {})."""
    if work.table is None:
        return None, {}
    table = VersionTable(work.table.name, work.table.schema or work.found_in)
    with contextlib.suppress(Exception):
        async with database.live(conn, settings.db, settings.wait_timeout) as reading:
            heads = await read_heads(reading, table)
        return {APP: ancestry(project.script, heads)}, {APP: sorted(heads)}
    return None, {}


_RUNNING = "-- Running upgrade "


class OfflineFailed(Exception):
    """Offline rendering stopped: what was printed until then, and why."""

    def __init__(self, text: str, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.text = text
        self.cause = cause


def render_offline(project: Project, start: tuple[str, ...], destination: str) -> str:
    """What ``alembic upgrade START:DEST --sql`` prints: env.py in offline mode, SQL to a buffer.
    A failure raises :class:`OfflineFailed` carrying what was printed before it."""
    import io

    from alembic import command

    buffer = io.StringIO()
    project.config.output_buffer = buffer
    try:
        with _no_file_config():
            command.upgrade(project.config, f"{start[0]}:{destination}" if start else destination, sql=True)
    except RunnerError:
        raise
    except Exception as exc:
        raise OfflineFailed(buffer.getvalue(), exc) from exc
    finally:
        project.config.output_buffer = None
    return buffer.getvalue()


def _markers(text: str) -> list[str]:
    """The revisions whose ``-- Running upgrade`` marker the text holds, in order."""
    return [
        line.split("->", 1)[-1].strip().split(",", 1)[0].strip()
        for line in text.splitlines()
        if line.startswith(_RUNNING)
    ]


def render_per_revision(
    project: Project, start: tuple[str, ...], destination: str, pending: list[str], table: VersionTable | None
) -> list[Step]:
    """The pending revisions' offline SQL; a revision that cannot be rendered (its ``upgrade()``
    needs a connection: ``sa.inspect(op.get_bind())``…) is the only one marked not SQL, with its
    error, and rendering goes on from it. Alembic prints a revision's marker before it runs its
    ``upgrade()``, so the last marker of a failed rendering names the revision that failed."""
    from dbmigrate_runner.sqlplan import Step  # planning's modules only when planning

    steps: list[Step] = []
    left = list(pending)
    while left:
        try:
            text = render_offline(project, start, destination)
            if not _markers(text):
                # env.py's offline branch ran no migrations (it prints "cannot run offline" and
                # returns): like `alembic upgrade --sql`, no SQL, and no failure of the plan.
                reason = "offline rendering printed no SQL: env.py runs no migrations in offline mode"
                return steps + [Step(f"{APP}:{rev}", opaque=[reason]) for rev in left]
            return steps + offline_steps(text, left, table)
        except OfflineFailed as failed:
            reason = f"offline rendering failed: {type(failed.cause).__name__}: {failed.cause}"
            done = _markers(failed.text)
            if not done or done != left[: len(done)]:
                # env.py itself, or an order we cannot follow: every revision left is not SQL.
                return steps + [Step(f"{APP}:{rev}", opaque=[reason]) for rev in left]
            *whole, broken = done
            if whole:
                cut = failed.text[: failed.text.rindex(_RUNNING)]
                steps += offline_steps(cut, whole, table)
            steps.append(Step(f"{APP}:{broken}", opaque=[reason]))
            log.info("plan.opaque", f"{APP}:{broken} cannot be rendered offline", reason=reason)
            left = left[len(done) :]
            start = (broken,)
    return steps


def offline_steps(text: str, pending: list[str], table: VersionTable | None) -> list[Step]:
    """Cut an offline script at Alembic's ``-- Running upgrade`` markers, one chunk per pending
    revision; the framing (BEGIN/COMMIT) and the version table's own rows are left out, as the
    other tools' plans leave out their tracking tables."""
    from dbmigrate_runner.destructive import is_framing, split_statements, touches_only
    from dbmigrate_runner.sqlplan import Step

    chunks: list[list[str]] = []
    order: list[str] = []
    for line in text.splitlines():
        if line.startswith(_RUNNING):
            # "-- Running upgrade a, b -> c, message": the revision is the first name after "->".
            order.append(line.split("->", 1)[-1].strip().split(",", 1)[0].strip())
            chunks.append([])
        elif chunks:
            chunks[-1].append(line)
    if order != pending:
        raise ConfigError(
            f"alembic's offline SQL runs {', '.join(order) or 'nothing'}; "
            f"the plan expected {', '.join(pending)}"
        )
    steps = []
    for revision, lines in zip(pending, chunks, strict=True):
        statements = [
            s
            for s in split_statements("\n".join(lines))
            if not is_framing(s) and not (table is not None and touches_only(s, table.name))
        ]
        steps.append(Step(f"{APP}:{revision}", statements))
    return steps


async def _plan(settings: Settings, project: Project, conn: asyncpg.Connection, state: Any) -> None:
    """Read-only: the heads through env.py (nothing written), then the pending revisions' SQL
    rendered offline, as ``alembic upgrade --sql`` does."""
    from dbmigrate_runner.plans import finish_plan

    work, steps = await plan_steps(settings, project, state.identity)
    state.final_applied = {APP: ancestry(project.script, work.heads or ())}
    state.heads = {APP: sorted(work.heads or ())}
    state.plan = await finish_plan(settings, "alembic", steps, conn)


async def plan_steps(
    settings: Settings, project: Project, expected: database.Identity | None = None
) -> tuple[Work, list[Step]]:
    """The revisions an upgrade would apply now and their offline SQL (``work.heads``: the database's)."""
    from dbmigrate_runner.sqlplan import Step

    work = Work(project.script, "plan", settings.target, settings.baseline, expected=expected)
    await _env(project, work, dont_mutate=True)
    steps: list[Step] = []
    if work.planned:
        if len(work.start) > 1:
            reason = f"the database has {len(work.start)} heads; Alembic renders offline SQL from one start"
            steps = [Step(f"{APP}:{rev}", opaque=[reason]) for rev in work.planned]
        else:
            steps = await asyncio.to_thread(
                render_per_revision, project, work.start, work.destination or "head", work.planned, work.table
            )
    for step in steps:  # the revision's code too: offline SQL need not be what it does online
        revision = project.script.get_revision(step.migration.split(":", 1)[1])
        step.source = sources.of_file(revision.path if revision is not None else "", step.migration)
    return work, steps
