"""The real-node suite: a local cluster whose node is a real kubelet with containerd and runc,
running the images built from this repository's Dockerfiles (localcluster/node.py, images.py).

The images (and the binaries) are built at collection time by the cluster plugin
(tests/cluster/fixtures.py): a cold build takes longer than a test's timeout.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from localcluster import realstack
from localcluster.cluster import Cluster, running_cluster
from localcluster.postgres import Instance
from tests.cluster.fixtures import pytest_collection_modifyitems

__all__ = ["pytest_collection_modifyitems"]

OPERATOR_NAMESPACE = realstack.OPERATOR_NAMESPACE


def pytest_collection_finish(session: pytest.Session) -> None:
    """Argo CD (test_argocd.py) is built at collection when a selected test uses it, as the images
    are: a cold build (8-16 min on 2 busy cores) outlasts any test's timeout. Built once, cached."""
    if not any("argocd" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    from localcluster import argocd

    capman = session.config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        argocd.ensure_built()
        return
    with capman.global_and_fixture_disabled():
        argocd.ensure_built()


@pytest.fixture(scope="package")
def real_cluster() -> Iterator[Cluster]:
    with running_cluster(node="kubelet") as cluster:
        yield cluster


@pytest.fixture(scope="package")
def node_pg(real_cluster: Cluster) -> Iterator[Instance]:
    """PostgreSQL on the node's address (the bridge exists once the cluster is up)."""
    with realstack.node_postgres() as instance:
        yield instance


@pytest.fixture(scope="package")
def app_namespaces(real_cluster: Cluster) -> dict[str, str]:
    """The namespaces the suite's operator watches, one per scenario, restricted Pod Security."""
    return {
        key: realstack.restricted_namespace(real_cluster, f"rn-{key}")
        for key in (
            *("story", "failures", "deadline", "handover", "review", "alembic", "retag", "locks", "secret"),
            *("argo-story", "argo-review", "argo-prune"),  # test_argocd.py: one Application each
        )
    }


@pytest.fixture(scope="package")
def operator(real_cluster: Cluster, app_namespaces: dict[str, str]) -> str:
    """The chart installed with our operator image: 2 replicas electing with a Lease, restricted Pod
    Security on its namespace, watching the scenarios' namespaces. Returns the release's full name."""
    real_cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    real_cluster.kubectl("label", "namespace", OPERATOR_NAMESPACE, *realstack.RESTRICTED)
    return realstack.install_operator(
        real_cluster, OPERATOR_NAMESPACE, "dbm", watch=tuple(app_namespaces.values())
    )


@pytest.fixture
def database(node_pg: Instance) -> str:
    return node_pg.server().create_database(f"rn_{uuid.uuid4().hex[:8]}")
