"""Migrations that never stall production: a short ``lock_timeout``, retries with backoff, the blocker named.

Why: ``ALTER TABLE`` queues for an ACCESS EXCLUSIVE lock behind any open transaction on the table,
and every later query on that table queues behind the ``ALTER``: one idle ``psql`` session turns a
millisecond migration into an outage. Every migration session runs with ``lock_timeout`` (default
3 s), so the app never waits longer than that; a migration that times out is rolled back (its
transaction: nothing half-applied), the runner waits (jittered exponential backoff, the queue
drains) and tries it again, within a number of attempts per migration and a budget for the whole
run. Then it stops with ``LockNotAvailable`` (exit 7). While a migration waits, a watcher reads
who blocks it (``pg_locks``, ``pg_blocking_pids``, ``pg_stat_activity``), so each timeout names
the session to look at.

The decisions (backoff, give up or retry, the sentences) are pure functions; the I/O is the
watcher's one query on a connection of its own and the invalid-index check. The policy itself
(``DBMIGRATE_LOCKING_*``) is parsed in :mod:`dbmigrate_runner.lock_policy`: a no-op run never
imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from dbmigrate_runner.errors import LockNotAvailable, exception_chain
from dbmigrate_runner.lock_policy import Policy
from dbmigrate_runner.lockwait_line import LOCK_WAIT_EVENT, LockWait
from dbmigrate_runner.log import log
from dbmigrate_runner.report import LockWaits

if TYPE_CHECKING:
    import asyncpg

    from dbmigrate_runner.settings import DbParams

T = TypeVar("T")

LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of "canceling statement due to lock timeout"
QUERY_CHARS = 80  # how much of the blocker's query the report keeps


# ---------------------------------------------------------------- errors


def sqlstate(exc: BaseException) -> str | None:
    """The first SQLSTATE in the chain (asyncpg ``sqlstate``, psycopg ``sqlstate``)."""
    for current in exception_chain(exc):
        code = getattr(current, "sqlstate", None)
        if isinstance(code, str) and code:
            return code
    return None


def is_lock_not_available(exc: BaseException) -> bool:
    return sqlstate(exc) == LOCK_NOT_AVAILABLE


# ---------------------------------------------------------------- the blocker

_BLOCKER_SQL = """
SELECT w.locktype, w.mode,
       (SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = w.relation) AS relation,
       b.pid, b.usename AS "user", b.application_name AS application, b.state,
       EXTRACT(EPOCH FROM now() - COALESCE(b.state_change, b.query_start))::float8 AS state_s,
       EXTRACT(EPOCH FROM now() - b.xact_start)::float8 AS xact_s,
       b.query
FROM pg_stat_activity a
JOIN pg_locks w ON w.pid = a.pid AND NOT w.granted
CROSS JOIN LATERAL unnest(pg_blocking_pids(a.pid)) AS blocking(pid)
JOIN pg_stat_activity b ON b.pid = blocking.pid
WHERE a.application_name = $1 AND a.datname = current_database()
ORDER BY b.xact_start NULLS LAST
LIMIT 1
"""
_LITERAL = re.compile(r"'(?:[^']|'')*'|\$\$.*?\$\$", re.DOTALL)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def query_start(query: str | None, chars: int = QUERY_CHARS) -> str:
    """The start of a query for a report: literals elided (they may hold data), one line, truncated."""
    text = " ".join(_LITERAL.sub("'…'", query or "").split())
    return text if len(text) <= chars else text[: chars - 1] + "…"


@dataclass(frozen=True)
class Blocker:
    """The session holding the lock a migration waits for, as ``pg_stat_activity`` shows it."""

    pid: int
    relation: str | None = None
    locktype: str = "relation"
    mode: str = ""
    user: str | None = None
    application: str | None = None
    state: str | None = None
    state_s: float | None = None
    xact_s: float | None = None
    query: str | None = None

    def describe(self) -> str:
        """ "a lock on shop.review held by pid 4711 (app 'reporting', idle in transaction for 12 min, …)"."""
        what = f"a lock on {self.relation}" if self.relation else f"a {self.locktype} lock"
        details = []
        if self.user:
            details.append(f"user {self.user!r}")
        if self.application:
            details.append(f"app {self.application!r}")
        if self.state:
            details.append(
                f"{self.state} for {_duration(self.state_s)}" if self.state_s is not None else self.state
            )
        if self.xact_s is not None and (self.state_s is None or self.xact_s - self.state_s >= 1):
            details.append(f"transaction open {_duration(self.xact_s)}")
        if self.query:
            details.append(f"query {query_start(self.query)!r}")
        inside = f" ({', '.join(details)})" if details else ""
        return log.mask(f"{what} held by pid {self.pid}{inside}")


def blocker_of(row: Any) -> Blocker:
    return Blocker(
        pid=int(row["pid"]),
        relation=row["relation"],
        locktype=str(row["locktype"]),
        mode=str(row["mode"]),
        user=row["user"],
        application=row["application"] or None,
        state=row["state"],
        state_s=row["state_s"],
        xact_s=row["xact_s"],
        query=row["query"],
    )


# ---------------------------------------------------------------- the decision


@dataclass
class Waits:
    """What the run learned about table locks; becomes the report's ``locking`` block."""

    policy: Policy
    timeouts: int = 0
    attempts: int = 0
    migration: str | None = None
    blocker: str | None = None
    waited: float = 0.0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def report(self) -> LockWaits | None:
        if not self.timeouts and not self.notes:
            return None
        return LockWaits(
            timeout_ms=self.policy.timeout_ms,
            timeouts=self.timeouts,
            attempts=self.attempts,
            retries=self.policy.retries,
            migration=self.migration,
            blocker=self.blocker,
            waited_ms=round(self.waited * 1000),
            note="; ".join(self.notes)[:400] or None,
        )


def waiting_message(label: str, blocker: Blocker | None, attempt: int, retries: int) -> str:
    """ "{label} waited for a lock on shop.review held by pid 4711 (…); attempt 3 of 20"."""
    who = blocker.describe() if blocker else "a lock (its holder was not seen: it waited less than a poll)"
    return f"{label} waited for {who}; attempt {attempt} of {retries}"


def give_up(
    waits: Waits, label: str, blocker: Blocker | None, attempt: int, atomic: bool, why: str
) -> LockNotAvailable:
    """The run's end: the migration named, its blocker, and what to do."""
    who = blocker.describe() if blocker else "a lock whose holder was not seen"
    undone = (
        f"nothing of {label} was applied (rolled back each time)"
        if atomic
        else f"{label} is not atomic: not retried, statements before the one that timed out stay applied"
    )
    return LockNotAvailable(
        f"gave up after {attempt} attempt(s) of {label} ({why}; lock_timeout "
        f"{waits.policy.timeout_ms} ms, {waits.waited:.0f} s spent waiting in this run): waiting for {who}; "
        f"{undone}. End that session or raise spec.locking (retries, budget), then rerun",
        kind="LockNotAvailable",
        migration=label,
    )


# ---------------------------------------------------------------- the I/O


class Retrier:
    """Runs each migration with the policy: watch while it runs, retry it on a lock timeout."""

    def __init__(
        self,
        policy: Policy,
        db: DbParams | None,
        *,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy
        self.db = db
        self.waits = Waits(policy)
        # Every migration session carries it, so the watcher finds exactly ours in pg_stat_activity.
        self.application = f"dbmigrate-runner/migrate {secrets.token_hex(3)}"
        self._rand = rand
        self._sleep = sleep
        self._observer: asyncpg.Connection | None = None

    def session_settings(self) -> dict[str, str]:
        return {**self.policy.session_settings(), "application_name": self.application}

    async def run(
        self, label: str | Callable[[], str | None], body: Callable[[], Awaitable[T]], *, atomic: bool = True
    ) -> T:
        """``body`` (one migration, or Alembic's whole env.py run: ``label`` is then asked after a
        failure), again after each lock timeout, until it succeeds or the policy says stop."""
        attempt = 0
        invalid_before: set[str] | None = None
        if not atomic and self.policy.enabled:
            invalid_before = await self._invalid_indexes()
            if invalid_before:
                self._say_invalid(
                    f"INVALID index(es) {', '.join(sorted(invalid_before))} existed before "
                    f"{_name(label)} (an earlier failed concurrent build?)",
                    _name(label),
                    sorted(invalid_before),
                )
        while True:
            attempt += 1
            watch = _Watch(self) if self.policy.enabled else None
            started = time.monotonic()
            try:
                return await body()
            except Exception as exc:
                if invalid_before is not None:  # whatever the failure: a half-built index is said
                    await self._report_invalid(_name(label), invalid_before)
                if not self.policy.enabled or not is_lock_not_available(exc):
                    raise
                name = _name(label)
                blocker = watch.last if watch else None
                self.waits.waited += time.monotonic() - started
                self.waits.timeouts += 1
                self.waits.attempts, self.waits.migration = attempt, name
                self.waits.blocker = blocker.describe() if blocker else None
                message = waiting_message(name, blocker, attempt, self.policy.retries)
                if not atomic:
                    raise give_up(self.waits, name, blocker, attempt, False, "not atomic") from None
                delay = self.policy.backoff(attempt, self._rand)
                if attempt >= self.policy.retries:
                    raise give_up(self.waits, name, blocker, attempt, True, "no attempts left") from None
                if self.waits.waited + delay > self.policy.budget:
                    why = f"the budget of {self.policy.budget:g} s is spent"
                    raise give_up(self.waits, name, blocker, attempt, True, why) from None
                # The one line the operator reads while the Job runs (lockwait_line.py: the shared format).
                wait = LockWait(
                    migration=name,
                    attempt=attempt,
                    retries=self.policy.retries,
                    lock_timeout_ms=self.policy.timeout_ms,
                    blocker=self.waits.blocker,
                    blocker_pid=blocker.pid if blocker else None,
                    retry_in_s=round(delay, 2),
                    budget_left_s=round(max(0.0, self.policy.budget - self.waits.waited - delay), 1),
                )
                log.warning(
                    LOCK_WAIT_EVENT, f"{message}; rolled back, retrying in {delay:.1f} s", **wait.fields()
                )
                await self._sleep(delay)
                self.waits.waited += delay
            finally:
                if watch is not None:
                    await watch.stop()

    async def observe(self) -> Blocker | None:
        """Who blocks one of our migration sessions now (None: nobody, or it cannot be read)."""
        conn = await self._connection()
        if conn is None:
            return None
        row = await asyncio.wait_for(conn.fetchrow(_BLOCKER_SQL, self.application), 5)
        return blocker_of(row) if row is not None else None

    async def _connection(self) -> asyncpg.Connection | None:
        if self.db is None:
            return None
        if self._observer is None or self._observer.is_closed():
            from dbmigrate_runner import database

            self._observer = await database.connect(self.db, 5.0)
        return self._observer

    async def _invalid_indexes(self) -> set[str]:
        """INVALID indexes now (a failed ``CREATE INDEX CONCURRENTLY`` leaves one); empty if unreadable.
        On a short-lived connection of its own: the blocker watcher may be using the observer's (an
        asyncpg connection runs one query at a time, and a clash here once lost the note)."""
        if self.db is None:
            return set()
        from dbmigrate_runner import database

        with contextlib.suppress(Exception):
            conn = await database.connect(self.db, 5.0)
            try:
                rows = await conn.fetch(
                    "SELECT n.nspname || '.' || c.relname AS name FROM pg_index i "
                    "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE NOT i.indisvalid"
                )
            finally:
                await database.close(conn)
            return {str(row["name"]) for row in rows}
        return set()

    async def _report_invalid(self, label: str, before: set[str]) -> None:
        left = sorted(await self._invalid_indexes() - before)
        if left:
            text = (
                f"{label} left INVALID index(es) {', '.join(left)} (a concurrent build that failed): "
                "drop them (DROP INDEX CONCURRENTLY) before the rerun"
            )
            self._say_invalid(text, label, left)

    def _say_invalid(self, text: str, label: str, indexes: list[str]) -> None:
        self.waits.note(text)
        log.warning("lock.invalid_index", text, migration=label, indexes=indexes)

    async def close(self) -> None:
        if self._observer is not None:
            from dbmigrate_runner import database

            await database.close(self._observer)
            self._observer = None


def _name(label: str | Callable[[], str | None]) -> str:
    return (label() if callable(label) else label) or "a migration"


_SETTING = re.compile(r"^[A-Za-z0-9_ ./-]*$")


@contextlib.contextmanager
def sqlalchemy_sessions(settings: Mapping[str, str]) -> Iterator[None]:
    """Every SQLAlchemy connection opened meanwhile gets ``settings`` (a pool ``connect`` listener on
    the Pool class): the engine the runner hands to env.py and any engine env.py builds itself, sync
    or async. A connection made outside SQLAlchemy's pools is not reached (Alembic's run checks)."""
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    for name, value in settings.items():
        if not (_SETTING.match(name) and _SETTING.match(value)):
            raise ValueError(f"unexpected session setting {name}={value!r}")

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        before = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            for name, value in settings.items():
                cursor.execute(f"SELECT set_config('{name}', '{value}', false)")
        finally:
            cursor.close()
            dbapi_connection.autocommit = before

    if not settings:
        yield
        return
    event.listen(Pool, "connect", on_connect)
    try:
        yield
    finally:
        event.remove(Pool, "connect", on_connect)


def session_note(shown: str | None, policy: Policy) -> str | None:
    """A note for the report when a migration session does not run with the policy's lock_timeout."""
    if not policy.enabled or shown == f"{policy.timeout_ms}ms" or _ms(shown) == policy.timeout_ms:
        return None
    return (
        f"lock_timeout is {shown or 'unknown'} on env.py's connection, not {policy.timeout_ms} ms "
        "(it was not opened through a SQLAlchemy pool): its migrations wait for locks without our limit"
    )


def _ms(shown: str | None) -> int | None:
    match = re.match(r"^(\d+)(ms|s|min)?$", shown or "")
    if not match:
        return None
    return int(match[1]) * {"ms": 1, "s": 1000, "min": 60000}[match[2] or "ms"]


class _Watch:
    """Polls :meth:`Retrier.observe` while one attempt runs; keeps the last blocker seen."""

    def __init__(self, retrier: Retrier) -> None:
        self.retrier = retrier
        self.last: Blocker | None = None
        self._stop = asyncio.Event()
        timeout = retrier.policy.timeout
        self._first = min(0.2, timeout / 4)
        self._every = max(0.05, min(0.5, timeout / 4))
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        delay = self._first
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
                return
            try:
                found = await self.retrier.observe()
            except Exception as exc:  # watching is best effort: it must never fail a migration
                log.debug("lock.watch", "cannot read lock waits", error=f"{type(exc).__name__}: {exc}")
                found = None
            if found is not None:
                self.last = found
            delay = self._every

    async def stop(self) -> None:
        """Let the poll finish its query (a cancelled query would leave the connection unusable)."""
        self._stop.set()
        with contextlib.suppress(Exception):
            await self._task
