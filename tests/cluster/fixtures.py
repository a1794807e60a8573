"""Pytest plugin: a session-wide real cluster (`cluster`) and a fresh namespace per test (`namespace`).

Register with `pytest_plugins = ["tests.cluster.fixtures"]` in the root conftest. Binaries are
built at collection time when e2e tests are selected: a cold build takes far longer than a test's
timeout, and collection is not under pytest-timeout.

Tests marked `realnode` also get the real node's images built at collection (localcluster/images.py).

Remote mode (localcluster/remote.py): with DBMIGRATE_E2E_KUBECONFIG set, `cluster` is a
`RemoteCluster` on that cluster, nothing local is started, and tests marked
`@pytest.mark.local_cluster("<capability>")` are skipped with that capability as the reason.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

import pytest

from localcluster.binaries import ensure_binaries
from localcluster.cluster import Cluster, running_cluster
from localcluster.remote import MARKER, client_binaries, configured_kubeconfig, remote_cluster, skip_reason

_done = pytest.StashKey[bool]()  # the hook is re-exported by several conftests: act once


@pytest.hookimpl(trylast=True)  # after `-m`/`-k` deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.stash.get(_done, False):
        return
    config.stash[_done] = True
    try:
        remote = configured_kubeconfig()
    except FileNotFoundError as e:
        raise pytest.UsageError(str(e)) from None
    for item in items:
        mark = item.get_closest_marker(MARKER)
        if mark is None:
            continue
        capability = mark.args[0] if mark.args else mark.kwargs.get("capability")
        if not isinstance(capability, str) or not capability.strip():
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{MARKER} needs the capability, as a string")
        if remote:
            item.add_marker(pytest.mark.skip(reason=skip_reason(capability)))
    builds: list[Callable[[TextIO], object]] = []
    if any(item.get_closest_marker("e2e") for item in items):
        builds.append(client_binaries if remote else ensure_binaries)  # remote: only kubectl and helm
    if not remote and any(item.get_closest_marker("realnode") for item in items):
        from localcluster import images

        builds.append(images.ensure_images)  # the real node runs images built from our Dockerfiles
    capman = config.pluginmanager.getplugin("capturemanager")
    for build in builds:
        if capman is None:
            build(sys.stderr)
            continue
        with capman.global_and_fixture_disabled():
            build(sys.stderr)


_shared: list[Cluster] = []  # one cluster even if this module is registered twice (plugin + conftest)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Real etcd + kube-apiserver + controller-manager + scheduler + node agent, torn down at the end;
    in remote mode the cluster DBMIGRATE_E2E_KUBECONFIG names, left running."""
    if _shared:
        yield _shared[0]
        return
    remote = configured_kubeconfig()
    with remote_cluster(remote) if remote else running_cluster() as c:
        _shared.append(c)
        try:
            yield c
        finally:
            _shared.clear()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace named after the test, deleted afterwards (without waiting)."""
    name = cluster.create_namespace(re.sub(r"^test_", "", request.node.name)[:30])
    yield name
    cluster.delete_namespace(name)
