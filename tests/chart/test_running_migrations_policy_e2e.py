"""The chart's running-migrations policy on the real API server: the garbage collector may not delete a
migration Job that has not finished (foreground deletion of a DatabaseMigration would otherwise kill
its run), and nobody else is held by it.

Probes are server-side dry runs made as each identity (impersonated, with system:masters so that
RBAC never answers first: the policy matches on the user name alone). The whole deletion story,
with the real garbage collector and a run held on the database lock, is tests/e2e/test_deletion_e2e.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dbmigrate_operator import jobs
from dbmigrate_operator.settings import Settings
from localcluster import Cluster
from localcluster.stack import wait_for
from tests.chart.test_least_privilege_e2e import Install, install, migration, operator_job

__all__ = ["install"]  # the helm install (watchNamespaces={app}) of test_least_privilege_e2e

pytestmark = pytest.mark.e2e

GC = "system:serviceaccount:kube-system:generic-garbage-collector"  # --use-service-account-credentials
MANAGER = "system:kube-controller-manager"  # a controller manager without per-controller credentials
NAMESPACE_CONTROLLER = "system:serviceaccount:kube-system:namespace-controller"
HOLD = "example.com/hold"  # keeps the Jobs while their namespace is being deleted
REFUSAL = "is still running: the garbage collector deletes it once the run ends"


def create_job(cluster: Cluster, job: dict[str, Any]) -> str:
    job["metadata"]["finalizers"] = [HOLD]
    cluster.kubectl("create", "-f", "-", input=json.dumps(job))
    return str(job["metadata"]["name"])


def delete_as(cluster: Cluster, user: str | None, namespace: str, name: str) -> tuple[bool, str]:
    who = ["--as", user, "--as-group", "system:masters"] if user else []
    args = ("delete", "job", name, "-n", namespace, "--dry-run=server", "--wait=false", *who)
    done = cluster.kubectl(*args, check=False)
    return done.returncode == 0, done.stdout + done.stderr


def test_the_garbage_collector_may_not_delete_a_running_migration_job(
    cluster: Cluster, install: Install
) -> None:
    ns = install.app
    cr = migration(cluster, ns)
    running = operator_job(cr)
    running["spec"]["suspend"] = False  # not finished: its Pod may be running the migration
    suspended = operator_job(cr)  # suspended, no Pod: nothing runs
    suspended["metadata"]["name"] += "-s"
    plan = jobs.build_plan_job(cr, hash_=jobs.run_hash(cr), settings=Settings())
    plan["spec"]["suspend"] = False  # a plan only reads
    names = [create_job(cluster, j) for j in (running, suspended, plan)]
    try:
        job = names[0]
        refused = wait_for(
            lambda: (r := delete_as(cluster, GC, ns, job)) and not r[0] and r,
            60,
            "the running-migrations policy to be enforced",
        )
        assert "running-migrations" in refused[1], refused
        assert REFUSAL in refused[1], refused
        assert f"kubectl delete job -n {ns} {job}" in refused[1]  # how to stop it anyway
        ok, out = delete_as(cluster, MANAGER, ns, job)
        assert not ok, out
        assert REFUSAL in out, out
        for user in (None, NAMESPACE_CONTROLLER):  # a person (admin), another controller
            ok, out = delete_as(cluster, user, ns, job)
            assert ok, (user, out)
        for other in names[1:]:  # suspended without Pods; a plan Job
            ok, out = delete_as(cluster, GC, ns, other)
            assert ok, (other, out)

        # The namespace is being deleted: nothing holds it up, whoever the controller manager is.
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
        wait_for(
            lambda: json.loads(cluster.kubectl("get", "job", job, "-n", ns, "-o", "json").stdout)[
                "metadata"
            ].get("deletionTimestamp"),
            60,
            "the namespace controller deleting the Job",
        )
        for user in (GC, MANAGER):
            ok, out = delete_as(cluster, user, ns, job)
            assert ok, (user, out)
    finally:
        for name in names:
            unhold = json.dumps({"metadata": {"finalizers": None}})
            cluster.kubectl("patch", "job", name, "-n", ns, "--type=merge", "-p", unhold, check=False)
