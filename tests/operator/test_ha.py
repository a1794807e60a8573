"""Several replicas and stale writers: what the controller writes when the world moved under it.

A :class:`FakeKube` holds one CR, its Jobs and Pods, and models the two API server guarantees the
controller relies on against a concurrent writer: a delete with ``preconditions.uid`` refuses a
namesake (409), and a status patch naming a ``metadata.resourceVersion`` refuses a stale one (409).
The same API behaviour is checked on the real API server in ``test_ha_cluster.py``.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from dbmigrate_operator import controller as controller_module
from dbmigrate_operator.actions import CreateJob
from dbmigrate_operator.constants import SCHEDULING_GATE
from dbmigrate_operator.controller import Controller
from dbmigrate_operator.gating.release import Releaser
from dbmigrate_operator.kube import StaleObject
from dbmigrate_operator.reconcile import decide
from dbmigrate_operator.settings import Settings
from tests.gating.harness import make_pod, migration_body
from tests.gating.test_release import FakeApi
from tests.operator.builders import (
    T0,
    admit,
    completed,
    make_cr,
    merge,
    running_pod,
    started,
    success_report,
    terminated_pod,
)
from tests.operator.scenarios import V1, V2
from tests.operator.test_reconcile import apply, first_job, settle

S = Settings()


class FakeKube:
    """One CR with its Jobs and Pods, in memory; the API server's optimistic concurrency modelled."""

    def __init__(self, cr: dict[str, Any], jobs: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.cr = copy.deepcopy(cr)
        self.cr["metadata"]["resourceVersion"] = "1"
        self.jobs = {j["metadata"]["name"]: copy.deepcopy(j) for j in jobs}
        self.pods = copy.deepcopy(pods)
        self.after_list: Callable[[], None] | None = None  # another writer acting meanwhile
        self.before_write: Callable[[], None] | None = None
        self.writes: list[tuple[str, str]] = []
        self.events: list[dict[str, Any]] = []
        self.logs: dict[str, str] = {}  # pod name → what its runner printed (lockwatch reads the tail)
        self.log_reads: list[tuple[str, int, int]] = []  # (pod, tailLines, limitBytes) of each read

    def bump(self) -> None:
        self.cr["metadata"]["resourceVersion"] = str(int(self.cr["metadata"]["resourceVersion"]) + 1)

    def get_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.cr)

    def list_jobs(self, namespace: str, migration: str) -> list[dict[str, Any]]:
        listed = copy.deepcopy(list(self.jobs.values()))
        if self.after_list is not None:
            self.after_list()
        return listed

    def list_pods(self, namespace: str, migration: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods)

    def create_job(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any] | None:
        name = manifest["metadata"]["name"]
        if name in self.jobs:
            return None
        self.writes.append(("create", name))
        self.jobs[name] = admit(manifest, T0 + timedelta(hours=1), uid=f"uid-{len(self.writes)}")
        return copy.deepcopy(self.jobs[name])

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        self.events.append(event)

    def read_pod_log(
        self, namespace: str, pod: str, container: str, tail_lines: int, limit_bytes: int
    ) -> str:
        self.log_reads.append((pod, tail_lines, limit_bytes))
        lines = self.logs.get(pod, "").splitlines(keepends=True)[-tail_lines:]
        return "".join(lines).encode()[-limit_bytes:].decode(errors="replace")

    def delete_job(self, namespace: str, name: str, uid: str | None = None) -> bool:
        job = self.jobs.get(name)
        if job is None or (uid is not None and job["metadata"]["uid"] != uid):
            return False  # 404, or 409 "Precondition failed: UID in precondition ..."
        self.writes.append(("delete", name))
        del self.jobs[name]
        return True

    def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any] | None:
        if self.before_write is not None:
            self.before_write()
        if resource_version is not None and resource_version != self.cr["metadata"]["resourceVersion"]:
            raise StaleObject("409 Conflict")  # what kube.Kube makes of the API server's 409
        self.writes.append(("status", name))
        self.cr["status"] = merge(self.cr.get("status") or {}, patch)
        self.bump()
        return copy.deepcopy(self.cr)

    def patch_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None = None
    ) -> dict[str, Any] | None:
        if resource_version is not None and resource_version != self.cr["metadata"]["resourceVersion"]:
            raise StaleObject("409 Conflict")
        self.writes.append(("finalizers", name))
        self.cr["metadata"]["finalizers"] = finalizers
        self.bump()
        return copy.deepcopy(self.cr)


def controller_on(kube: FakeKube) -> Controller:
    """A controller whose view has not seen this CR yet (as after a takeover): its first pass reads
    the FakeKube; later passes decide from the view, updated by its own writes' answers."""
    controller = Controller(S)
    controller.kube = kube  # type: ignore[assignment]
    controller.mark_unsure("shop", "shop-db")
    return controller


def a_b_a() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Spec A ran, then B, and now the spec is back at A: A's old Job is stale and gets replaced."""
    cr_a = make_cr()
    job_a = completed(first_job(cr_a), T0)
    pod_a = terminated_pod(job_a, 0, success_report([V1]), T0)
    cr_b = make_cr(generation=2, image="registry.example.com/shop-migrations:2.0.0")
    plan = decide(cr_b, [job_a], [pod_a], T0, S)
    job_b = completed(
        admit(plan.of(CreateJob)[0].manifest, T0 + timedelta(minutes=1)), T0 + timedelta(minutes=2)
    )
    pod_b = terminated_pod(job_b, 0, success_report([V1, V2]), T0 + timedelta(minutes=2))
    cr_b, _ = settle(apply(cr_b, plan), [job_a, job_b], [pod_a, pod_b], now=T0 + timedelta(minutes=2))
    return make_cr(generation=3, status=cr_b["status"]), [job_a, job_b], [pod_a, pod_b]


async def test_a_delete_never_hits_a_namesake_created_after_the_decision() -> None:
    """A → B → A: while this replica decides to delete A's stale Job, another one already replaced it."""
    cr, jobs, pods = a_b_a()
    kube = FakeKube(cr, jobs, pods)
    stale = jobs[0]["metadata"]["name"]

    def recreated_meanwhile() -> None:
        kube.jobs[stale] = copy.deepcopy(kube.jobs[stale])
        kube.jobs[stale]["metadata"]["uid"] = "fresh-run"
        kube.jobs[stale]["status"] = {"active": 1}
        kube.after_list = None

    kube.after_list = recreated_meanwhile
    await controller_on(kube).reconcile("shop", "shop-db")
    assert kube.jobs[stale]["metadata"]["uid"] == "fresh-run", "the fresh run's Job was deleted mid-run"
    assert ("delete", stale) not in kube.writes


async def test_a_stale_status_write_is_refused_and_decided_again_never_flipping_ready_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """This replica read a running Job; before its write, another one recorded the finished run."""
    monkeypatch.setattr(
        controller_module, "PROGRESS_WRITE_SECONDS", 0.05
    )  # Running is progress: held that long
    cr = make_cr()
    job = first_job(cr)
    cr = apply(cr, decide(cr, [], [], T0, S))  # Pending, JobCreated
    running = [started(job, T0)], [running_pod(job, T0)]
    done = completed(job, T0 + timedelta(minutes=1))
    finished = [done], [terminated_pod(done, 0, success_report([V1]), T0 + timedelta(minutes=1))]
    ready, _ = settle(cr, *finished, now=T0 + timedelta(minutes=1))
    kube = FakeKube(cr, *running)

    def other_replica_recorded_the_result() -> None:
        kube.jobs = {done["metadata"]["name"]: copy.deepcopy(done)}
        kube.pods = copy.deepcopy(finished[1])
        kube.cr["status"] = copy.deepcopy(ready["status"])
        kube.bump()
        kube.before_write = None

    kube.before_write = other_replica_recorded_the_result
    controller = controller_on(kube)
    controller.start_workers()  # the held write's recheck goes through the work queue
    await controller.reconcile("shop", "shop-db")
    await asyncio.sleep(0.3)
    assert kube.before_write is None, "the write was never tried"
    trues = [(x["type"], x["reason"]) for x in kube.cr["status"]["conditions"] if x["status"] == "True"]
    assert trues == [("Ready", "Applied")]
    assert kube.cr["status"]["phase"] == "Succeeded"
    controller.kube = None
    await controller.stop()


class Switch:
    """A leadership that answers from a script: True/False per question, then the last one forever."""

    def __init__(self, *answers: bool) -> None:
        self.answers = list(answers)

    def is_active(self) -> bool:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def subscribe(self) -> asyncio.Event:
        return asyncio.Event()


async def test_a_standby_replica_writes_nothing() -> None:
    kube = FakeKube(make_cr(), [], [])
    controller = controller_on(kube)
    controller.leadership = Switch(False)
    await controller.reconcile("shop", "shop-db")
    assert kube.writes == []
    assert "status" not in kube.cr


async def test_a_replica_that_loses_the_lease_mid_pass_stops_before_its_next_write() -> None:
    kube = FakeKube(make_cr(), [], [])
    controller = controller_on(kube)
    # the pass starts, the first status (Ready=False, Reconciling=True) goes out, then the Lease is lost
    controller.leadership = Switch(True, True, False)
    await controller.reconcile("shop", "shop-db")
    assert [kind for kind, _ in kube.writes] == ["status"]  # no Job created after the loss


async def test_releaser_of_a_standby_replica_neither_releases_nor_posts_events() -> None:
    pods = [make_pod("web-1", gates=(SCHEDULING_GATE,)), make_pod("web-2", gates=(SCHEDULING_GATE,))]
    for ready in (True, False):
        api = FakeApi(copy.deepcopy(pods), migration_body(ready=ready))
        releaser = Releaser(api, leadership=Switch(False))
        await releaser.reconcile("shop", "shop-db")
        await releaser.sweep()
        releaser.on_migration_event("shop", "shop-db", migration_body(ready=ready))
        releaser.request_sweep()
        releaser.nudge("shop", "shop-db")
        assert len(releaser.queue) == 0  # a standby queues no pass
        await releaser.cancel()  # the nudge's timer
        assert api.patches == []
        assert api.events == []


async def test_releaser_stops_at_once_when_the_lease_is_lost() -> None:
    pods = [make_pod("web-1", gates=(SCHEDULING_GATE,)), make_pod("web-2", gates=(SCHEDULING_GATE,))]
    api = FakeApi(pods, migration_body(ready=False))
    releaser = Releaser(api, leadership=Switch(True, True, False))  # one Event out, then lost
    assert not await releaser.reconcile("shop", "shop-db")
    assert len(api.events) == 1
    # once active again, what was not said is said (nothing was remembered as announced)
    releaser.leadership = Switch(True)
    assert await releaser.reconcile("shop", "shop-db")
    assert {e["involvedObject"]["name"] for e in api.events if e["involvedObject"]["kind"] == "Pod"} == {
        "web-1",
        "web-2",
    }


async def test_a_pending_recheck_survives_writes_and_is_cancelled_on_stop() -> None:
    """A grace-period recheck is armed once per CR, kept across passes and writes, and stopped with
    the controller (it used to be forgotten by every write, so stop() left it to fire later)."""
    kube = FakeKube(make_cr(), [], [])
    controller = controller_on(kube)
    controller.leadership = Switch(True)
    controller._recheck("shop", "shop-db", 3600)
    first = controller._rechecks[("shop", "shop-db")]
    controller._ensure_active()  # every write asks this: it must not drop the pending recheck
    controller._recheck("shop", "shop-db", 3600)  # re-armed: the earlier one is cancelled, not leaked
    assert first.cancelled()
    second = controller._rechecks[("shop", "shop-db")]
    controller.kube = None  # no API client to close
    await controller.stop()
    assert second.cancelled()
