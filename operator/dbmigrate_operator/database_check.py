"""The database check: is the database a Secret names now the one the recorded versions belong to?

Why a module of its own: the operator never reads Secrets, so a Secret changed in place (same name and
keys, another database) is invisible to it. Before the versions may release the pods of a new rollout
pinned to them, a read-only check Job with the migration Job's image and Secret wiring runs
``dbmigrate-runner status``, whose report carries the database's fingerprint. This module decides,
within a reconcile pass, which check Job to start, what a finished one means and what status records
(``status.databaseCheck``). Pure: state in, actions out.

- The rollouts to check come from the gate's release pass (``check_requests.py``): the pod template
  hashes of gated pods whose pin is applied but not verified.
- Same fingerprint as ``status.database.fingerprint``: the rollouts are recorded as verified
  (``verified``), and the release pass lets their pods go.
- Another fingerprint: ``moved`` records it. Pins stop counting the versions (``identity.mismatch``),
  and the run hash covers ``moved``, so a run against the new database starts; its report replaces the
  versions, and the rollouts are checked again against the new record.
- A failed check (database unreachable, a runner image that reports no fingerprint...): the pods stay
  gated, ``last`` says why, and a new check Job starts after :data:`RETRY_SECONDS`.

No check while a migration Job runs (its report records the database itself), for versions recorded
without a fingerprint (nothing to compare with), or with ``spec.databaseCheck: Disabled``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dbmigrate_operator import identity
from dbmigrate_operator import jobs as j
from dbmigrate_operator.actions import Action, CreateJob, DeleteJob, EmitEvent
from dbmigrate_operator.jobstate import order_key, parse_time, pods_of
from dbmigrate_operator.results import finished_as, read_result
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.status import timestamp
from dbmigrate_runner.report import Outcome

RETRY_SECONDS = 30  # after a failed check, the next one starts this much later
VERIFIED_KEPT = 20  # verified rollouts remembered per resource (the newest)

NEVER = datetime.min.replace(tzinfo=UTC)  # a failed check with no readable time: retry at once

REASON_VERIFIED = "DatabaseVerified"
REASON_MOVED = "DatabaseMoved"
REASON_FAILED = "DatabaseCheckFailed"


@dataclass
class CheckStep:
    actions: list[Action] = field(default_factory=list)
    events: list[EmitEvent] = field(default_factory=list)
    recheck_at: datetime | None = None


def check_step(
    cr: dict[str, Any],
    check_jobs: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    wanted: frozenset[str],
    new: dict[str, Any],
    now: datetime,
    settings: Settings,
    *,
    running: bool,
) -> CheckStep:
    """Read finished check Jobs into ``new["databaseCheck"]``, and start one for the ``wanted`` rollouts
    not verified yet. ``running``: a migration Job runs or is being created (no check meanwhile)."""
    out = CheckStep()
    before = identity.check(cr.get("status") or {})  # what status holds; `new` is built without it
    state = dict(before)
    fingerprint = str(identity.recorded(new).get("fingerprint") or "")
    verified = [
        dict(e)
        for e in state.get("verified") or []
        if isinstance(e, dict) and e.get("fingerprint") == fingerprint
    ]
    active = False
    for job in sorted(check_jobs, key=order_key, reverse=True):
        meta = job.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        jname, jpods = str(meta.get("name") or ""), pods_of(job, pods)
        if finished_as(job, jpods) is None:
            active = True
            continue
        result = read_result(job, jpods, settings)
        found = str(((result.report.database if result.report else None) or {}).get("fingerprint") or "")
        if result.outcome == Outcome.SUCCEEDED.value and found:
            state["last"] = {
                "job": jname,
                "outcome": result.outcome,
                "at": timestamp(now),
                "fingerprint": found,
            }
            out.actions.append(DeleteJob(jname, "database check recorded"))
            if found == fingerprint:
                rollouts = j.check_rollouts(job)
                verified = [e for e in verified if e.get("rollout") not in rollouts]
                verified += [{"rollout": r, "fingerprint": found, "at": timestamp(now)} for r in rollouts]
                out.events.append(
                    EmitEvent(
                        "Normal",
                        REASON_VERIFIED,
                        f"check Job {jname}: the Secret still points at the database the versions were "
                        f"recorded for (fingerprint {identity.short(found)}); pods of rollouts "
                        f"{', '.join(rollouts)} may start",
                    )
                )
            elif fingerprint:
                state["moved"] = found
                out.events.append(
                    EmitEvent(
                        "Warning",
                        REASON_MOVED,
                        "the Secret now points at another database (fingerprint "
                        f"{identity.short(found)}, the versions were recorded for "
                        f"{identity.short(fingerprint)}): they no longer count, "
                        "pinned pods stay gated, and a run against the new database starts",
                    )
                )
            continue
        message = result.message or result.outcome
        if result.outcome == Outcome.SUCCEEDED.value:
            message = (
                "the runner image reports no database fingerprint (older than the operator); use a newer "
                "runner image or set spec.databaseCheck: Disabled"
            )
        last = dict(state.get("last") or {})
        if last.get("job") != jname:
            last = {"job": jname, "outcome": result.outcome, "message": message, "at": timestamp(now)}
            state["last"] = last
            state["attempts"] = int(state.get("attempts") or 0) + 1
            out.events.append(
                EmitEvent(
                    "Warning",
                    REASON_FAILED,
                    f"check Job {jname} failed: {message}; pinned pods stay gated, retried",
                )
            )
        retry_at = (parse_time(last.get("at")) or NEVER) + timedelta(seconds=RETRY_SECONDS)
        if now >= retry_at:
            out.actions.append(DeleteJob(jname, "failed database check, retried with a new Job"))
        else:
            active = True  # kept until the retry is due
            out.recheck_at = retry_at
    state["verified"] = verified[-VERIFIED_KEPT:]
    if before or len(state) > 1 or verified:
        new["databaseCheck"] = state
    done = {str(e.get("rollout")) for e in verified}
    pending = sorted(r for r in wanted if r and r not in done)
    if (
        pending
        and fingerprint
        and identity.check_enabled(cr.get("spec") or {})
        and not running
        and not active
        and identity.moved(new) is None
    ):
        attempt = int(state.get("attempts") or 0)
        manifest = j.build_check_job(
            cr, rollouts=pending, fingerprint=fingerprint, attempt=attempt, settings=settings, now=now
        )
        out.actions.append(CreateJob(manifest))
    return out
