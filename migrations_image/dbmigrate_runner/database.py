"""The runner's own connection (asyncpg): wait for the server, hold the advisory lock, read tracking tables.

Wrong credentials or an unknown database are configuration errors and fail at once; only
"cannot reach / not accepting connections yet" is retried, until the wait deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import asyncpg

from dbmigrate_runner.errors import (
    ConfigError,
    ConnectionLost,
    DatabaseUnreachable,
    LockLost,
    LockTimeout,
    exception_chain,
)
from dbmigrate_runner.log import log
from dbmigrate_runner.settings import DbParams


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# First 8 bytes of sha256("dbmigrate") as a signed bigint; documented in docs/runner.md.
LOCK_KEY = _lock_key("dbmigrate")
# How pg_locks shows a bigint advisory key: high half in classid, low half in objid, objsubid 1.
LOCK_CLASSID, LOCK_OBJID = (LOCK_KEY >> 32) & 0xFFFFFFFF, LOCK_KEY & 0xFFFFFFFF

# The lock's connection idles through every migration: have the server probe it, so a vanished
# runner's session (and its lock) ends within about a minute instead of the kernel's two hours.
KEEPALIVES = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}
# Seconds a lock check may take before the lock counts as lost (a half-open TCP connection hangs).
LOCK_CHECK_TIMEOUT = 10.0

# Errors after which retrying cannot help: bad password, unknown role or database, pg_hba rejection.
_FATAL = (
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
)
_RETRY = (
    OSError,  # refused, no route, DNS (socket.gaierror)
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,  # starting up / shutting down
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
    ConnectionError,
)


# Admin shutdown (a restart's fast shutdown, pg_terminate_backend), crash shutdown, cannot connect now.
_LOST_STATES = ("57P01", "57P02", "57P03")


def is_connection_lost(exc: BaseException) -> bool:
    """Did ``exc`` come from the connection going away (a restart, a failover, the network), rather
    than from a statement? Looks through the wrappers of asyncpg, psycopg, SQLAlchemy and Tortoise."""
    for current in exception_chain(exc):
        code = getattr(current, "sqlstate", None)
        if isinstance(code, str) and code:
            if code.startswith("08") or code in _LOST_STATES:
                return True
            continue
        if isinstance(current, ConnectionError) or getattr(current, "connection_invalidated", False):
            return True
        if isinstance(current, asyncpg.InterfaceError) and "closed" in str(current):
            return True
        kind = type(current)
        if kind.__module__.startswith("psycopg") and kind.__name__ in ("OperationalError", "InterfaceError"):
            return True  # psycopg's errors without a SQLSTATE are the connection's own
    return False


def lost(conn: asyncpg.Connection, exc: BaseException) -> bool:
    """The runner's own connection failed because it is gone (not because of a statement)."""
    return conn.is_closed() or is_connection_lost(exc)


async def connect(db: DbParams, wait_timeout: float) -> asyncpg.Connection:
    """Connect, retrying with backoff until ``wait_timeout`` seconds have passed."""
    deadline = time.monotonic() + wait_timeout
    delay, attempt = 0.2, 0
    last: BaseException | None = None
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                **db.asyncpg_kwargs(),
                timeout=max(1.0, min(10.0, remaining)),
                server_settings={
                    "application_name": "dbmigrate-runner",
                    **KEEPALIVES,
                    **db.server_settings(),
                },
            )
            if attempt > 1:
                log.info("database.reachable", "database is reachable", attempts=attempt)
            return conn
        except _FATAL as exc:
            raise ConfigError(
                f"database rejected the connection to {db.describe()}: {exc}", kind=type(exc).__name__
            ) from None
        except _RETRY as exc:
            last = exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            reason = f"{type(last).__name__}: {last}" if str(last) else type(last).__name__
            if isinstance(last, socket.gaierror):
                reason = f"cannot resolve the host of {db.address()}: {last}"
            raise DatabaseUnreachable(
                f"database at {db.address()} not reachable within {wait_timeout:g}s "
                f"({attempt} attempts); last error: {reason}",
                kind=type(last).__name__,
            )
        if attempt == 1 or attempt % 10 == 0:
            log.info(
                "database.waiting",
                "database not reachable yet, retrying",
                error=f"{type(last).__name__}: {last}",
                remaining_s=round(remaining, 1),
            )
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 2.0)


async def acquire_lock(conn: asyncpg.Connection, limit_s: float, poll: float = 0.2) -> float:
    """Take the session advisory lock, polling ``pg_try_advisory_lock``; returns seconds waited."""
    started = time.monotonic()
    announced = False
    while True:
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            return time.monotonic() - started
        waited = time.monotonic() - started
        if waited >= limit_s:
            holder = await conn.fetchval(
                "SELECT string_agg(pid::text, ',') FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND ((classid::bigint << 32) | objid::bigint) = $1",
                LOCK_KEY,
            )
            raise LockTimeout(
                f"advisory lock {LOCK_KEY} still held after {limit_s:g}s "
                f"(holder pid(s): {holder or 'unknown'})"
            )
        if not announced:
            log.info("lock.waiting", "another runner holds the migration lock; waiting", key=LOCK_KEY)
            announced = True
        await asyncio.sleep(min(poll, max(0.0, limit_s - waited)))


_HELD = (
    "SELECT pg_backend_pid() AS pid, EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
    "AND granted AND pid = pg_backend_pid() AND classid = $1 AND objid = $2 AND objsubid = 1) AS held"
)
_POOLING = (
    "a transaction-pooling proxy (PgBouncer pool_mode=transaction) between runner and database is "
    "not supported: connect directly or through session pooling"
)


async def _held(conn: asyncpg.Connection) -> tuple[int, bool]:
    row = await asyncio.wait_for(conn.fetchrow(_HELD, LOCK_CLASSID, LOCK_OBJID), LOCK_CHECK_TIMEOUT)
    assert row is not None
    return int(row["pid"]), bool(row["held"])


class LockGuard(NamedTuple):
    """Checks, before each migration commits, that the lock's session still exists and holds it."""

    conn: asyncpg.Connection
    pid: int  # the backend that took the lock

    @classmethod
    async def start(cls, conn: asyncpg.Connection) -> LockGuard:
        """Right after acquiring: a session lock that is not visible on our session means pooling."""
        pid, held = await _held(conn)
        if not held:
            raise ConfigError(
                f"the advisory lock is not held by this session right after taking it; {_POOLING}"
            )
        return cls(conn, pid)

    async def check(self, label: str, *, before_start: bool = False) -> None:
        """Raise :class:`LockLost` (for ``label``) unless the session is alive, unmoved and holds the lock.

        ``before_start``: nothing of ``label`` has run yet, so a connection found gone is a resumable
        :class:`ConnectionLost` (reconnect, take the lock again, go on) rather than a lost lock."""
        try:
            pid, held = await _held(self.conn)
        except Exception as exc:  # any failure to confirm the lock is a lost lock
            if before_start and lost(self.conn, exc):
                raise ConnectionLost(
                    f"the connection holding the migration lock was lost before {label} started "
                    f"({type(exc).__name__}: {exc})",
                    resumable=True,
                    migration=label,
                ) from None
            reason = (
                f"its connection failed ({type(exc).__name__}: {exc})" if str(exc) else type(exc).__name__
            )
            raise self._lost(label, reason) from None
        if pid != self.pid:
            raise self._lost(label, f"the session moved from backend {self.pid} to {pid}; {_POOLING}")
        if not held:
            raise self._lost(label, f"backend {pid} no longer holds it")

    @staticmethod
    def _lost(label: str, reason: str) -> LockLost:
        return LockLost(
            f"lost the migration lock before {label} committed: {reason}; stopped, {label} and later "
            "migrations were not applied (another runner may be migrating now; rerun)",
            kind="LockLost",
            migration=label,
        )


async def take_lock(
    conn: asyncpg.Connection, limit_s: float, db: DbParams | None = None, wait_timeout: float = 0.0
) -> asyncpg.Connection:
    """:func:`acquire_lock`, and say so in the log (LockTimeout past ``limit_s``); returns the
    connection that holds the lock. With ``db``: a connection lost while waiting (the database
    restarted, failed over) is replaced (within ``wait_timeout``) and the wait goes on until
    ``limit_s`` from the start."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            waited = await acquire_lock(conn, max(0.0, deadline - time.monotonic()))
            break
        except (LockTimeout, ConfigError):
            raise
        except Exception as exc:
            if db is None or not lost(conn, exc):
                raise
            conn = await reconnect(conn, db, wait_timeout, exc, "waiting for the migration lock")
    log.info("lock.acquired", "holding the migration lock", key=LOCK_KEY, waited_s=round(waited, 3))
    return conn


async def reconnect(
    conn: asyncpg.Connection, db: DbParams, wait_timeout: float, exc: BaseException, doing: str
) -> asyncpg.Connection:
    """Replace a lost connection (DatabaseUnreachable when none comes within ``wait_timeout``)."""
    log.warning(
        "database.lost",
        f"lost the database connection while {doing}; reconnecting",
        error=f"{type(exc).__name__}: {exc}",
        wait_timeout_s=wait_timeout,
    )
    conn.terminate()
    fresh = await connect(db, wait_timeout)
    log.info("database.reconnected", "connected again", backend_pid=fresh.get_server_pid())
    return fresh


async def release_lock(conn: asyncpg.Connection) -> None:
    """Best effort: the lock goes with the session anyway, and a failure here must not hide the
    run's own outcome. The key is our own integer, written into the text: without parameters
    asyncpg sends one simple query (one round trip) instead of preparing a statement first."""
    with contextlib.suppress(Exception):
        await conn.execute(f"SELECT pg_advisory_unlock({int(LOCK_KEY)})")


@contextlib.asynccontextmanager
async def live(
    conn: asyncpg.Connection, db: DbParams, wait_timeout: float
) -> AsyncIterator[asyncpg.Connection]:
    """``conn``, or a short-lived replacement when it was lost (reading back after a lost lock)."""
    if not conn.is_closed():
        yield conn
        return
    fresh = await connect(db, min(wait_timeout, 5.0))
    try:
        yield fresh
    finally:
        await close(fresh)


async def close(conn: asyncpg.Connection) -> None:
    """Close within 5 s, else drop the connection: a dead server must not hang the end of a run."""
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception:
        conn.terminate()


# Which database a session is on: the server's system_identifier (unique per cluster, kept by its
# replicas) and the database's name. pg_control_system() is executable by everyone by default; where
# it was revoked, the server's address and port stand in for the identifier.
IDENTITY_PROBE = (
    "SELECT has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE') AS allowed, "
    "current_database() AS name, "
    "coalesce(inet_server_addr() || ':' || inet_server_port(), 'local') AS address"
)
MISMATCH = "runs against another database than the one the runner locked"
SYSTEM_IDENTIFIER = "SELECT system_identifier::text FROM pg_catalog.pg_control_system()"


class Identity(NamedTuple):
    """A database's fingerprint (never the URL, host or password) and its name, as the report has them."""

    fingerprint: str
    name: str
    # False when the server address stood in for system_identifier (two routes to one server differ).
    exact: bool = True

    def as_report(self) -> dict[str, str]:
        """The fingerprint only: the name came from the Secret (DB_NAME or the URL's path), and no
        value of the Secret leaves the runner (it is masked everywhere else too)."""
        return {"fingerprint": self.fingerprint}


def fingerprint(system: str, name: str) -> str:
    """First 16 hex digits of sha256("<system_identifier>/<database name>")."""
    return hashlib.sha256(f"{system}/{name}".encode()).hexdigest()[:16]


def identity_of(allowed: bool, name: str, address: str, system_identifier: str | None) -> Identity:
    """The :class:`Identity` from the probes' answers (shared by the asyncpg and the SQLAlchemy side)."""
    exact = bool(allowed) and system_identifier is not None
    system = system_identifier if exact and system_identifier is not None else address
    return Identity(fingerprint(system, name), name, exact)


# Where pg_control_system() may be executed (the default): name and identifier in one query.
IDENTITY_EXACT = (
    "SELECT current_database() AS name, system_identifier::text AS system FROM pg_catalog.pg_control_system()"
)


async def identity(conn: asyncpg.Connection) -> Identity:
    """The identity of the database ``conn`` is on. One read-only query where pg_control_system()
    may be executed (every no-op run asks this: one query less on its path); where that was revoked,
    the query fails without effect (the runner's own session, outside any transaction) and the
    probe's two queries decide as :func:`sync_identity` does."""
    try:
        exact = await conn.fetchrow(IDENTITY_EXACT)
    except asyncpg.InsufficientPrivilegeError:
        exact = None
    if exact is not None:
        return identity_of(True, str(exact["name"]), "", str(exact["system"]))
    row = await conn.fetchrow(IDENTITY_PROBE)
    assert row is not None
    system = await conn.fetchval(SYSTEM_IDENTIFIER) if row["allowed"] else None
    return identity_of(bool(row["allowed"]), str(row["name"]), str(row["address"]), system)


def sync_identity(execute: Any) -> Identity:
    """:func:`identity` over a synchronous driver: ``execute(sql)`` returns the first row as a tuple
    (the migration tools' own connections, e.g. the one an Alembic env.py opened)."""
    allowed, name, address = execute(IDENTITY_PROBE)
    system = execute(SYSTEM_IDENTIFIER)[0] if allowed else None
    return identity_of(bool(allowed), str(name), str(address), None if system is None else str(system))


def holds_lock_sql(pid: int) -> str:
    """SQL (no parameters: integers only) that is true when backend ``pid`` holds the migration lock
    on the current database: another session sees this only when it is on the same server and
    database as the lock. Used where an address stood in for system_identifier."""
    return (
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
        f"AND pid = {int(pid)} AND classid = {LOCK_CLASSID} AND objid = {LOCK_OBJID} AND objsubid = 1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
    )


def same_database(locked: Identity, other: Identity, sees_lock: bool | None = None) -> bool:
    """Whether ``other`` (a migration tool's session) is on the database the runner ``locked``.
    Equal fingerprints decide; when an address stood in for system_identifier (not exact) two
    routes to one server differ, so there whether ``other`` sees the runner's lock
    (:func:`holds_lock_sql`) decides, or, without a lock to look for (None), the names do."""
    if locked.fingerprint == other.fingerprint:
        return True
    if (locked.exact and other.exact) or locked.name != other.name:
        return False
    return sees_lock is None or sees_lock


def undecided(locked: Identity, other: Identity) -> bool:
    """True when :func:`same_database` needs the lock probe to tell."""
    return (
        locked.fingerprint != other.fingerprint
        and not (locked.exact and other.exact)
        and (locked.name == other.name)
    )


async def table_exists(conn: asyncpg.Connection, table: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{table}"'))


async def fetch(conn: asyncpg.Connection, sql: str) -> list[Any]:
    return list(await conn.fetch(sql))
