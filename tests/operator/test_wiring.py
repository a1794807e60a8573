"""The real kopf operator in-process against kmock (plus the API-server parts it lacks, see harness)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from dbmigrate_operator import constants as c
from dbmigrate_operator.settings import Settings
from tests.operator.builders import make_cr, success_report
from tests.operator.harness import FakeCluster, emulator, eventually, running_operator
from tests.operator.scenarios import SCENARIOS, V1, V2, V3, Scenario

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore:read_binary is deprecated")]
NS = "shop"


@pytest.fixture
async def server() -> AsyncIterator[Any]:
    async with emulator() as server:
        yield server


@pytest.fixture
def cluster(server: Any) -> FakeCluster:
    return FakeCluster(server)


def true_condition(cluster: FakeCluster, name: str) -> tuple[str, str]:
    conds = [x for x in cluster.status(NS, name).get("conditions", []) if x["status"] == "True"]
    assert len(conds) == 1, conds
    return conds[0]["type"], conds[0]["reason"]


async def one_job(cluster: FakeCluster, name: str, count: int = 1) -> dict[str, Any]:
    jobs = await eventually(
        lambda: len(cluster.jobs(NS, name)) == count and cluster.jobs(NS, name),
        what=f"{count} job(s) of {name}",
    )
    return jobs[-1]


async def settled(cluster: FakeCluster, name: str, reason: str) -> None:
    await eventually(lambda: true_condition(cluster, name)[1] == reason, what=f"{name} reason {reason}")


def assert_no_secret_access_and_status_only_via_subresource(cluster: FakeCluster) -> None:
    assert not [r for r in cluster.k if "/secrets" in r.url.path], "the operator must never touch Secrets"
    for req in cluster.requests("PATCH", f"/{c.PLURAL}/"):
        if req.url.path.endswith("/status"):
            assert set(req.data) == {"status"}, req.data
        else:  # the test itself (spec, annotations), the operator only its finalizer
            assert "status" not in req.data, req.data
            if "spec" not in req.data and "annotations" not in req.data.get("metadata", {}):
                assert set(req.data) == {"metadata"}, req.data
                assert set(req.data["metadata"]) <= {"resourceVersion", "finalizers", "generation"}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_single_run_scenarios(server: Any, cluster: FakeCluster, scenario: Scenario) -> None:
    name = f"dbm-{scenario.name}"
    async with running_operator(server):
        await cluster.apply_cr(make_cr(name, NS, **scenario.spec))
        job = await one_job(cluster, name)
        assert job["metadata"]["ownerReferences"][0]["name"] == name
        await eventually(
            lambda: (
                true_condition(cluster, name)
                in {("Reconciling", "JobCreated"), ("Reconciling", "JobRunning")}
            )
        )
        pod = scenario.pod
        if pod.stuck:
            await cluster.stuck_pod(job, pod.stuck, pod.stuck_message)
        else:
            await cluster.run_pod(job)
            await settled(cluster, name, "JobRunning")
            await eventually(lambda: cluster.status(NS, name)["phase"] == "Running", what="phase Running")
            assert pod.exit_code is not None
            await cluster.end_pod(job, pod.exit_code, pod.message)
        exp = scenario.expect
        await settled(cluster, name, exp.reason)
        status = cluster.status(NS, name)
        assert true_condition(cluster, name) == (exp.condition, exp.reason)
        assert status["phase"] == exp.phase
        assert status["observedGeneration"] == 1
        message = cluster.condition(NS, name, exp.condition)["message"]
        for fragment in exp.message_contains:
            assert fragment in message
        if exp.current_version is not None:
            assert status["currentVersion"] == exp.current_version
        if exp.event:
            await eventually(lambda: exp.event in [e[:2] for e in cluster.events(NS, name)], what="event")
        assert len(cluster.jobs(NS, name)) == 1  # no retry loop, no second Job
    assert_no_secret_access_and_status_only_via_subresource(cluster)


async def test_two_crs_in_one_namespace_keep_to_their_own_jobs(server: Any, cluster: FakeCluster) -> None:
    async with running_operator(server):
        await cluster.apply_cr(make_cr("one", NS))
        await cluster.apply_cr(make_cr("two", NS))
        one, two = await one_job(cluster, "one"), await one_job(cluster, "two")
        await cluster.run_pod(one)
        await cluster.end_pod(one, 0, success_report([V1]))
        await settled(cluster, "one", "Applied")
        assert true_condition(cluster, "two") in {
            ("Reconciling", "JobCreated"),
            ("Reconciling", "JobRunning"),
        }
        await cluster.run_pod(two)
        await cluster.end_pod(two, 0, success_report([V1, V2]))
        await settled(cluster, "two", "Applied")
        assert cluster.status(NS, "one")["currentVersion"] == f"models:{V1}"
        assert cluster.status(NS, "two")["currentVersion"] == f"models:{V2}"


async def test_spec_change_while_running_starts_the_next_run_after_it(
    server: Any, cluster: FakeCluster
) -> None:
    async with running_operator(server):
        await cluster.apply_cr(make_cr("shop-db", NS))
        first = await one_job(cluster, "shop-db")
        await cluster.run_pod(first)
        await settled(cluster, "shop-db", "JobRunning")
        await cluster.change_cr(NS, "shop-db", spec={"image": "registry.example.com/shop-migrations:1.5.0"})
        await settled(cluster, "shop-db", "WaitingForPreviousRun")
        assert cluster.status(NS, "shop-db")["observedGeneration"] == 2
        assert len(cluster.jobs(NS, "shop-db")) == 1  # not killed, no second one beside it
        await cluster.end_pod(first, 0, success_report([V1, V2]))
        second = await one_job(cluster, "shop-db", count=2)
        assert second["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.5.0")
        await cluster.run_pod(second)
        await cluster.end_pod(second, 0, success_report([V1, V2, V3], applied=[f"models:{V3}"]))
        await settled(cluster, "shop-db", "Applied")
        status = cluster.status(NS, "shop-db")
        assert status["currentVersion"] == f"models:{V3}"
        assert status["lastRun"]["job"] == second["metadata"]["name"]
        assert cluster.condition(NS, "shop-db", c.READY)["observedGeneration"] == 2


async def test_operator_restart_mid_run_creates_no_duplicate_and_completes(
    server: Any, cluster: FakeCluster
) -> None:
    async with running_operator(server):
        await cluster.apply_cr(make_cr("shop-db", NS))
        job = await one_job(cluster, "shop-db")
        await cluster.run_pod(job)
        await settled(cluster, "shop-db", "JobRunning")
    # the operator is down while the migration finishes
    await cluster.end_pod(job, 0, success_report([V1, V2]))
    assert true_condition(cluster, "shop-db")[1] == "JobRunning"
    async with running_operator(server):
        await settled(cluster, "shop-db", "Applied")
        assert cluster.status(NS, "shop-db")["currentVersion"] == f"models:{V2}"
    assert len(cluster.jobs(NS, "shop-db")) == 1
    assert len(cluster.requests("POST", "/jobs")) == 1


async def test_failed_run_waits_for_a_rerun_annotation(server: Any, cluster: FakeCluster) -> None:
    async with running_operator(server, Settings(resync_seconds=5)) as controller:
        await cluster.apply_cr(make_cr("shop-db", NS))
        job = await one_job(cluster, "shop-db")
        await cluster.run_pod(job)
        await cluster.end_pod(job, 4, None)  # LockTimeout by exit code, no report
        await settled(cluster, "shop-db", "LockTimeout")
        for _ in range(3):  # reconciles from every source change nothing
            await controller.reconcile(NS, "shop-db")
        assert len(cluster.jobs(NS, "shop-db")) == 1
        await cluster.change_cr(NS, "shop-db", annotations={c.RERUN_ANNOTATION: "1767225600"})
        rerun = await one_job(cluster, "shop-db", count=2)
        await cluster.run_pod(rerun)
        await cluster.end_pod(rerun, 0, success_report([V1]))
        await settled(cluster, "shop-db", "Applied")


async def test_downgrade_refused_then_allowed(server: Any, cluster: FakeCluster) -> None:
    async with running_operator(server):
        await cluster.apply_cr(make_cr("shop-db", NS))
        job = await one_job(cluster, "shop-db")
        await cluster.run_pod(job)
        await cluster.end_pod(job, 0, success_report([V1, V2, V3]))
        await settled(cluster, "shop-db", "Applied")
        await cluster.change_cr(NS, "shop-db", spec={"target": V1})
        await settled(cluster, "shop-db", "DowngradeNotAllowed")
        assert cluster.status(NS, "shop-db")["phase"] == "Failed"
        assert len(cluster.jobs(NS, "shop-db")) == 1
        await eventually(
            lambda: ("Warning", "DowngradeNotAllowed") in [e[:2] for e in cluster.events(NS, "shop-db")]
        )
        await cluster.change_cr(NS, "shop-db", spec={"allowDowngrade": True})
        down = await one_job(cluster, "shop-db", count=2)
        args = down["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[:1] == ["downgrade"]
        assert args[args.index("--target") + 1] == V1
        await cluster.run_pod(down)
        await cluster.end_pod(
            down, 0, success_report([V1], applied=[f"models:{V3}", f"models:{V2}"], command="downgrade")
        )
        await settled(cluster, "shop-db", "Applied")
        assert cluster.status(NS, "shop-db")["currentVersion"] == f"models:{V1}"
        assert "Reverted 2" in cluster.condition(NS, "shop-db", c.READY)["message"]


async def test_history_limit_deletes_old_jobs(server: Any, cluster: FakeCluster) -> None:
    async with running_operator(server):
        await cluster.apply_cr(make_cr("shop-db", NS, historyLimit=1))
        for run in range(3):
            if run:
                await cluster.change_cr(NS, "shop-db", annotations={c.RERUN_ANNOTATION: str(run)})
            job = await eventually(
                lambda: [
                    j
                    for j in cluster.jobs(NS, "shop-db")
                    if "status" not in j or not j["status"].get("conditions")
                ],
                what=f"run {run}",
            )
            await cluster.run_pod(job[0])
            await cluster.end_pod(job[0], 0, success_report([V1]))
            await settled(cluster, "shop-db", "Applied")
        await eventually(lambda: len(cluster.jobs(NS, "shop-db")) == 1, what="history trimmed")
        assert (
            cluster.jobs(NS, "shop-db")[0]["metadata"]["name"]
            == cluster.status(NS, "shop-db")["lastRun"]["job"]
        )
        deletes = cluster.requests("DELETE", "/jobs/")
        assert len(deletes) == 2
        assert all(
            "Background" in (r.params.get("propagationPolicy"), (r.data or {}).get("propagationPolicy"))
            for r in deletes
        )


async def test_deleting_the_cr_waits_for_its_running_job_then_leaves_the_rest_to_garbage_collection(
    server: Any, cluster: FakeCluster
) -> None:
    """The run-in-progress finalizer: on while the Job runs, so a deletion waits for the run to end
    (garbage collection would kill its Pod mid-migration); off once it ended, so the CR goes."""
    async with running_operator(server):
        await cluster.apply_cr(make_cr("shop-db", NS))
        job = await one_job(cluster, "shop-db")
        assert cluster.cr(NS, "shop-db")["metadata"]["finalizers"] == [c.RUN_FINALIZER]
        await cluster.delete_cr(NS, "shop-db")
        await cluster.run_pod(job)
        await eventually(
            lambda: "being deleted" in cluster.condition(NS, "shop-db", c.RECONCILING)["message"],
            what="the status saying why the CR is still there",
        )
        held = cluster.cr(NS, "shop-db")
        assert held["metadata"]["deletionTimestamp"]
        assert [j["metadata"]["name"] for j in cluster.jobs(NS, "shop-db")] == [job["metadata"]["name"]]
        await cluster.end_pod(job, 0, success_report([V1]))
        await eventually(lambda: not cluster.objects(c.PLURAL, NS), what="CR gone once the run ended")
        await eventually(lambda: ("Normal", "Applied") in {e[:2] for e in cluster.events(NS, "shop-db")})
    assert cluster.requests("DELETE", "/jobs/") == []  # the API server's GC owns that (ownerReferences)
    assert len(cluster.requests("POST", "/jobs")) == 1  # a deletion starts no run
    finalizer_patches = [
        r.data["metadata"]
        for r in cluster.requests("PATCH", f"/{c.PLURAL}/")
        if not r.url.path.endswith("/status")
    ]
    assert [set(m) for m in finalizer_patches] == [{"resourceVersion", "finalizers"}] * 2  # nothing else
    assert [m["finalizers"] for m in finalizer_patches] == [[c.RUN_FINALIZER], None]
    assert_no_secret_access_and_status_only_via_subresource(cluster)


async def test_a_finished_cr_has_no_finalizer_and_goes_at_once(server: Any, cluster: FakeCluster) -> None:
    async with running_operator(server):
        await cluster.apply_cr(make_cr("shop-db", NS))
        job = await one_job(cluster, "shop-db")
        await cluster.run_pod(job)
        await cluster.end_pod(job, 0, success_report([V1]))
        await settled(cluster, "shop-db", "Applied")
        await eventually(lambda: not cluster.cr(NS, "shop-db")["metadata"].get("finalizers"))
        await cluster.delete_cr(NS, "shop-db")
        await eventually(lambda: not cluster.objects(c.PLURAL, NS), what="CR gone")
    assert len(cluster.requests("POST", "/jobs")) == 1


async def test_an_unschedulable_pod_is_stalled_when_its_grace_ends_without_any_event(
    server: Any, cluster: FakeCluster
) -> None:
    """No watch event marks the end of the grace period: the controller looks again by itself."""
    settings = Settings(resync_seconds=3600, unschedulable_grace_seconds=3)
    async with running_operator(server, settings):
        await cluster.apply_cr(make_cr("dbm-nonode", NS))
        job = await one_job(cluster, "dbm-nonode")
        await cluster.stuck_pod(
            job, "Unschedulable", "0/3 nodes are available: 3 Insufficient memory", since=0
        )
        await settled(cluster, "dbm-nonode", "WaitingForNode")
        assert true_condition(cluster, "dbm-nonode")[0] == "Reconciling"
        await eventually(
            lambda: true_condition(cluster, "dbm-nonode") == ("Stalled", "Unschedulable"),
            within=10,
            what="Stalled once the grace is over",
        )


async def test_job_and_pod_watches_are_selected_by_the_api_server(server: Any, cluster: FakeCluster) -> None:
    """Every list and watch of Jobs and Pods carries our labelSelector; a bystander reconciles nothing."""
    async with running_operator(server):
        await cluster.create(
            f"/api/v1/namespaces/{NS}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"}}
        )
        await cluster.apply_cr(make_cr("shop-db"))
        await one_job(cluster, "shop-db")
        await eventually(
            lambda: cluster.requests("GET", "/pods") and cluster.requests("GET", "/jobs"),
            what="pod/job reads",
        )
    selector = f"{c.MANAGED_BY_LABEL}={c.MANAGED_BY},{c.MIGRATION_LABEL}"
    reads = cluster.requests("GET", "/pods") + cluster.requests("GET", "/jobs")
    # kopf's cluster-wide list and watch, and the controller's own per-CR lists (by the CR's name)
    kopf_reads = [r for r in reads if "/namespaces/" not in r.url.path]
    assert {bool(r.params.get("watch")) for r in kopf_reads} == {True, False}, kopf_reads
    for request in kopf_reads:
        assert request.params.get("labelSelector") == selector, request.url
    for request in reads:
        assert request.params.get("labelSelector"), request.url
