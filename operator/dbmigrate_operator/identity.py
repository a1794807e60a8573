"""Which database the versions in a DatabaseMigration's status belong to (pure).

Versions are facts about one database. `status.database` says which one, next to the versions:

- ``ref``: a digest of what the spec says the database is (`spec.database`, with the CRD's key
  defaults, and `spec.tool`), computed by the operator from the spec of the run that reported them;
- ``fingerprint``: what the runner found when it connected (its report's ``database``: a digest of
  the server's system identifier and the database name, the server's address standing in for the
  identifier where the user may not read it — never the name itself, the URL or a password: they
  are the Secret's). Empty when the runner image predates it;
- ``job``: the Job whose report the versions come from.

Rules (the controller records, the gate and the webhook read):

- A pin, or the label alone, counts the recorded versions only when ``ref`` equals the ref of the
  spec as it is now: after `spec.database` or `spec.tool` changed, pinned pods wait for the run
  against the new database. Versions without a record are not counted for a pin.
- A report whose ref or fingerprint differs from the recorded one replaces the versions (and the
  Alembic ancestry) with the new database's: never merged.

What the ref cannot see: the *content* of a Secret (the operator never reads Secrets). A Secret
changed in place keeps the same ref. `status.databaseCheck` closes that for version pins: before a
new rollout's pinned pods are released, a read-only check Job reports which database the Secret
names now (`database_check.py`); a pin counts the versions only for a rollout verified against the
recorded fingerprint, and a check that found another database (``moved``) stops them from counting
at all until the run against it records its own (docs/gating.md, "A changed Secret").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from dbmigrate_operator import jobs

REF_CHARS = 16


def ref(spec: Mapping[str, Any]) -> str:
    """The database a spec names, as a digest: Secret names and keys and the tool, never values."""
    essence = {"database": jobs.database_ref(dict(spec)), "tool": spec.get("tool") or "aerich"}
    raw = json.dumps(essence, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:REF_CHARS]


def recorded(status: Mapping[str, Any]) -> Mapping[str, Any]:
    """status.database, or an empty record."""
    record = status.get("database")
    return record if isinstance(record, Mapping) else {}


def mismatch(migration: Mapping[str, Any]) -> str | None:
    """Why the versions in this DatabaseMigration's status do not count for its current spec, or
    None when they do."""
    status = migration.get("status") or {}
    record_ref = recorded(status).get("ref")
    if not record_ref:
        return "its applied versions are not recorded with the database they belong to (a run records them)"
    if record_ref != ref(migration.get("spec") or {}):
        return (
            "spec.database or spec.tool changed since its versions were recorded: waiting for the run "
            "against the new database"
        )
    if (other := moved(status)) is not None:
        return (
            f"the Secret now points at another database (fingerprint {short(other)}; the versions are "
            f"recorded for {short(recorded(status).get('fingerprint') or '')}): waiting for the run "
            "against it"
        )
    return None


def short(fingerprint: str) -> str:
    """A fingerprint in a message: its first 12 digits (it is a digest, never a name)."""
    return (fingerprint[:12] + "…") if fingerprint else "none"


def check(status: Mapping[str, Any]) -> Mapping[str, Any]:
    """status.databaseCheck, or an empty one."""
    value = status.get("databaseCheck")
    return value if isinstance(value, Mapping) else {}


def moved(status: Mapping[str, Any]) -> str | None:
    """The fingerprint a check found when it is not the one the versions are recorded for: the
    Secret now names another database. None otherwise (also once the run against it recorded it)."""
    found = str(check(status).get("moved") or "")
    if found and found != str(recorded(status).get("fingerprint") or ""):
        return found
    return None


def check_enabled(spec: Mapping[str, Any]) -> bool:
    """spec.databaseCheck: ``OnRollout`` (the default) or ``Disabled``."""
    return (spec.get("databaseCheck") or "OnRollout") != "Disabled"


def needs_check(migration: Mapping[str, Any]) -> bool:
    """Must a pinned pod's rollout be verified before the versions count for it? When the check is
    on and the versions carry a fingerprint to compare with (an older runner image reports none:
    there is nothing to verify against; its next run records one)."""
    status = migration.get("status") or {}
    return check_enabled(migration.get("spec") or {}) and bool(recorded(status).get("fingerprint"))


def verified(migration: Mapping[str, Any], rollout: str) -> bool:
    """Was this rollout (a pod template hash) checked against the database the versions are for?"""
    status = migration.get("status") or {}
    fingerprint = recorded(status).get("fingerprint")
    return any(
        isinstance(entry, Mapping)
        and entry.get("rollout") == rollout
        and entry.get("fingerprint") == fingerprint
        for entry in check(status).get("verified") or []
    )


def record(
    reported: Mapping[str, Any] | None,
    job: str,
    job_hash: str,
    current_hash: str,
    current_ref: str,
    old: Mapping[str, Any],
) -> dict[str, str]:
    """status.database for versions taken from the report of Job `job` (run hash `job_hash`).

    The Job of the current run hash ran against the spec as it is now (the run hash covers
    spec.database and spec.tool): the current ref. An older Job keeps the ref recorded when it was
    current, if the record names it; otherwise its ref is unknown (empty) and pins wait for a run.
    """
    if job_hash == current_hash:
        ref_ = current_ref
    elif old.get("job") == job:
        ref_ = str(old.get("ref") or "")
    else:
        ref_ = ""
    out = {"ref": ref_, "job": job}
    # Always present (empty when not reported): status is written as a merge patch, which would keep
    # a previous record's value of a key left out.
    value = (reported or {}).get("fingerprint")
    out["fingerprint"] = value if isinstance(value, str) else ""
    return out


def same_database(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """May what status knows of `old`'s versions be kept next to `new`'s (the Alembic ancestry)?
    Only for the same ref and the same fingerprint (both empty counts as the same)."""
    same_ref = bool(old.get("ref")) and old.get("ref") == new.get("ref")
    return same_ref and (old.get("fingerprint") or "") == (new.get("fingerprint") or "")


def legacy(status: Mapping[str, Any], current_hash: str, current_ref: str) -> dict[str, str] | None:
    """A record for versions an older operator wrote without one, when no Job report is left to
    read: they belong to the current spec when its run is the last one and it succeeded."""
    if recorded(status) or not (status.get("currentVersion") or status.get("appliedVersions")):
        return None
    run = status.get("lastRun") or {}
    if run.get("runHash") != current_hash or run.get("outcome") != "Succeeded":
        return None
    return {"ref": current_ref, "job": str(run.get("job") or ""), "fingerprint": ""}
