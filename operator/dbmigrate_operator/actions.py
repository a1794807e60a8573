"""What the decision asks for: the actions a plan is made of, and the Step one branch concludes.

Why a module of its own: :func:`reconcile.decide` and every step module speak these words, and the
controller (handlers.py) carries them out; they sit below both so neither imports the other's logic.
Plain values, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dbmigrate_operator.status import Phase, Verdict


@dataclass(frozen=True)
class CreateJob:
    manifest: dict[str, Any]


@dataclass(frozen=True)
class DeleteJob:
    name: str
    why: str


@dataclass(frozen=True)
class PatchStatus:
    patch: dict[str, Any]  # a JSON merge patch of .status (None deletes a key)


@dataclass(frozen=True)
class EmitEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class HoldDeletion:
    """Add (``hold``) or remove the run-in-progress finalizer (:data:`constants.RUN_FINALIZER`)."""

    hold: bool


Action = CreateJob | DeleteJob | PatchStatus | EmitEvent | HoldDeletion


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # the full status after the plan
    # Look again after this many seconds even without an event (a grace period ends then).
    recheck_after: float | None = None

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]


@dataclass
class Step:
    """What one branch of :func:`decide` concluded."""

    phase: Phase
    verdict: Verdict
    actions: list[Action] = field(default_factory=list)
    events: list[EmitEvent] = field(default_factory=list)
    recheck_at: datetime | None = None
    # status.lockWait while the running Job's migration waits for a table lock (lockwatch.py)
    lock_wait: dict[str, Any] | None = None


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        if old.get(key) != value:
            patch[key] = value
    return patch
