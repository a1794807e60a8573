"""The database check: is the database a Secret names now the one the recorded versions belong to?

Why a module of its own: the operator never reads Secrets, so a Secret changed in place (same name and
keys, another database) is invisible to it. Before the versions may release the pods of a new rollout
pinned to them, a read-only check Job with the migration Job's image and Secret wiring runs
``dbmigrate-runner status``, whose report carries the database's fingerprint. This module decides,
within a reconcile pass, which check Job to start, what a finished one means and what status records
(``status.databaseCheck``). Pure: state in, actions out. :func:`check_step` reads as its steps: the
check Jobs read newest first (each an answer, :func:`_answer`, or a failure, :func:`_failure`), what
status records (:func:`_record`), then a new check Job when one is due (:func:`_new_check`).

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

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dbmigrate_operator import identity
from dbmigrate_operator import jobs as j
from dbmigrate_operator.actions import Action, CreateJob, DeleteJob, EmitEvent
from dbmigrate_operator.jobstate import order_key, parse_time, pods_of
from dbmigrate_operator.results import Result, finished_as, read_result
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


@dataclass
class _Reading:
    """What the finished check Jobs say, read one after another: ``state`` is status.databaseCheck as
    they leave it (``verified`` not yet cut to :data:`VERIFIED_KEPT`), ``active`` that a check is under
    way (a Job running, or a failed one kept until its retry is due)."""

    state: dict[str, Any]
    actions: list[Action] = field(default_factory=list)
    events: list[EmitEvent] = field(default_factory=list)
    active: bool = False
    recheck_at: datetime | None = None

    def then(self, later: _Reading) -> _Reading:
        """This reading followed by ``later`` (whose state already builds on this one's)."""
        return _Reading(
            state=later.state,
            actions=[*self.actions, *later.actions],
            events=[*self.events, *later.events],
            active=self.active or later.active,
            recheck_at=later.recheck_at if later.recheck_at is not None else self.recheck_at,
        )


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
    not verified yet. ``running``: a migration Job runs or is being created (no check meanwhile).
    The steps: what the versions' fingerprint is → the check Jobs read → what status records → a new
    check Job, when one is due and may run."""
    fingerprint = str(identity.recorded(new).get("fingerprint") or "")
    before = identity.check(cr.get("status") or {})  # what status holds; `new` is built without it
    read = _read_checks(check_jobs, pods, before, fingerprint, now, settings)
    if (record := _record(before, read.state)) is not None:
        new["databaseCheck"] = record
    starting = _new_check(
        cr, wanted, read, fingerprint, now, settings, running=running, moved=identity.moved(new) is not None
    )
    return CheckStep(actions=[*read.actions, *starting], events=read.events, recheck_at=read.recheck_at)


def _read_checks(
    check_jobs: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    before: Mapping[str, Any],
    fingerprint: str,
    now: datetime,
    settings: Settings,
) -> _Reading:
    """The check Jobs, newest first, read into the state status holds (``before``): a running one only
    says a check is under way; a finished one is an answer (:func:`_answer`) or a failure
    (:func:`_failure`). Verified rollouts of another fingerprint are dropped: they were verified
    against a database the versions are no longer recorded for."""
    read = _Reading(state={**before, "verified": _still_verified(before, fingerprint)})
    for job in sorted(check_jobs, key=order_key, reverse=True):
        if (job.get("metadata") or {}).get("deletionTimestamp"):
            continue
        jpods = pods_of(job, pods)
        if finished_as(job, jpods) is None:
            read.active = True
            continue
        result = read_result(job, jpods, settings)
        found = _found_fingerprint(result)
        if result.outcome == Outcome.SUCCEEDED.value and found:
            read = read.then(_answer(read.state, job, found, fingerprint, now))
        else:
            read = read.then(_failure(read.state, _name(job), result, now))
    return read


def _still_verified(before: Mapping[str, Any], fingerprint: str) -> list[dict[str, Any]]:
    """The verified rollouts status holds that were verified against ``fingerprint``."""
    return [
        dict(e)
        for e in before.get("verified") or []
        if isinstance(e, dict) and e.get("fingerprint") == fingerprint
    ]


def _found_fingerprint(result: Result) -> str:
    """The fingerprint of the database a check Job's runner connected to ("" when its report has none)."""
    return str(((result.report.database if result.report else None) or {}).get("fingerprint") or "")


def _answer(
    state: Mapping[str, Any], job: dict[str, Any], found: str, fingerprint: str, now: datetime
) -> _Reading:
    """A check that read the fingerprint ``found``: recorded as ``last``, its Job deleted. The versions'
    own database verifies the Job's rollouts; another database is ``moved`` (nothing to compare with
    when the versions carry no fingerprint)."""
    jname = _name(job)
    out = dict(state)
    out["last"] = {
        "job": jname,
        "outcome": Outcome.SUCCEEDED.value,
        "at": timestamp(now),
        "fingerprint": found,
    }
    read = _Reading(state=out, actions=[DeleteJob(jname, "database check recorded")])
    if found == fingerprint:
        rollouts = j.check_rollouts(job)
        kept = [e for e in out["verified"] if e.get("rollout") not in rollouts]
        out["verified"] = kept + [
            {"rollout": r, "fingerprint": found, "at": timestamp(now)} for r in rollouts
        ]
        read.events.append(_verified_event(jname, found, rollouts))
    elif fingerprint:
        out["moved"] = found
        read.events.append(_moved_event(found, fingerprint))
    return read


def _verified_event(jname: str, found: str, rollouts: list[str]) -> EmitEvent:
    return EmitEvent(
        "Normal",
        REASON_VERIFIED,
        f"check Job {jname}: the Secret still points at the database the versions were "
        f"recorded for (fingerprint {identity.short(found)}); pods of rollouts "
        f"{', '.join(rollouts)} may start",
    )


def _moved_event(found: str, fingerprint: str) -> EmitEvent:
    return EmitEvent(
        "Warning",
        REASON_MOVED,
        "the Secret now points at another database (fingerprint "
        f"{identity.short(found)}, the versions were recorded for "
        f"{identity.short(fingerprint)}): they no longer count, "
        "pinned pods stay gated, and a run against the new database starts",
    )


def _failure(state: Mapping[str, Any], jname: str, result: Result, now: datetime) -> _Reading:
    """A check that read no fingerprint: recorded as ``last`` (counted in ``attempts`` and said once,
    the first pass that sees it), its Job kept until :data:`RETRY_SECONDS` after that, then deleted so
    that a new one starts."""
    out = dict(state)
    read = _Reading(state=out)
    last = dict(out.get("last") or {})
    if last.get("job") != jname:
        message = _failure_message(result)
        last = {"job": jname, "outcome": result.outcome, "message": message, "at": timestamp(now)}
        out["last"] = last
        out["attempts"] = int(out.get("attempts") or 0) + 1
        read.events.append(
            EmitEvent(
                "Warning",
                REASON_FAILED,
                f"check Job {jname} failed: {message}; pinned pods stay gated, retried",
            )
        )
    retry_at = (parse_time(last.get("at")) or NEVER) + timedelta(seconds=RETRY_SECONDS)
    if now >= retry_at:
        read.actions.append(DeleteJob(jname, "failed database check, retried with a new Job"))
    else:
        read.active, read.recheck_at = True, retry_at  # kept until the retry is due
    return read


def _failure_message(result: Result) -> str:
    """Why a check gave no answer: the run's own message, or an image too old to report a fingerprint."""
    if result.outcome == Outcome.SUCCEEDED.value:
        return (
            "the runner image reports no database fingerprint (older than the operator); use a newer "
            "runner image or set spec.databaseCheck: Disabled"
        )
    return result.message or result.outcome


def _record(before: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any] | None:
    """status.databaseCheck as the reading leaves it, the newest verified rollouts only; None while
    there is nothing to say (no check yet)."""
    record = {**state, "verified": list(state["verified"])[-VERIFIED_KEPT:]}
    return record if before or len(record) > 1 or record["verified"] else None


def _new_check(
    cr: dict[str, Any],
    wanted: frozenset[str],
    read: _Reading,
    fingerprint: str,
    now: datetime,
    settings: Settings,
    *,
    running: bool,
    moved: bool,
) -> list[Action]:
    """One check Job for the ``wanted`` rollouts not verified yet, unless none may run now: the
    versions carry no fingerprint, the check is disabled, a migration Job runs (or starts), a check
    is under way, or a check already found another database (its run comes first)."""
    done = {str(e.get("rollout")) for e in read.state["verified"]}
    pending = sorted(r for r in wanted if r and r not in done)
    blocked = running or read.active or moved or not identity.check_enabled(cr.get("spec") or {})
    if not pending or not fingerprint or blocked:
        return []
    attempt = int(read.state.get("attempts") or 0)
    manifest = j.build_check_job(
        cr, rollouts=pending, fingerprint=fingerprint, attempt=attempt, settings=settings, now=now
    )
    return [CreateJob(manifest)]


def _name(job: Mapping[str, Any]) -> str:
    return str((job.get("metadata") or {}).get("name") or "")
