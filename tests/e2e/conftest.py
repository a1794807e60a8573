"""e2e tests run against the real local cluster of localcluster (fixtures `cluster`, `namespace`), or
the one DBMIGRATE_E2E_KUBECONFIG names (localcluster/remote.py; `local_cluster` tests skipped).

Re-exported here so tests/e2e works even if the root conftest does not register the plugin
(`pytest_plugins` is only allowed in the root conftest); registering both is harmless.
"""

from tests.cluster.fixtures import cluster, namespace, pytest_collection_modifyitems

__all__ = ["cluster", "namespace", "pytest_collection_modifyitems"]
