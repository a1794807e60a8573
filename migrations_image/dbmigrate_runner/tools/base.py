"""What the runner needs from a migration tool, and helpers both adapters share.

The read side (``read_applied``) uses the runner's asyncpg connection and imports nothing from
tortoise or aerich, so a run with nothing to do never pays for those imports. ``open`` does
the heavy imports and ``Tortoise.init`` only when there is work.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import asyncpg

from dbmigrate_runner import database
from dbmigrate_runner.database import Identity
from dbmigrate_runner.errors import ConfigError, MigrationFailed, RunnerError
from dbmigrate_runner.planning import Plan, Target
from dbmigrate_runner.project import Project
from dbmigrate_runner.settings import DbParams

if TYPE_CHECKING:
    from dbmigrate_runner.sqlplan import Step

OnDone = Callable[[str], None]
# Called with "app:version" inside each migration's transaction, right before it commits (before a
# non-atomic migration starts); raises to stop the run. The runner checks its lock there.
BeforeCommit = Callable[[str], Awaitable[None]]


async def no_check(label: str) -> None:
    """The default :data:`BeforeCommit`: nothing to check."""


T = TypeVar("T")


class Attempt(Protocol):
    """Runs one migration's ``body`` (its whole transaction, re-runnable): the runner's
    :class:`~dbmigrate_runner.attempts.Attempts` retries it on a lock timeout and classifies a lost
    connection; ``atomic`` False for a migration that runs outside a transaction."""

    async def __call__(self, label: str, body: Callable[[], Awaitable[T]], *, atomic: bool = True) -> T: ...


async def just_run(label: str, body: Callable[[], Awaitable[T]], *, atomic: bool = True) -> T:
    """The default :class:`Attempt`: once, as it is."""
    return await body()


class MigrationTool(Protocol):
    name: str
    table: str  # the tracking table
    before_commit: BeforeCommit
    attempt: Attempt
    # Server settings of every session the tool opens (lock_timeout, application_name).
    session_settings: dict[str, str]
    # The database the runner connected to, and the backend holding its lock (None: no lock taken);
    # ``open`` refuses connections that end up elsewhere.
    identity: Identity | None
    lock_pid: int | None

    async def read_applied(self, conn: asyncpg.Connection) -> dict[str, list[str]]:
        """Applied versions per app, oldest first, from the tracking table (empty if it is absent)."""

    async def open(self, project: Project, db: DbParams, apps: list[str]) -> None:
        """Import the tool and connect Tortoise to ``db`` (never to the config's own URL)."""

    async def bootstrap(self) -> None:
        """Create the tracking table on a fresh database."""

    async def record_baseline(self, app: str, versions: list[str]) -> None:
        """Record ``versions`` of ``app`` as applied without running them, in one transaction."""

    async def upgrade(self, plan: Plan, target: Target | None, on_done: OnDone) -> None:
        """Apply the plan; each migration commits together with its tracking row when it is atomic."""

    async def downgrade(self, plan: Plan, target: Target, on_done: OnDone) -> None:
        """Revert the plan, newest first, each revert committing with the removal of its row."""

    async def plan_sql(self, plan: Plan) -> list[Step]:
        """The SQL each migration of ``plan`` would run, in run order, without running it."""

    async def close(self) -> None: ...


def _database_named(connection: Any) -> tuple[str, ...]:
    """Which database a Tortoise ``connections`` entry names (host, port, database), as far as the
    config tells; the entry itself when it cannot be read."""
    from tortoise.backends.base.config_generator import expand_db_url

    try:
        expanded = expand_db_url(connection) if isinstance(connection, str) else connection
        credentials = expanded.get("credentials") or {}
    except Exception:
        return (repr(connection),)
    return tuple(str(credentials.get(key, "")) for key in ("host", "port", "database", "file_path"))


def one_database(config: dict[str, Any], apps: list[str]) -> None:
    """The apps of a run must be on one database: the runner locks and migrates one. A config whose
    apps sit on connections naming different databases (``aerich upgrade`` migrates each app into
    its own) would otherwise have them all created in the runner's database, and the others
    never migrated: a ConfigError before anything runs, naming the connections (never their URLs)."""
    connections = config.get("connections") or {}
    used: dict[tuple[str, ...], list[str]] = {}
    for app in apps:
        name = (config.get("apps") or {}).get(app, {}).get("default_connection", "default")
        if name in connections:
            used.setdefault(_database_named(connections[name]), []).append(f"{app} ({name})")
    if len(used) > 1:
        on = "; ".join(", ".join(group) for group in used.values())
        raise ConfigError(
            f"the apps of this run are on {len(used)} different databases in the Tortoise config "
            f"(apps and their connections: {on}); the runner migrates the one database it locked "
            "and would create every app's tables there. Run one migration per database, each with "
            "--app for the apps on it and DATABASE_URL naming that database",
            kind="SeveralDatabases",
        )


def with_runner_connection(
    config: dict[str, Any], db: DbParams, session: dict[str, str] | None = None, apps: list[str] | None = None
) -> dict[str, Any]:
    """A copy of the Tortoise config whose every connection is the runner's database, its sessions
    carrying the ``session`` server settings; ``apps`` (those the run migrates) must be on one
    database in the config (:func:`one_database`)."""
    one_database(config, apps or [])
    config = copy.deepcopy(config)
    names = list(config.get("connections") or {}) or ["default"]
    connection = db.tortoise_connection()
    if session:
        credentials = connection["credentials"]
        credentials["server_settings"] = {**(credentials.get("server_settings") or {}), **session}
    config["connections"] = {name: copy.deepcopy(connection) for name in names}
    return config


def group_rows(rows: list[Any], version_column: str, strip_suffix: bool = False) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in rows:
        version = str(row[version_column])
        if strip_suffix and version.endswith(".py"):
            version = version[:-3]
        out.setdefault(str(row["app"]), []).append(version)
    return out


def database_error(exc: BaseException) -> tuple[str, str]:
    """The most specific error class and the database's own text (with DETAIL/HINT) in an exception chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        candidates = [current, *[a for a in current.args if isinstance(a, BaseException)]]
        for cand in candidates:
            if isinstance(cand, asyncpg.PostgresError):
                text = str(cand)
                for extra in ("detail", "hint"):
                    value = getattr(cand, extra, None)
                    if value:
                        text += f" ({extra.upper()}: {value})"
                return type(cand).__name__, text
        current = current.__cause__ or current.__context__
    return type(exc).__name__, str(exc) or type(exc).__name__


async def init_tortoise(config: dict[str, Any], project: Project) -> None:
    """``Tortoise.init`` failing means the image's config does not fit this database: a config error."""
    from tortoise import Tortoise

    try:
        await Tortoise.init(config=config)
    except Exception as exc:
        from dbmigrate_runner.database import is_connection_lost

        if is_connection_lost(exc):  # the database went away, the config may be fine
            raise
        kind, text = database_error(exc)
        raise ConfigError(
            f"Tortoise.init failed for config {project.config_path}: {text}", kind=kind
        ) from exc


@contextlib.contextmanager
def migration_errors(label: str) -> Iterator[None]:
    """Any unclassified failure while applying or reverting ``label`` is that migration's failure,
    reported with the database's own text; errors the runner already classified pass as they are."""
    try:
        yield
    except RunnerError:
        raise
    except Exception as exc:
        kind, text = database_error(exc)
        raise MigrationFailed(text, kind=kind, migration=label) from exc


async def check_same_database(
    config: dict[str, Any], expected: Identity | None, lock_pid: int | None
) -> None:
    """Every connection Tortoise opened is on the database the runner connected to (and locked),
    else a ConfigError before anything is applied."""
    if expected is None:
        return
    from tortoise.connection import get_connection

    for name in config.get("connections") or {}:
        client = get_connection(name)
        row = (await client.execute_query_dict(database.IDENTITY_PROBE))[0]
        system = None
        if row["allowed"]:
            system = (await client.execute_query_dict(database.SYSTEM_IDENTIFIER))[0]["system_identifier"]
        other = database.identity_of(bool(row["allowed"]), str(row["name"]), str(row["address"]), system)
        seen = None
        if lock_pid is not None and database.undecided(expected, other):
            seen = bool((await client.execute_query_dict(database.holds_lock_sql(lock_pid)))[0]["exists"])
        if not database.same_database(expected, other, seen):
            raise ConfigError(
                f"Tortoise connection {name!r} {database.MISMATCH}: it is on database {other.name!r} "
                f"(fingerprint {other.fingerprint}), the runner locked the one DATABASE_URL or DB_* name "
                f"(fingerprint {expected.fingerprint}; its name is the Secret's, not shown); nothing was "
                "applied. The runner "
                "replaces every entry of the config's 'connections' with its own database: something "
                "else (the config module or a migration calling Tortoise.init itself) opened this one; "
                "build the config from DATABASE_URL and leave connecting to the runner"
            )
