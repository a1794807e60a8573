"""Where the gate's release pass tells the controller which rollouts wait for a database check.

Why a module of its own: the release pass (gating/release.py) sees the gated pods, the controller
(controller.py) owns the Jobs; neither imports the other. The release pass says, for one
DatabaseMigration, the full set of rollouts (pod template hashes) whose pin is met but not verified
against the database the versions are for; the controller keeps the latest set per resource and queues
a pass, whose decision (database_check.py) runs the check Job. Nothing is persisted here: after a
restart or a takeover the next release pass or sweep says it again.
"""

from __future__ import annotations

from collections.abc import Callable

Request = Callable[[str, str, frozenset[str]], None]  # (namespace, name, rollouts)

_handler: Request | None = None


def install(handler: Request | None) -> None:
    """The controller of this process (None: nobody runs checks, e.g. gating alone in tests)."""
    global _handler
    _handler = handler


def request(namespace: str, name: str, rollouts: frozenset[str]) -> None:
    """The rollouts of ``namespace/name`` that wait for a check now (empty: none does)."""
    if _handler is not None:
        _handler(namespace, name, rollouts)
