"""A migration waiting for a table lock is shown while it waits (issue #22), not only after the run.

The runner logs each lock timeout as one masked JSON line (``lockwait_line.LockWait``: the one format both
sides use); the operator reads the tail of the running Pod's log on a bounded grid of times and shows
the latest wait in ``status.lockWait``, the Reconciling condition (``WaitingForLock``) and one Event
per blocker. Here: the line written by the runner's own logger and read back by the operator's
parser, the decision (pure), and the controller's pass with the reads counted.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from dbmigrate_operator import constants as c
from dbmigrate_operator import jobs as j
from dbmigrate_operator import lockwatch
from dbmigrate_operator.actions import EmitEvent, PatchStatus
from dbmigrate_operator.controller import Controller
from dbmigrate_operator.reconcile import decide
from dbmigrate_operator.settings import Settings
from dbmigrate_runner.lockwait_line import LOCK_WAIT_EVENT, LockWait, latest_lock_wait
from dbmigrate_runner.log import JsonLogger
from dbmigrate_runner.masking import Masker
from tests.operator.builders import T0, make_cr, running_pod, started
from tests.operator.test_ha import FakeKube, S
from tests.operator.test_reconcile import apply, first_job

PASSWORD = "s3cr3t-Pa55word"
BLOCKER = (
    "a lock on public.review held by pid 4711 (user 'app', app 'reporting', idle in transaction for 12 s)"
)


def runner_line(wait: LockWait, mask: Masker | None = None, ts: str | None = None) -> str:
    """The line exactly as the runner's logger writes it (masked values, one JSON object)."""
    out = io.StringIO()
    JsonLogger(out, mask=mask).warning(LOCK_WAIT_EVENT, "waited; retrying", **wait.fields())
    if ts is None:
        return out.getvalue()
    record = json.loads(out.getvalue())
    record["ts"] = ts
    return json.dumps(record) + "\n"


def wait_of(attempt: int = 3, pid: int = 4711, migration: str = "models:2_add_bio") -> LockWait:
    return LockWait(
        migration=migration,
        attempt=attempt,
        retries=20,
        lock_timeout_ms=3000,
        blocker=BLOCKER.replace("4711", str(pid)),
        blocker_pid=pid,
        retry_in_s=4.2,
        budget_left_s=571.0,
    )


# ---------------------------------------------------------------- the line: one format, both sides


def test_the_runners_line_reads_back_as_the_same_wait() -> None:
    wait = wait_of()
    got = latest_lock_wait("not json\n" + runner_line(wait))
    assert got is not None
    assert got.at  # the logger's timestamp comes along
    assert got == LockWait(**{**wait.fields(), "at": got.at})


def test_a_secret_in_the_blocker_is_masked_before_the_operator_ever_sees_it() -> None:
    wait = LockWait(
        "models:2", 1, 20, blocker=f"a lock held by pid 7 (query 'SELECT {PASSWORD}')", blocker_pid=7
    )
    line = runner_line(wait, Masker([PASSWORD]))
    got = latest_lock_wait(line)
    assert PASSWORD not in line
    assert got is not None
    assert got.blocker is not None
    assert PASSWORD not in got.blocker
    assert "pid 7" in got.blocker


def test_the_latest_wait_ends_when_the_run_moves_past_it() -> None:
    first, later = wait_of(1), wait_of(2)
    applying = json.dumps({"event": "migration.apply", "migration": "models:3_next"}) + "\n"
    retried = json.dumps({"event": "migration.apply", "migration": first.migration}) + "\n"
    ended = json.dumps({"event": "run.end", "msg": "upgrade succeeded"}) + "\n"
    got = latest_lock_wait(runner_line(first) + runner_line(later))
    assert got is not None
    assert got.attempt == 2
    assert latest_lock_wait(runner_line(first) + retried) is not None  # the same migration again
    assert latest_lock_wait(runner_line(first) + applying) is None
    assert latest_lock_wait(runner_line(first) + ended) is None
    # a tail cut mid-line, a line with the wrong types, a list: skipped, never an error
    cut = runner_line(first)[10:]
    bad = json.dumps({"event": LOCK_WAIT_EVENT, "migration": "m", "attempt": "3", "retries": 20}) + "\n"
    assert latest_lock_wait(cut + bad + "[1, 2]\n") is None


# ---------------------------------------------------------------- when to read (pure)


def _running(timeout: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    cr = make_cr(locking={"timeout": timeout}) if timeout is not None else make_cr()
    job = started(first_job(cr), T0)
    return job, running_pod(job, T0)


def test_no_read_before_the_first_lock_timeout_could_be_logged_then_one_per_period() -> None:
    job, pod = _running()  # the runner's default lock_timeout: 3 s
    first = T0 + timedelta(seconds=3 + lockwatch.FIRST_READ_MARGIN)
    assert lockwatch.last_due(job, pod, first - timedelta(milliseconds=1), 10) is None
    assert lockwatch.next_due(job, pod, T0, 10) == first
    assert lockwatch.last_due(job, pod, first + timedelta(seconds=9.9), 10) == first
    assert lockwatch.last_due(job, pod, first + timedelta(seconds=25), 10) == first + timedelta(seconds=20)
    assert lockwatch.next_due(job, pod, first + timedelta(seconds=25), 10) == first + timedelta(seconds=30)
    # reads over a long wait: one per period, whatever the number of passes
    passes = [first + timedelta(seconds=s / 4) for s in range(4 * 60)]
    assert len({lockwatch.last_due(job, pod, now, 10) for now in passes}) == 6


def test_nothing_is_read_when_locking_is_off_or_the_job_is_a_plan_or_over() -> None:
    job, pod = _running("0")
    assert lockwatch.next_due(job, pod, T0, 10) is None
    job, pod = _running("30s")
    assert lockwatch.next_due(job, pod, T0, 10) == T0 + timedelta(seconds=31)
    later = T0 + timedelta(minutes=5)
    assert [r.pod for _, r in lockwatch.reads([job], [pod], later, 10, {})] == [pod["metadata"]["name"]]
    done = {pod["metadata"]["uid"]: lockwatch.last_due(job, pod, later, 10)}
    assert lockwatch.reads([job], [pod], later, 10, done) == []  # this grid point was read
    labels = {**job["metadata"]["labels"], j.JOB_KIND_LABEL: j.PLAN_KIND}
    plan_job = {**job, "metadata": {**job["metadata"], "labels": labels}}
    assert lockwatch.reads([plan_job], [pod], later, 10, {}) == []
    failed = {**job, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert lockwatch.reads([failed], [pod], later, 10, {}) == []


# ---------------------------------------------------------------- the decision (pure)


def _waiting_cr() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    cr = make_cr()
    job = started(first_job(cr), T0)
    cr = apply(cr, decide(cr, [], [], T0, S))
    return cr, job, running_pod(job, T0)


def test_a_wait_shows_in_status_and_one_event_per_blocker() -> None:
    cr, job, pod = _waiting_cr()
    now, uid, name = T0 + timedelta(seconds=30), job["metadata"]["uid"], job["metadata"]["name"]
    plan = decide(cr, [job], [pod], now, S, lock_waits={uid: wait_of(3)})
    (cond,) = [x for x in plan.status["conditions"] if x["type"] == c.RECONCILING]
    assert cond["status"] == "True"
    assert cond["reason"] == "WaitingForLock"
    for words in (f"Job {name}", "models:2_add_bio", "pid 4711", "'reporting'", "attempt 3 of 20", "571 s"):
        assert words in cond["message"], cond["message"]
    assert plan.status["lockWait"]["blockerPid"] == 4711
    assert plan.status["lockWait"]["job"] == name
    (event,) = plan.of(EmitEvent)
    assert (event.type, event.reason) == ("Warning", "WaitingForLock")
    assert "pid 4711" in event.message
    # Ready=False says it too (kubectl describe, kubectl wait)
    (ready,) = [x for x in plan.status["conditions"] if x["type"] == c.READY]
    assert "pid 4711" in ready["message"]
    # the next attempt behind the same session: status follows, no second Event
    cr = apply(cr, plan)
    plan = decide(cr, [job], [pod], now + timedelta(seconds=10), S, lock_waits={uid: wait_of(4)})
    assert plan.of(EmitEvent) == []
    assert plan.status["lockWait"]["attempt"] == 4
    # another session blocks it now: one more Event
    cr = apply(cr, plan)
    plan = decide(cr, [job], [pod], now + timedelta(seconds=20), S, lock_waits={uid: wait_of(5, pid=99)})
    assert [e.reason for e in plan.of(EmitEvent)] == ["WaitingForLock"]
    # the wait is over: the status field goes (a merge patch deletes it), back to JobRunning
    cr = apply(cr, plan)
    plan = decide(cr, [job], [pod], now + timedelta(seconds=30), S, lock_waits={})
    (patch,) = plan.of(PatchStatus)
    assert patch.patch["lockWait"] is None
    assert "lockWait" not in plan.status
    assert next(x["reason"] for x in plan.status["conditions"]) == "JobRunning"


def test_a_running_job_is_looked_at_again_at_the_next_read() -> None:
    cr, job, pod = _waiting_cr()
    now = T0 + timedelta(seconds=30)
    plan = decide(cr, [job], [pod], now, S)
    due = lockwatch.next_due(job, pod, now, S.lock_watch_seconds)
    assert due is not None
    assert plan.recheck_after is not None
    assert plan.recheck_after == (due - now).total_seconds() + 1
    off = decide(cr, [job], [pod], now, Settings(lock_watch_seconds=0))
    assert off.recheck_after is None


# ---------------------------------------------------------------- the controller's pass


def _controller(kube: FakeKube, every: float) -> Controller:
    controller = Controller(Settings(lock_watch_seconds=every))
    controller.kube = kube  # type: ignore[assignment]
    controller.mark_unsure("shop", "shop-db")
    return controller


async def test_the_pass_reads_the_log_tail_once_per_period_and_shows_the_wait() -> None:
    """Real time here (the controller's clock): the container started 9 s ago, so the first read
    (3 s lock timeout + 1 s) is due and the next one only 5 s from now."""
    now = datetime.now(UTC)
    cr = make_cr()
    job = started(first_job(cr), now - timedelta(seconds=9))
    cr = apply(cr, decide(cr, [], [], now - timedelta(seconds=9), S))
    pod = running_pod(job, now - timedelta(seconds=9))
    kube = FakeKube(cr, [job], [pod])
    pod_name = pod["metadata"]["name"]
    kube.logs[pod_name] = '{"event": "run.start"}\n' + runner_line(wait_of(2), Masker([PASSWORD]))
    controller = _controller(kube, 10)
    await controller.reconcile("shop", "shop-db")
    assert kube.log_reads == [(pod_name, lockwatch.TAIL_LINES, lockwatch.LIMIT_BYTES)]
    status = kube.cr["status"]
    assert status["lockWait"]["blockerPid"] == 4711
    assert [x["reason"] for x in status["conditions"] if x["status"] == "True"] == ["WaitingForLock"]
    assert [e["reason"] for e in kube.events] == ["WaitingForLock"]
    # passes within the same period (events, resync): no further read, no second Event
    for _ in range(3):
        await controller.reconcile("shop", "shop-db")
    assert len(kube.log_reads) == 1
    assert [e["reason"] for e in kube.events] == ["WaitingForLock"]
    assert not any(PASSWORD in json.dumps(x) for x in (kube.cr, kube.events))


async def test_a_log_that_cannot_be_read_changes_nothing() -> None:
    now = datetime.now(UTC)
    cr = make_cr()
    job = started(first_job(cr), now - timedelta(seconds=9))
    cr = apply(cr, decide(cr, [], [], now - timedelta(seconds=9), S))
    kube = FakeKube(cr, [job], [running_pod(job, now - timedelta(seconds=9))])

    def refused(*_: Any) -> str:
        kube.log_reads.append(("refused", 0, 0))
        raise ApiException(status=403, reason="Forbidden")

    kube.read_pod_log = refused  # type: ignore[method-assign]
    controller = _controller(kube, 10)
    await controller.reconcile("shop", "shop-db")
    await controller.reconcile("shop", "shop-db")
    assert len(kube.log_reads) == 1  # not retried before the next period
    assert "lockWait" not in kube.cr["status"]
    assert kube.events == []
