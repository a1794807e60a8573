"""What a pod waits for, and whether a DatabaseMigration satisfies it (pure, no I/O).

The webhook, the event-driven release and the periodic sweep all decide with this one module, so
the pod that was gated and the pod that gets released are judged by the same rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from dbmigrate_operator import identity, versions
from dbmigrate_operator.constants import (
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
    # The rollout the pod belongs to (its template hash; a pod of no controller: its name): a pin counts
    # the versions only for a rollout checked against their database (identity.verified).
    rollout: str = ""

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
    labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None, pod_name: str = ""
) -> Requirement | None:
    """The requirement a pod declares, or None when the pod did not opt in (no or empty label)."""
    name = (labels or {}).get(WAIT_FOR_LABEL, "").strip()
    if not name:
        return None
    pin = versions.parse_pin((annotations or {}).get(WAIT_FOR_VERSION_ANNOTATION))
    if pin is None:
        return Requirement(migration=name)
    return Requirement(migration=name, app=pin.app, version=pin.version, rollout=rollout_of(labels, pod_name))


def rollout_of(labels: Mapping[str, str] | None, pod_name: str = "") -> str:
    """Which rollout a pod belongs to, as far as the database check goes: the pod template hash a
    ReplicaSet (or a StatefulSet's revision) puts on its pods; a pod of no controller is its own
    (``pod/<name>``; empty before the API named it, which no check ever verifies)."""
    labels = labels or {}
    for key in ("pod-template-hash", "controller-revision-hash"):
        if value := str(labels.get(key) or "").strip():
            return value
    return f"pod/{pod_name}" if pod_name else ""


def has_gate(pod: Mapping[str, Any]) -> bool:
    """Whether the pod still carries our scheduling gate."""
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(isinstance(g, Mapping) and g.get("name") == SCHEDULING_GATE for g in gates)


def evaluate(requirement: Requirement, migration: Mapping[str, Any] | None) -> Verdict:
    """Whether `migration` (the DatabaseMigration object, or None when absent) meets `requirement`.

    Label alone: Ready for the current generation — the Ready condition is True and both it and
    status.observedGeneration match metadata.generation, so a just-edited spec is not mistaken for
    an applied one; and, when status.database is recorded, it names the database of the current
    spec. With a version pin: status.database names the database of the current spec (`identity`)
    and the version is applied there (`versions.pin_state`), whatever the generation: a later spec
    change of anything but the database, or a failing newer run, does not take an applied schema away;
    and, when the versions carry a fingerprint and spec.databaseCheck is on, the pod's rollout was
    checked against that database (`identity.verified`; else `DatabaseNotVerified`, and the release
    pass asks for the check).
    """
    what = f"{KIND} {requirement.migration}"
    if migration is None:
        return Verdict(False, "MigrationNotFound", f"waiting for {what}: it does not exist (yet)")

    status = migration.get("status") or {}
    if requirement.version is not None:
        return _evaluate_pin(requirement, migration, what)

    generation = (migration.get("metadata") or {}).get("generation")
    ready = _condition(status, "Ready")
    recorded_elsewhere = bool(identity.recorded(status)) and identity.mismatch(migration) is not None
    if _is_true(ready) and _generation_matches(generation, status, ready) and not recorded_elsewhere:
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
    if recorded_elsewhere:
        detail = str(identity.mismatch(migration))
    elif ready is not None and _is_true(ready):
        detail = f"generation {generation} is not applied yet (observed {observed})"
    else:
        detail = f"not Ready yet{_describe(status, ready)}"
    return Verdict(False, "MigrationNotReady", f"waiting for {what}: {detail}")


def _evaluate_pin(requirement: Requirement, migration: Mapping[str, Any], what: str) -> Verdict:
    pin = requirement.pin
    status = migration.get("status") or {}
    other_database = identity.mismatch(migration)
    state = versions.pin_state(versions.Pin(str(requirement.version), requirement.app), status)
    unverified = (
        state.met
        and other_database is None
        and identity.needs_check(migration)
        and not (requirement.rollout and identity.verified(migration, requirement.rollout))
    )
    if state.met and other_database is None and not unverified:
        return Verdict(True, "VersionApplied", f"version {pin} is applied by {what}")
    if unverified:
        return Verdict(
            False, CHECK_REASON, f"waiting for version {pin} of {what}: {_check_detail(migration)}"
        )
    if other_database is not None:
        detail, reason = other_database, "DatabaseNotRecorded"
    else:
        current = status.get("currentVersion")
        detail = "not applied yet" + (
            f" (current version: {current})" if current else " (no version applied yet)"
        )
        reason = "VersionNotApplied"
        if state.unverifiable:
            detail += (
                f"; it is not among the {state.listed} newest applied revisions the operator knows, and "
                f"{state.omitted} older ones are not listed, so it cannot be verified: pin a newer revision"
            )
    failure = _failure(status)
    if failure is not None:
        return Verdict(
            False,
            "MigrationFailed",
            f"waiting for version {pin} of {what}: {detail}; its migration failed ({failure}); "
            "new pods stay gated, pods already running keep serving",
        )
    return Verdict(False, reason, f"waiting for version {pin} of {what}: {detail}")


# The verdict of a pin whose version is applied but whose rollout is not verified yet: the release pass
# asks the controller for a check of these rollouts (database_check.py).
CHECK_REASON = "DatabaseNotVerified"


def _check_detail(migration: Mapping[str, Any]) -> str:
    status = migration.get("status") or {}
    last = identity.check(status).get("last") or {}
    recorded = identity.short(str(identity.recorded(status).get("fingerprint") or ""))
    text = (
        "it is applied; a read-only check that its Secret still points at the database the versions "
        f"were recorded for (fingerprint {recorded}) runs before this rollout's pods start"
    )
    if isinstance(last, Mapping) and last.get("outcome") not in (None, "", "Succeeded"):
        text += (
            f"; the last check failed ({_shorten(str(last.get('message') or last.get('outcome')))}), retried"
        )
    return text


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
