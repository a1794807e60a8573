"""Failures that end a run, each carrying the report outcome (and so the exit code) it maps to."""

from __future__ import annotations

from collections.abc import Iterator

from dbmigrate_runner.report import Outcome


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and what SQLAlchemy or Tortoise wrapped (``.orig``, args)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [a for a in current.args if isinstance(a, BaseException)]
        for attr in ("orig", "__cause__", "__context__"):
            value = getattr(current, attr, None)
            if isinstance(value, BaseException):
                todo.append(value)


class RunnerError(Exception):
    """A failure with a known outcome; ``str(exc)`` is the operator-facing message (no secrets)."""

    outcome: Outcome = Outcome.INTERNAL_ERROR

    def __init__(self, message: str, *, kind: str | None = None, migration: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind or type(self).__name__
        self.migration = migration


class ConfigError(RunnerError):
    outcome = Outcome.CONFIG_ERROR


class DatabaseUnreachable(RunnerError):
    outcome = Outcome.DATABASE_UNREACHABLE


class ConnectionLost(DatabaseUnreachable):
    """The database connection went away (restart, failover, network). ``resumable``: it happened
    before a migration started or between two, so the runner reconnects and goes on by itself;
    otherwise a migration was in flight (rolled back by the server) and the Job's retry resumes."""

    def __init__(
        self, message: str, *, resumable: bool, kind: str | None = None, migration: str | None = None
    ) -> None:
        super().__init__(message, kind=kind or "ConnectionLost", migration=migration)
        self.resumable = resumable


class LockTimeout(RunnerError):
    outcome = Outcome.LOCK_TIMEOUT


class LockNotAvailable(RunnerError):
    """A migration kept hitting its ``lock_timeout`` until its attempts or the run's budget ran out;
    its transaction was rolled back each time."""

    outcome = Outcome.LOCK_NOT_AVAILABLE


class MigrationFailed(RunnerError):
    outcome = Outcome.MIGRATION_FAILED


class LockLost(MigrationFailed):
    """The advisory lock's session is gone (or never was ours): another runner may be migrating now."""


class DowngradeRefused(RunnerError):
    outcome = Outcome.DOWNGRADE_REFUSED
