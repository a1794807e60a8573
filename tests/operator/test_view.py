"""The watched view (pure), and the controller deciding from it: what a pass costs in API requests.

The view is fed here as kopf's index and event handlers feed it (bodies of watch events); the
controller's API is a :class:`~tests.operator.test_ha.FakeKube` that counts reads, so a pass that
should cost nothing shows it.
"""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import timedelta
from typing import Any

import pytest

from dbmigrate_operator import controller as controller_module
from dbmigrate_operator.controller import Controller
from dbmigrate_operator.reconcile import decide
from dbmigrate_operator.view import TOMBSTONES, Kind, View
from tests.operator.builders import (
    T0,
    completed,
    make_cr,
    running_pod,
    started,
    success_report,
    terminated_pod,
)
from tests.operator.scenarios import V1
from tests.operator.test_ha import FakeKube, S
from tests.operator.test_reconcile import apply, first_job, settle


def versioned(obj: dict[str, Any], rv: int) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"]["resourceVersion"] = str(rv)
    return out


# ---------------------------------------------------------------- the view alone


def test_a_cr_its_jobs_and_pods_are_found_by_the_migration_label() -> None:
    view = View()
    cr = make_cr()
    job = first_job(cr)
    pod = running_pod(job, T0)
    other = first_job(make_cr("other-db", uid="other"))
    for kind, obj in ((Kind.MIGRATION, cr), (Kind.JOB, job), (Kind.POD, pod), (Kind.JOB, other)):
        assert view.put(kind, obj)
    assert view.migration("shop", "shop-db") == cr
    assert view.jobs("shop", "shop-db") == [job]
    assert [p["metadata"]["name"] for p in view.pods("shop", "shop-db")] == [pod["metadata"]["name"]]
    assert view.jobs("shop", "other-db") == [other]
    assert view.jobs("elsewhere", "shop-db") == []
    assert view.counts() == {"databasemigrations": 1, "jobs": 2, "pods": 1}


def test_an_object_without_our_label_is_not_taken() -> None:
    view = View()
    job = first_job(make_cr())
    del job["metadata"]["labels"]["dbmigrate.dev/migration"]
    assert not view.put(Kind.JOB, job)
    assert view.counts()["jobs"] == 0


def test_an_older_version_never_replaces_a_newer_one() -> None:
    """A write's answer (newer) may arrive before the watch delivers the version before it."""
    view = View()
    cr = make_cr()
    written = versioned(cr, 12)
    written["status"] = {"phase": "Succeeded"}
    assert view.put(Kind.MIGRATION, written)
    assert not view.put(Kind.MIGRATION, versioned(cr, 11))
    assert view.put(Kind.MIGRATION, versioned(written, 12))  # the watch's echo of the same version
    assert view.migration("shop", "shop-db")["status"] == {"phase": "Succeeded"}  # type: ignore[index]


def test_a_deleted_object_never_comes_back_from_a_late_event() -> None:
    view = View()
    job = versioned(first_job(make_cr()), 5)
    view.put(Kind.JOB, job)
    view.delete(Kind.JOB, job)
    assert view.jobs("shop", "shop-db") == []
    assert not view.put(Kind.JOB, versioned(job, 4))  # a MODIFIED that was still in flight
    renamed = versioned(job, 9)
    renamed["metadata"]["uid"] = "a-new-run-of-the-same-name"  # A → B → A: a new Job, a new uid
    assert view.put(Kind.JOB, renamed)


def test_a_delete_leaves_a_namesake_with_another_uid_alone() -> None:
    view = View()
    cr = make_cr()
    view.put(Kind.MIGRATION, cr)
    view.delete(Kind.MIGRATION, make_cr(uid="an-older-incarnation"))
    assert view.migration("shop", "shop-db") == cr


def test_tombstones_are_bounded() -> None:
    view = View()
    for i in range(TOMBSTONES + 10):
        view.delete(Kind.POD, {"metadata": {"namespace": "shop", "name": f"p{i}", "uid": f"u{i}"}})
    assert len(view._gone) == TOMBSTONES


def test_what_the_api_answered_replaces_the_cr_s_part_of_the_view() -> None:
    view = View()
    cr = make_cr()
    stale_job = first_job(cr)
    view.put(Kind.MIGRATION, cr)
    view.put(Kind.JOB, stale_job)
    view.put(Kind.POD, running_pod(stale_job, T0))
    done = completed(stale_job, T0)
    view.replace(("shop", "shop-db"), cr, [done], [])
    assert view.jobs("shop", "shop-db") == [done]
    assert view.pods("shop", "shop-db") == []  # gone in the API, gone here
    view.replace(("shop", "shop-db"), None, [], [])
    assert view.migration("shop", "shop-db") is None


def test_stored_copies_drop_what_no_decision_reads() -> None:
    view = View()
    job = first_job(make_cr())
    pod = running_pod(job, T0)
    pod["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    view.put(Kind.POD, pod)
    (stored,) = view.pods("shop", "shop-db")
    assert "spec" not in stored
    assert "managedFields" not in stored["metadata"]
    assert stored["status"] == pod["status"]
    assert "managedFields" in pod["metadata"]  # the caller's body is not touched


# ---------------------------------------------------------------- the controller on the view


class CountingKube(FakeKube):
    """FakeKube counting the reads a pass makes (each one an API request)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reads: list[str] = []

    def get_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append("get")
        return super().get_migration(namespace, name)

    def list_jobs(self, namespace: str, migration: str) -> list[dict[str, Any]]:
        self.reads.append("jobs")
        return super().list_jobs(namespace, migration)

    def list_pods(self, namespace: str, migration: str) -> list[dict[str, Any]]:
        self.reads.append("pods")
        return super().list_pods(namespace, migration)

    def list_job_events(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        self.reads.append("events")
        return []


def watched(kube: FakeKube) -> Controller:
    """A controller whose view has seen what ``kube`` holds (as its watches would have shown it)."""
    controller = Controller(S)
    controller.kube = kube  # type: ignore[assignment]
    feed(controller, kube)
    return controller


def feed(controller: Controller, kube: FakeKube) -> None:
    controller.view.put(Kind.MIGRATION, kube.cr)
    for job in kube.jobs.values():
        controller.view.put(Kind.JOB, job)
    for pod in kube.pods:
        controller.view.put(Kind.POD, pod)


async def test_a_lifecycle_is_decided_from_the_view_and_a_resync_of_it_costs_nothing() -> None:
    kube = CountingKube(make_cr(), [], [])
    controller = watched(kube)
    await controller.reconcile("shop", "shop-db")  # first status, the finalizer, then the Job
    assert [w for w, _ in kube.writes] == ["status", "finalizers", "create"]
    (job,) = kube.jobs.values()
    assert controller.view.jobs("shop", "shop-db")[0]["metadata"]["uid"] == job["metadata"]["uid"]
    # the run ends: the watches bring the finished Job and its Pod
    done = completed(job, T0 + timedelta(hours=1, minutes=1))
    kube.jobs = {done["metadata"]["name"]: done}
    kube.pods = [terminated_pod(done, 0, success_report([V1]), T0 + timedelta(hours=1, minutes=1))]
    feed(controller, kube)
    await controller.reconcile("shop", "shop-db")
    assert kube.cr["status"]["phase"] == "Succeeded"
    written = len(kube.writes)
    for _ in range(3):  # resync passes over the unchanged CR
        await controller.reconcile("shop", "shop-db")
    assert len(kube.writes) == written
    assert kube.reads == []


async def test_a_takeover_or_a_listing_reads_each_cr_once_from_the_api() -> None:
    """A standby's watches may trail what the previous holder wrote: one read, then the view again."""
    cr = make_cr()
    job = first_job(cr)
    kube = CountingKube(cr, [started(job, T0)], [running_pod(job, T0)])
    controller = Controller(S)
    controller.kube = kube  # type: ignore[assignment]
    controller.view.put(Kind.MIGRATION, kube.cr)  # the CR was listed, its Job and Pod not yet seen
    controller.remember("shop", "shop-db", listed=True)
    await controller.reconcile("shop", "shop-db")
    assert kube.reads == ["get", "jobs", "pods"]
    assert ("create", job["metadata"]["name"]) not in kube.writes  # it saw the running Job
    await controller.reconcile("shop", "shop-db")
    assert kube.reads == ["get", "jobs", "pods"]


async def test_a_cr_created_after_a_listing_is_decided_from_the_view() -> None:
    """The listing doubts what was there before it; a CR first seen live is as new as the watches."""
    kube = CountingKube(make_cr(), [], [])
    controller = watched(kube)
    controller.relisted()
    controller.remember("shop", "shop-db")  # its ADDED event
    await controller.reconcile("shop", "shop-db")
    assert kube.reads == []
    assert [w for w, _ in kube.writes] == ["status", "finalizers", "create"]


async def test_the_jobs_and_pods_of_a_deleted_cr_going_read_nothing() -> None:
    """After a listing, a pass for a CR already forgotten (deleted: its Jobs' and Pods' DELETED events
    follow) decides from the view, which no longer has it, and reads nothing."""
    kube = CountingKube(make_cr(), [], [])
    controller = watched(kube)
    controller.relisted()
    controller.remember("shop", "shop-db")
    await controller.reconcile("shop", "shop-db")
    controller.view.delete(Kind.MIGRATION, kube.cr)
    controller.forget("shop", "shop-db")
    for _ in range(2):
        await controller.reconcile("shop", "shop-db")
    assert kube.reads == []


async def test_deletions_missed_while_a_watch_was_down_are_found_by_the_next_pass_after_a_relisting() -> None:
    """A re-list brings no event for what was deleted meanwhile (here: a CR's running Job and Pod,
    and another CR); any listing event makes every CR's next pass read the API once."""
    cr = make_cr()
    job = started(first_job(cr), T0)
    kube = CountingKube(cr, [job], [running_pod(job, T0)])
    controller = watched(kube)
    controller.remember("shop", "shop-db")
    gone = make_cr(name="gone-db")
    controller.view.put(Kind.MIGRATION, gone)
    controller.remember("shop", "gone-db")
    await controller.reconcile("shop", "shop-db")
    assert kube.reads == []  # the view is trusted
    kube.jobs, kube.pods = {}, []  # deleted while the watches were down
    controller.relisted()  # some other object's listing event
    await controller.reconcile("shop", "shop-db")
    assert kube.reads == ["get", "jobs", "pods"]
    old = job["metadata"]["uid"]
    assert old not in [j["metadata"]["uid"] for j in controller.view.jobs("shop", "shop-db")]
    assert controller.view.pods("shop", "shop-db") == []
    await controller.reconcile("shop", "shop-db")
    assert kube.reads.count("get") == 1  # once (the new Job's missing Pod may read its Events)
    kube.get_migration = lambda namespace, name: None  # type: ignore[method-assign]
    await controller.reconcile("shop", "gone-db")
    assert ("shop", "gone-db") not in controller.known
    assert controller.view.migration("shop", "gone-db") is None


async def test_a_refused_write_from_a_trailing_view_reads_the_api_and_never_flips_ready_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The view still shows the running Job; another replica already recorded the finished run."""
    monkeypatch.setattr(controller_module, "PROGRESS_WRITE_SECONDS", 0.05)
    cr = make_cr()
    job = first_job(cr)
    cr = apply(cr, decide(cr, [], [], T0, S))  # Pending, JobCreated
    job = started(job, T0)
    kube = CountingKube(cr, [job], [running_pod(job, T0)])
    controller = watched(kube)
    done = completed(job, T0 + timedelta(minutes=1))
    pod = terminated_pod(done, 0, success_report([V1]), T0 + timedelta(minutes=1))
    ready, _ = settle(cr, [done], [pod], now=T0 + timedelta(minutes=1))
    kube.cr["status"] = ready["status"]  # the other replica's write...
    kube.bump()
    kube.jobs, kube.pods = {done["metadata"]["name"]: done}, [pod]
    controller.start_workers()  # the held write's recheck goes through the work queue
    await controller.reconcile("shop", "shop-db")  # ...which this view has not seen: Running, held
    await asyncio.sleep(0.3)
    assert kube.reads == ["get", "jobs", "pods"]  # refused once, then read the API and decided again
    trues = [(x["type"], x["reason"]) for x in kube.cr["status"]["conditions"] if x["status"] == "True"]
    assert trues == [("Ready", "Applied")]
    assert kube.cr["status"]["phase"] == "Succeeded"
    controller.kube = None
    await controller.stop()


async def test_a_run_s_progress_is_written_once_it_settles_and_its_verdict_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(controller_module, "PROGRESS_WRITE_SECONDS", 0.2)
    kube = CountingKube(make_cr(), [], [])
    controller = watched(kube)
    controller.start_workers()
    await controller.reconcile("shop", "shop-db")
    (job,) = kube.jobs.values()
    kube.jobs = {job["metadata"]["name"]: started(job, T0 + timedelta(hours=1))}
    kube.pods = [running_pod(job, T0 + timedelta(hours=1))]
    feed(controller, kube)
    writes = len(kube.writes)
    await controller.reconcile("shop", "shop-db")  # Pending/JobCreated → Running: held
    assert len(kube.writes) == writes
    await asyncio.sleep(0.5)  # the hold ends: a pass writes what is true then, by itself
    assert kube.cr["status"]["phase"] == "Running"
    assert len(kube.writes) == writes + 1
    done = completed(job, T0 + timedelta(hours=1, minutes=1))
    kube.jobs = {done["metadata"]["name"]: done}
    kube.pods = [terminated_pod(done, 0, success_report([V1]), T0 + timedelta(hours=1, minutes=1))]
    feed(controller, kube)
    await controller.reconcile("shop", "shop-db")  # the verdict: not held
    assert kube.cr["status"]["phase"] == "Succeeded"
    controller.kube = None
    await controller.stop()


def test_the_view_keeps_one_copy_of_each_short_string_and_owns_its_bodies() -> None:
    """Each watch event is parsed on its own; the view's copies share their keys and short values."""
    view = View()
    bodies = [json.loads(json.dumps(make_cr(name=f"db-{i}"))) for i in range(2)]
    for body in bodies:
        view.put(Kind.MIGRATION, body)
    a, b = (view.migration("shop", f"db-{i}") for i in range(2))
    assert a is not None
    assert b is not None
    key_a = next(k for k in a["metadata"] if k == "namespace")
    key_b = next(k for k in b["metadata"] if k == "namespace")
    assert key_a is key_b
    assert a["metadata"]["namespace"] is b["metadata"]["namespace"]
    bodies[0]["spec"]["image"] = "changed"  # a private copy: the event's body is not the view's
    assert a["spec"]["image"] != "changed"
