"""Where the gate's release pass tells the controller which rollouts wait for a database check.

Why a module of its own: the release pass (gating/release.py) sees the gated pods, the controller
(controller.py) owns the Jobs; neither imports the other. The release pass says, for one
DatabaseMigration, the full set of rollouts (pod template hashes) whose pin is met but not verified
against the database the versions are for; the controller keeps the latest set per resource
(:class:`Wanted`) and queues a pass, whose decision (database_check.py) runs the check Job. Nothing is
persisted here: after a restart or a takeover the next release pass or sweep says it again.

The two meet at startup, through kopf's memo of the operator run (nothing is kept in this module): the
controller's startup handler offers its :meth:`Wanted.say` (:func:`offer`, in handlers.py), gating's
builds its releaser with :func:`relay` (gating/runtime.py). A releaser built alone (tests) is given
its :data:`Request` directly, or asks :func:`nobody`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

Request = Callable[[str, str, frozenset[str]], None]  # (namespace, name, rollouts)
Key = tuple[str, str]
# A check asked for is forgotten when no release pass or sweep (every 30 s by default) has repeated it
# for this long: its pods are gone, and a failing check is not retried forever.
STALE_SECONDS = 300.0
MEMO_KEY = "dbmigrate_check_requests"  # in kopf's memo of the operator run: the controller's Request


def nobody(namespace: str, name: str, rollouts: frozenset[str]) -> None:
    """The :data:`Request` of a releaser without a controller in its process: no check is run."""


def offer(memo: MutableMapping[str, Any], request: Request) -> None:
    """The controller's startup: the release passes of this operator run tell ``request``."""
    memo[MEMO_KEY] = request


def relay(memo: Mapping[str, Any]) -> Request:
    """Gating's startup: the :data:`Request` its releaser is built with. kopf runs the startup
    handlers in whichever order they were registered, and a sweep may run before the controller's
    has: the controller's request is looked up in ``memo`` each time a pass asks (none: nobody)."""

    def request(namespace: str, name: str, rollouts: frozenset[str]) -> None:
        handler = memo.get(MEMO_KEY)
        if handler is not None:
            handler(namespace, name, rollouts)

    return request


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
