"""Where the gate's release pass tells the controller which rollouts wait for a database check.

Why a module of its own: the release pass (gating/release.py) sees the gated pods, the controller
(controller.py) owns the Jobs; neither imports the other. The release pass says, for one
DatabaseMigration, the full set of rollouts (pod template hashes) whose pin is met but not verified
against the database the versions are for; the controller keeps the latest set per resource and queues
a pass, whose decision (database_check.py) runs the check Job. Nothing is persisted here: after a
restart or a takeover the next release pass or sweep says it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Request = Callable[[str, str, frozenset[str]], None]  # (namespace, name, rollouts)
Key = tuple[str, str]
# A check asked for is forgotten when no release pass or sweep (every 30 s by default) has repeated it
# for this long: its pods are gone, and a failing check is not retried forever.
STALE_SECONDS = 300.0

_handler: Request | None = None


def install(handler: Request | None) -> None:
    """The controller of this process (None: nobody runs checks, e.g. gating alone in tests)."""
    global _handler
    _handler = handler


def request(namespace: str, name: str, rollouts: frozenset[str]) -> None:
    """The rollouts of ``namespace/name`` that wait for a check now (empty: none does)."""
    if _handler is not None:
        _handler(namespace, name, rollouts)


class Wanted:
    """The controller's memory of what the release pass last said, per DatabaseMigration: a change
    calls ``on_change`` (the controller queues a pass, whose decision runs the check Job)."""

    def __init__(self, on_change: Callable[[str, str], None]) -> None:
        self._on_change = on_change
        self._said: dict[Key, tuple[frozenset[str], float]] = {}  # rollouts, when (monotonic)

    def say(self, namespace: str, name: str, rollouts: frozenset[str]) -> None:
        """A :data:`Request` handler: the rollouts of ``namespace/name`` waiting for a check now."""
        key = (namespace, name)
        before = self._said.get(key, (frozenset(), 0.0))[0]
        if rollouts:
            self._said[key] = (rollouts, time.monotonic())
        else:
            self._said.pop(key, None)
        if before != rollouts:
            self._on_change(namespace, name)

    def now(self, key: Key) -> frozenset[str]:
        """The rollouts waiting for a check, unless nobody repeated them for :data:`STALE_SECONDS`."""
        rollouts, said = self._said.get(key, (frozenset(), 0.0))
        if rollouts and time.monotonic() - said > STALE_SECONDS:
            del self._said[key]
            return frozenset()
        return rollouts

    def forget(self, key: Key) -> None:
        self._said.pop(key, None)
