"""Several operator replicas against the real control plane (localcluster).

First the two API server guarantees the controller relies on against a concurrent writer (a delete
carrying ``preconditions.uid``, a status patch carrying ``metadata.resourceVersion``), with the
operator's own ServiceAccount; then operator processes competing for the Lease.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from dbmigrate_operator.kube import Kube, StaleObject
from dbmigrate_operator.leadership import LeaseConfig, LeaseElector
from localcluster.stack import install_crd, install_operator_identity
from tests.operator.builders import make_cr

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def identity(cluster: Any) -> Path:
    install_crd(cluster)
    path: Path = install_operator_identity(cluster, cluster.create_namespace("dbmigrate-ha"), "operator")
    return path


@pytest.fixture
def kube(cluster: Any, identity: Path) -> Kube:
    return Kube(cluster.api_client(identity))


def suspended_job(namespace: str, name: str) -> dict[str, Any]:
    """A Job that never makes a Pod (suspended): enough to test who may delete it."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": {"dbmigrate.dev/migration": "x"}},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1"}]}
            },
        },
    }


def job_uid(cluster: Any, namespace: str, name: str) -> str:
    out = cluster.kubectl("get", "job", name, "-n", namespace, "-o", "jsonpath={.metadata.uid}")
    return str(out.stdout)


def test_a_delete_with_a_stale_uid_leaves_the_namesake_alone(
    cluster: Any, namespace: str, kube: Kube
) -> None:
    assert kube.create_job(namespace, suspended_job(namespace, "run-a"))
    first = job_uid(cluster, namespace, "run-a")
    assert kube.delete_job(namespace, "run-a", first)
    cluster.kubectl("wait", "--for=delete", "job/run-a", "-n", namespace, "--timeout=30s")
    assert kube.create_job(namespace, suspended_job(namespace, "run-a"))
    second = job_uid(cluster, namespace, "run-a")
    assert not kube.delete_job(namespace, "run-a", first)  # 409: precondition failed
    assert job_uid(cluster, namespace, "run-a") == second
    assert kube.delete_job(namespace, "run-a", second)
    assert not kube.delete_job(namespace, "run-a", second)  # 404 now


def test_a_status_patch_on_a_stale_resource_version_is_refused(
    cluster: Any, namespace: str, kube: Kube
) -> None:
    cr = make_cr("shop-db", namespace)
    del cr["metadata"]["uid"], cr["metadata"]["generation"]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(cr))
    seen = kube.get_migration(namespace, "shop-db")
    assert seen is not None
    version = seen["metadata"]["resourceVersion"]
    assert kube.patch_status(namespace, "shop-db", {"phase": "Succeeded"}, version)
    with pytest.raises(StaleObject):  # a second writer on the same read: refused, nothing overwritten
        kube.patch_status(namespace, "shop-db", {"phase": "Pending"}, version)
    now = kube.get_migration(namespace, "shop-db")
    assert now is not None
    assert now["status"]["phase"] == "Succeeded"
    assert not kube.patch_status(namespace, "gone", {"phase": "Pending"}, version)


async def test_the_lease_has_one_holder_a_released_one_passes_at_once_a_dead_one_after_expiry(
    cluster: Any, identity: Path
) -> None:
    namespace = cluster.create_namespace("lease")
    client = cluster.api_client(identity)

    def elector(who: str) -> LeaseElector:
        return LeaseElector(client, LeaseConfig.from_duration("dbm-ha", namespace, who, 3))

    a, b, c = elector("a"), elector("b"), elector("c")
    await a.step()
    await b.step()
    assert a.is_active()
    assert not b.is_active()
    taken = b.subscribe()
    await a.stop()  # graceful: stops writing, hands the Lease back
    assert not a.is_active()
    await b.step()
    assert b.is_active()
    assert taken.is_set()
    # b dies without a word (no renewals): c waits a whole lease duration of unchanged record
    await c.step()
    assert not c.is_active()
    await asyncio.sleep(2.2)
    assert not b.is_active()
    await c.step()
    assert not c.is_active()  # 2.2 s < 3 s since c first saw b's record
    await asyncio.sleep(1.0)
    await c.step()
    assert c.is_active()
    lease = json.loads(cluster.kubectl("get", "lease", "dbm-ha", "-n", namespace, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == "c"
    assert lease["spec"]["leaseTransitions"] == 2
