"""One migration attempt, and what a failure of it means: retry it, resume the run, or stop.

Why a module: the tools (aerich, Tortoise) know where a migration begins and ends; the runner
knows the lock, the connection and the policy. The tools hand each migration (its whole
transaction) to an :class:`Attempts` object, which decides:

* before it starts, the advisory lock's session must be there; if the connection is gone (the
  database restarted between two migrations) the run is *resumable*: the runner reconnects, takes
  the lock again and goes on from what the tracking table says (:class:`ConnectionLost`,
  ``resumable=True``);
* a lock timeout is retried with backoff (:mod:`dbmigrate_runner.locking`);
* a connection lost while it ran: its transaction died with the connection, nothing of it is
  committed (an atomic one); the run stops with ``DatabaseUnreachable`` (exit 3) and the Job's
  retry resumes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from dbmigrate_runner import database
from dbmigrate_runner.errors import ConnectionLost, RunnerError
from dbmigrate_runner.locking import Retrier

T = TypeVar("T")


def lost_inside(label: str, exc: BaseException, atomic: bool) -> ConnectionLost:
    undone = (
        f"its transaction was rolled back with the connection, nothing of {label} was committed"
        if atomic
        else f"{label} is not atomic: what it ran before the loss stays applied"
    )
    return ConnectionLost(
        f"lost the database connection while {label} ran ({type(exc).__name__}: {exc}); {undone}; "
        "the Job's retry resumes the run",
        resumable=False,
        migration=label,
    )


class Attempts:
    """Called by a tool as ``await attempts(label, body, atomic=...)`` for each migration."""

    def __init__(self, retrier: Retrier, guard: database.LockGuard | None = None) -> None:
        self.retrier = retrier
        self.guard = guard  # replaced when the runner reconnects

    async def __call__(self, label: str, body: Callable[[], Awaitable[T]], *, atomic: bool = True) -> T:
        if self.guard is not None:
            await self.guard.check(label, before_start=True)
        try:
            return await self.retrier.run(label, body, atomic=atomic)
        except RunnerError:
            raise
        except Exception as exc:
            if database.is_connection_lost(exc):
                raise lost_inside(label, exc, atomic) from exc
            raise
