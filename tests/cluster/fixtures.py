"""Pytest plugin: a session-wide real cluster (`cluster`) and a fresh namespace per test (`namespace`).

Register with `pytest_plugins = ["tests.cluster.fixtures"]` in the root conftest. Binaries are
built at collection time when e2e tests are selected: a cold build takes far longer than a test's
timeout, and collection is not under pytest-timeout.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

import pytest

from tests.cluster.binaries import ensure_binaries
from tests.cluster.cluster import Cluster, running_cluster


@pytest.hookimpl(trylast=True)  # after `-m`/`-k` deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(item.get_closest_marker("e2e") for item in items):
        capman = config.pluginmanager.getplugin("capturemanager")
        if capman is None:
            ensure_binaries(sys.stderr)
            return
        with capman.global_and_fixture_disabled():
            ensure_binaries(sys.stderr)


_shared: list[Cluster] = []  # one cluster even if this module is registered twice (plugin + conftest)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Real etcd + kube-apiserver + controller-manager + scheduler + node agent, torn down at the end."""
    if _shared:
        yield _shared[0]
        return
    with running_cluster() as c:
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
