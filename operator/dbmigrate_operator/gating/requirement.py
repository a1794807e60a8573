"""What a pod waits for, and whether a DatabaseMigration satisfies it (pure, no I/O).

The webhook, the event-driven release and the periodic sweep all decide with this one module, so
the pod that was gated and the pod that gets released are judged by the same rule.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from dbmigrate_operator import ancestry
from dbmigrate_operator.constants import (
    ALEMBIC_APP,
    KIND,
    SCHEDULING_GATE,
    WAIT_FOR_LABEL,
    WAIT_FOR_VERSION_ANNOTATION,
)

# Keep user-visible texts short: Events are truncated by the API at 1 KiB, and the DB error text of
# a failed run (lastRun.message) can be long.
_MAX_DETAIL = 300


@dataclasses.dataclass(frozen=True)
class Requirement:
    """What one pod waits for: a DatabaseMigration (same namespace) and optionally a version."""

    migration: str
    version: str | None = None  # the pinned version, without the app prefix
    app: str | None = None  # the app of the pin when written as `<app>:<version>`

    @property
    def pin(self) -> str | None:
        """The pin as the user wrote it (normalised), for messages."""
        if self.version is None:
            return None
        return f"{self.app}:{self.version}" if self.app else self.version


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The decision for one pod: `met` releases it; `reason`/`message` go into Events and logs."""

    met: bool
    reason: str  # CamelCase, as Kubernetes Event reasons are
    message: str


def requirement_of(
    labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None
) -> Requirement | None:
    """The requirement a pod declares, or None when the pod did not opt in (no or empty label)."""
    name = (labels or {}).get(WAIT_FOR_LABEL, "").strip()
    if not name:
        return None
    pin = (annotations or {}).get(WAIT_FOR_VERSION_ANNOTATION, "").strip()
    if not pin:
        return Requirement(migration=name)
    app, sep, version = pin.partition(":")
    if sep and app.strip() and version.strip():
        return Requirement(migration=name, app=app.strip(), version=version.strip())
    # No colon, or a degenerate `:v` / `app:`: the whole text is the version (it will simply be
    # unmet if no such version is ever applied, and the Event shows exactly what was looked for).
    return Requirement(migration=name, version=pin.strip(":").strip() or pin)


def has_gate(pod: Mapping[str, Any]) -> bool:
    """Whether the pod still carries our scheduling gate."""
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(isinstance(g, Mapping) and g.get("name") == SCHEDULING_GATE for g in gates)


def evaluate(requirement: Requirement, migration: Mapping[str, Any] | None) -> Verdict:
    """Whether `migration` (the DatabaseMigration object, or None when absent) meets `requirement`.

    Label alone: Ready for the current generation — the Ready condition is True and both it and
    status.observedGeneration match metadata.generation, so a just-edited spec is not mistaken for
    an applied one. With a version pin: that version is among status.appliedVersions (whatever the
    generation: a later spec change or a failing newer run does not take an applied schema away).
    """
    what = f"{KIND} {requirement.migration}"
    if migration is None:
        return Verdict(False, "MigrationNotFound", f"waiting for {what}: it does not exist (yet)")

    status = migration.get("status") or {}
    if requirement.version is not None:
        return _evaluate_pin(requirement, status, what)

    generation = (migration.get("metadata") or {}).get("generation")
    ready = _condition(status, "Ready")
    if _is_true(ready) and _generation_matches(generation, status, ready):
        return Verdict(True, "MigrationReady", f"{what} is Ready (generation {generation})")

    failure = _failure(status)
    if failure is not None:
        return Verdict(
            False,
            "MigrationFailed",
            f"waiting for {what}: its migration failed ({failure}); new pods stay gated, "
            "pods already running keep serving",
        )
    observed = status.get("observedGeneration")
    if ready is not None and _is_true(ready):
        detail = f"generation {generation} is not applied yet (observed {observed})"
    else:
        detail = f"not Ready yet{_describe(status, ready)}"
    return Verdict(False, "MigrationNotReady", f"waiting for {what}: {detail}")


def _evaluate_pin(requirement: Requirement, status: Mapping[str, Any], what: str) -> Verdict:
    pin = requirement.pin
    in_ancestry = _in_ancestry(requirement, status)
    if (
        _is_applied(requirement, status.get("appliedVersions"))
        or _is_below_current(requirement, status)
        or in_ancestry
    ):
        return Verdict(True, "VersionApplied", f"version {pin} is applied by {what}")
    current = status.get("currentVersion")
    current_text = f" (current version: {current})" if current else " (no version applied yet)"
    if in_ancestry is None:
        listed, omitted = _listed_and_omitted(status)
        current_text += (
            f"; it is not among the {listed} newest applied revisions the operator knows, and "
            f"{omitted} older ones are not listed, so it cannot be verified: pin a newer revision"
        )
    failure = _failure(status)
    if failure is not None:
        return Verdict(
            False,
            "MigrationFailed",
            f"waiting for version {pin} of {what}{current_text}: its migration failed ({failure}); "
            "new pods stay gated, pods already running keep serving",
        )
    return Verdict(
        False,
        "VersionNotApplied",
        f"waiting for version {pin} of {what}: not applied yet{current_text}",
    )


def _is_applied(requirement: Requirement, applied: Any) -> bool:
    if not isinstance(applied, Iterable) or isinstance(applied, str | bytes | Mapping):
        return False
    for entry in applied:
        if not isinstance(entry, Mapping):
            continue
        if entry.get("version") != requirement.version:
            continue
        if requirement.app is None or entry.get("app") == requirement.app:
            return True
    return False


def _pin_app(requirement: Requirement, status: Mapping[str, Any]) -> str | None:
    """The app a pin refers to: its own prefix, or the only app of currentVersion."""
    if requirement.app is not None:
        return requirement.app
    apps = {part.partition(":")[0].strip() for part in str(status.get("currentVersion") or "").split(",")}
    apps.discard("")
    return next(iter(apps)) if len(apps) == 1 else None


def _listed_and_omitted(status: Mapping[str, Any]) -> tuple[int, int]:
    """How many applied revisions status names for pins, and how many it only counts."""
    known = ancestry.known(status)
    if known is not None:
        return len(known.revisions), known.omitted
    applied = status.get("appliedVersions")
    listed = len(applied) if isinstance(applied, list) else 0
    count = status.get("appliedCount")
    return listed, max((count if isinstance(count, int) else listed) - listed, 0)


def _in_ancestry(requirement: Requirement, status: Mapping[str, Any]) -> bool | None:
    """Alembic pins against status.ancestry: True applied, None cannot tell, False not applied/not Alembic."""
    if requirement.version is None or _pin_app(requirement, status) != ALEMBIC_APP:
        return False
    known = ancestry.known(status)
    if known is None:
        # No ancestry recorded: a capped appliedVersions leaves older pins unknown.
        applied = status.get("appliedVersions")
        listed = len(applied) if isinstance(applied, list) else 0
        count = status.get("appliedCount")
        return None if isinstance(count, int) and count > listed else False
    return known.contains(requirement.version)


def _version_number(version: str) -> int | None:
    """Both tools prefix versions with a sortable number (aerich `3_2026..._x`, tortoise `0003_x`)."""
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else None


def _is_below_current(requirement: Requirement, status: Mapping[str, Any]) -> bool:
    """For a capped status.appliedVersions (the newest N, see appliedCount) only: an older pin
    cannot be found in the list, but migrations apply in order, so a pin numbered at or below the
    app's current version is applied. Never used when the list is complete.
    """
    applied = status.get("appliedVersions")
    count = status.get("appliedCount")
    listed = len(applied) if isinstance(applied, list) else 0
    if not isinstance(count, int) or count <= listed or requirement.version is None:
        return False
    current: dict[str, str] = {}
    for part in str(status.get("currentVersion") or "").split(","):
        app, sep, version = part.partition(":")
        if sep and app.strip():
            current[app.strip()] = version.strip()
    if requirement.app is not None:
        app = requirement.app
    elif len(current) == 1:
        (app,) = current
    else:
        return False  # ambiguous without the app name
    if app == ALEMBIC_APP:  # revision ids are not ordered: only the listed ancestry counts
        return False
    pinned, newest = _version_number(requirement.version), _version_number(current.get(app, ""))
    return pinned is not None and newest is not None and pinned <= newest


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return None


def _is_true(condition: Mapping[str, Any] | None) -> bool:
    return condition is not None and condition.get("status") == "True"


def _generation_matches(generation: Any, status: Mapping[str, Any], ready: Mapping[str, Any] | None) -> bool:
    if generation is None or status.get("observedGeneration") != generation:
        return False
    # kstatus: a condition may carry its own observedGeneration; when it does, it must be current.
    cond_generation = (ready or {}).get("observedGeneration")
    return cond_generation is None or cond_generation == generation


def _failure(status: Mapping[str, Any]) -> str | None:
    """A short description of why the last run failed, or None when it did not fail."""
    stalled = _condition(status, "Stalled")
    failed = status.get("phase") == "Failed" or _is_true(stalled)
    if not failed:
        return None
    last_run = status.get("lastRun") or {}
    parts = [
        str(x)
        for x in (
            last_run.get("outcome") or (stalled or {}).get("reason"),
            last_run.get("message") or (stalled or {}).get("message"),
        )
        if x
    ]
    return _shorten(": ".join(parts) or "no details")


def _describe(status: Mapping[str, Any], ready: Mapping[str, Any] | None) -> str:
    phase = status.get("phase")
    parts = []
    if phase:
        parts.append(f"phase {phase}")
    if ready is not None and (ready.get("reason") or ready.get("message")):
        parts.append(": ".join(str(x) for x in (ready.get("reason"), ready.get("message")) if x))
    return f" ({_shorten('; '.join(parts))})" if parts else ""


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
