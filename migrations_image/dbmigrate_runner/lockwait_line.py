"""The lock-wait log line: one format for the runner that writes it and the operator that reads it.

While a migration waits for a table lock the runner cannot write to the API (it has no API access);
it logs one JSON line per lock timeout instead (masked like every line), and the operator reads the
latest one from the running Pod's log tail (``pods/log``, lockwatch.py) to show it in status and an
Event before the run ends. The line's event name and fields are defined here, once, for both sides.

Not on the no-op path (only ``locking.py`` writes it), so a dataclass is fine here. Pure standard
library: the operator imports it without the ORM stack.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, TypeGuard

LOCK_WAIT_EVENT = "lock.timeout"
# Later lines that say the waiting migration got through (or the run ended): the wait is over.
LOCK_WAIT_ENDS = frozenset({"migration.apply", "migration.revert", "migrations.done", "run.end"})
_WAIT_TEXT_CHARS = 400  # longest blocker or migration text the operator takes from a log line


@dataclass(frozen=True)
class LockWait:
    """One lock timeout of a migration: who held the lock (described and masked by the runner),
    which attempt of how many timed out, when the next starts, what is left of the run's budget."""

    migration: str
    attempt: int
    retries: int
    lock_timeout_ms: int = 0
    blocker: str | None = None  # "a lock on shop.review held by pid 4711 (user 'app', …)"
    blocker_pid: int | None = None
    retry_in_s: float | None = None
    budget_left_s: float | None = None
    at: str | None = None  # the log line's timestamp (set when read back)

    def fields(self) -> dict[str, Any]:
        """The log line's fields, as :func:`lock_wait_of` reads them back."""
        data = asdict(self)
        del data["at"]
        return data


def lock_wait_of(record: Any) -> LockWait | None:
    """A :class:`LockWait` from one decoded log line, or None when it is not one (or malformed)."""
    if not isinstance(record, dict) or record.get("event") != LOCK_WAIT_EVENT:
        return None
    migration, attempt, retries = record.get("migration"), record.get("attempt"), record.get("retries")
    if not isinstance(migration, str) or not _whole(attempt) or not _whole(retries):
        return None

    def text(key: str) -> str | None:
        value = record.get(key)
        return value[:_WAIT_TEXT_CHARS] if isinstance(value, str) and value else None

    def number(key: str) -> float | None:
        value = record.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    pid, timeout = record.get("blocker_pid"), record.get("lock_timeout_ms")
    return LockWait(
        migration=migration[:_WAIT_TEXT_CHARS],
        attempt=attempt,
        retries=retries,
        lock_timeout_ms=timeout if _whole(timeout) else 0,
        blocker=text("blocker"),
        blocker_pid=pid if _whole(pid) else None,
        retry_in_s=number("retry_in_s"),
        budget_left_s=number("budget_left_s"),
        at=text("ts"),
    )


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def latest_lock_wait(log_text: str) -> LockWait | None:
    """The lock wait a run is in now, from the tail of its log: the last lock-timeout line, unless a
    later line says the run moved past it (another migration started, the migrations are done, the
    run ended). Lines that are not JSON (a tail cut mid-line, a library's stray output) are skipped."""
    current: LockWait | None = None
    for line in log_text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        wait = lock_wait_of(record)
        if wait is not None:
            current = wait
        elif current is not None and record.get("event") in LOCK_WAIT_ENDS:
            if record.get("event") in ("migration.apply", "migration.revert") and (
                record.get("migration") == current.migration
            ):
                continue  # the same migration tried again (Alembic logs its steps on each retry)
            current = None
    return current
