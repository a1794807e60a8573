"""A migration waiting for a table lock, shown while it waits: when to read the runner's log, and
what status and the Events then say.

Why: the runner has no API access and its report is read when the run ends, so a rollout stuck
behind a long transaction showed nothing but "JobRunning" for as long as the retries lasted. The
runner logs each lock timeout as one masked JSON line (:class:`dbmigrate_runner.lockwait_line.LockWait`,
the format both sides share); the operator reads the tail of the running Pod's log on a fixed grid
of times and shows the latest wait in the Reconciling condition, ``status.lockWait`` and one
``WaitingForLock`` Event per blocker (not one per read).

The cost is bounded and known: no read before the first lock timeout can have been logged (the
container's start plus the Job's ``lock_timeout`` plus a second), then one ``pods/log`` GET of at
most :data:`TAIL_LINES` lines / :data:`LIMIT_BYTES` bytes every ``settings.lock_watch_seconds``
while that container runs. A migration that is done within its first lock timeout costs nothing.
Pure; the controller does the read (``Kube.read_pod_log``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dbmigrate_operator import constants as c
from dbmigrate_operator import jobs as j
from dbmigrate_operator.actions import EmitEvent
from dbmigrate_operator.jobstate import job_verdict, parse_time, pods_of
from dbmigrate_runner.errors import ConfigError
from dbmigrate_runner.lock_policy import DEFAULT_TIMEOUT, parse_duration
from dbmigrate_runner.lockwait_line import LockWait

TAIL_LINES = 40  # a wait's line is among the last few: the runner logs little while it waits
LIMIT_BYTES = 16 * 1024
EVENT_REASON = "WaitingForLock"
FIRST_READ_MARGIN = 1.0  # seconds after the first lock timeout could have been logged


@dataclass(frozen=True)
class Read:
    """A Pod whose log is to be read now: ``due`` is the grid point this read stands for."""

    namespace: str
    pod: str
    uid: str
    due: datetime


def lock_timeout(job: dict[str, Any]) -> float:
    """The ``lock_timeout`` (seconds) the Job's runner uses: its ``DBMIGRATE_LOCKING_TIMEOUT``
    (jobs.locking_env), else the runner's default; 0: off (then there is nothing to watch)."""
    for container in ((job.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == "DBMIGRATE_LOCKING_TIMEOUT" and env.get("value") not in (None, ""):
                try:
                    return parse_duration(str(env["value"]), "DBMIGRATE_LOCKING_TIMEOUT")
                except ConfigError:  # the runner refuses it as a ConfigError: nothing to watch
                    return 0.0
    return DEFAULT_TIMEOUT


def running_since(pod: dict[str, Any]) -> datetime | None:
    """When the runner's container started, while it runs (None: not running)."""
    if (pod.get("status") or {}).get("phase") != "Running" or (pod.get("metadata") or {}).get(
        "deletionTimestamp"
    ):
        return None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == c.CONTAINER_NAME:
            return parse_time(((status.get("state") or {}).get("running") or {}).get("startedAt"))
    return None


def _grid(job: dict[str, Any], pod: dict[str, Any], every: float) -> tuple[datetime, float] | None:
    started, timeout = running_since(pod), lock_timeout(job)
    if started is None or timeout <= 0 or every <= 0:
        return None
    return started + timedelta(seconds=timeout + FIRST_READ_MARGIN), every


def last_due(job: dict[str, Any], pod: dict[str, Any], now: datetime, every: float) -> datetime | None:
    """The latest read time at or before ``now`` (None: none yet, or nothing to watch)."""
    grid = _grid(job, pod, every)
    if grid is None or now < grid[0]:
        return None
    first, step = grid
    return first + timedelta(seconds=step * math.floor((now - first).total_seconds() / step))


def next_due(job: dict[str, Any], pod: dict[str, Any], now: datetime, every: float) -> datetime | None:
    """The first read time after ``now`` (the controller's recheck then)."""
    grid = _grid(job, pod, every)
    if grid is None:
        return None
    first, step = grid
    if now < first:
        return first
    return first + timedelta(seconds=step * (math.floor((now - first).total_seconds() / step) + 1))


def message(job_name: str, wait: LockWait) -> str:
    """The Reconciling condition's message while a migration waits (everything in it came masked)."""
    who = wait.blocker or "a lock (its holder was not seen)"
    when = f" at {wait.at}" if wait.at else ""
    parts = [
        f"Job {job_name}: {wait.migration} is waiting for {who}; "
        f"attempt {wait.attempt} of {wait.retries} timed out{when}"
    ]
    if wait.retry_in_s is not None:
        parts.append(f"next attempt {wait.retry_in_s:.0f} s later")
    if wait.budget_left_s is not None:
        parts.append(f"{wait.budget_left_s:.0f} s of the lock budget left")
    return "; ".join(parts)


def status_entry(job_name: str, wait: LockWait) -> dict[str, Any]:
    """``status.lockWait``: the latest wait of the running Job, structured (cleared when it ends)."""
    entry: dict[str, Any] = {
        "job": job_name,
        "migration": wait.migration,
        "attempt": wait.attempt,
        "retries": wait.retries,
        "blocker": wait.blocker,
        "blockerPid": wait.blocker_pid,
        "lockTimeoutMs": wait.lock_timeout_ms,
        "retryInSeconds": wait.retry_in_s,
        "budgetLeftSeconds": wait.budget_left_s,
        "loggedAt": wait.at,
    }
    return {k: v for k, v in entry.items() if v is not None}


def event(old: dict[str, Any], entry: dict[str, Any], text: str) -> list[EmitEvent]:
    """One Warning per blocker of a migration of a Job: none when status already showed that wait
    (a later attempt behind the same session updates status, not the Events)."""
    before = old.get("lockWait") or {}
    same = all(before.get(k) == entry.get(k) for k in ("job", "migration", "blockerPid"))
    return [] if same else [EmitEvent("Warning", EVENT_REASON, text)]


def reads(
    jobs: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    now: datetime,
    every: float,
    done: dict[str, datetime],
) -> list[tuple[str, Read]]:
    """(Job uid, read) for each running migration container whose current grid point has not been
    read yet (``done``: pod uid → the grid point last read). Plan Jobs apply nothing: not watched."""
    out = []
    for job in jobs:
        meta = job.get("metadata") or {}
        if j.is_plan_job(job) or j.is_check_job(job):  # neither takes a table lock
            continue
        if job_verdict(job) is not None or meta.get("deletionTimestamp"):
            continue
        for pod in pods_of(job, pods):
            pmeta = pod.get("metadata") or {}
            due, uid = last_due(job, pod, now, every), str(pmeta.get("uid") or "")
            if due is not None and uid and done.get(uid) != due:
                read = Read(str(pmeta.get("namespace")), str(pmeta.get("name")), uid, due)
                out.append((str(meta.get("uid")), read))
    return out
