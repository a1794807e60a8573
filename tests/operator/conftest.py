"""The real-cluster fixtures for the CRD checks on a real kube-apiserver (marked e2e)."""

from tests.cluster.fixtures import cluster, namespace, pytest_collection_modifyitems

__all__ = ["cluster", "namespace", "pytest_collection_modifyitems"]
