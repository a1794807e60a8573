"""The real-cluster fixtures for the CRD checks on a real kube-apiserver (marked e2e); with
DBMIGRATE_E2E_KUBECONFIG, that of an existing cluster (localcluster/remote.py)."""

from tests.cluster.fixtures import cluster, namespace, pytest_collection_modifyitems

__all__ = ["cluster", "namespace", "pytest_collection_modifyitems"]
