"""A real local Kubernetes control plane for e2e tests (see cluster.py) and its node agent."""

from localcluster.cluster import NODE_NAME, Cluster, running_cluster, start

__all__ = ["NODE_NAME", "Cluster", "running_cluster", "start"]
