"""Failures that end a run, each carrying the report outcome (and so the exit code) it maps to."""

from __future__ import annotations

from dbmigrate_runner.report import Outcome


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


class LockTimeout(RunnerError):
    outcome = Outcome.LOCK_TIMEOUT


class MigrationFailed(RunnerError):
    outcome = Outcome.MIGRATION_FAILED


class LockLost(MigrationFailed):
    """The advisory lock's session is gone (or never was ours): another runner may be migrating now."""


class DowngradeRefused(RunnerError):
    outcome = Outcome.DOWNGRADE_REFUSED
