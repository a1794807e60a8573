"""The product as a user installs it, on the real node: the chart with our operator image, a
PostgreSQL the pods reach over the bridge, and the example app's Secret, DatabaseMigration and
gated Deployment. Shared by `make demo` and the real-node suite (tests/realnode).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from localcluster import images, stack
from localcluster import node as nodemod
from localcluster.binaries import REPO
from localcluster.cluster import Cluster
from localcluster.postgres import PASSWORD, Instance, start_instance

CHART = REPO / "charts" / "dbmigrate-operator"
EXAMPLE_MIGRATION = REPO / "examples" / "databasemigration.yaml"
EXAMPLE_ALEMBIC = REPO / "examples" / "databasemigration-alembic.yaml"
APP_MANIFEST = REPO / "examples" / "demo" / "shop-web.yaml"
OPERATOR_NAMESPACE = "dbmigrate-system"
RESTRICTED = ("pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted")


@contextlib.contextmanager
def node_postgres() -> Iterator[Instance]:
    """A throwaway PostgreSQL on loopback and on the node's address, open to the pod network."""
    instance = start_instance(
        PASSWORD,
        prefix="dbmigrate-pg-node-",
        options="-c max_connections=100",
        listen=("127.0.0.1", nodemod.NODE_IP),
        clients=(nodemod.POD_CIDR,),
    )
    try:
        yield instance
    finally:
        instance.stop()


def pod_database_url(instance: Instance, database: str, password: str = PASSWORD) -> str:
    """The URL a pod uses: the node's address, not loopback."""
    return instance.server(password, host=nodemod.NODE_IP).url(database)


def restricted_namespace(cluster: Cluster, prefix: str) -> str:
    """A namespace whose pods must meet the restricted Pod Security standard (enforced)."""
    name = cluster.create_namespace(prefix)
    cluster.kubectl("label", "namespace", name, *RESTRICTED)
    return name


def image_values() -> list[str]:
    """helm --set flags for our locally built operator image (present on the node, never pulled)."""
    repository, tag = images.REFS["operator"].rsplit(":", 1)
    return [
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",
    ]


def install_operator(
    cluster: Cluster,
    namespace: str,
    release: str,
    *,
    watch: tuple[str, ...] = (),
    values: tuple[str, ...] = (),
    timeout: str = "180s",
) -> str:
    """`helm install --wait` of the chart with our image; returns the release's full name.

    With `watch`, also waits until the webhook gates pods in the first watched namespace: `--wait`
    sees the pod Ready, not the Service route the API server takes to it.
    """
    args = [
        "install",
        release,
        str(CHART),
        "-n",
        namespace,
        *image_values(),
        "--wait",
        f"--timeout={timeout}",
    ]
    if watch:
        args += ["--set", "watchNamespaces={" + ",".join(watch) + "}"]
    for value in values:
        args += ["--set", value]
    cluster.helm(*args, timeout=300)
    if watch and "webhook.enabled=false" not in values:
        stack.wait_for_gating(cluster, watch[0])
    return f"{release}-dbmigrate-operator"


def apply(cluster: Cluster, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


def secret(namespace: str, name: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"url": url},
    }


def example_migration(
    namespace: str, *, manifest: Path = EXAMPLE_MIGRATION, built: str = "shop", **spec: Any
) -> dict[str, Any]:
    """An example DatabaseMigration (examples/databasemigration.yaml by default) in `namespace`,
    running our built image `built` (a key of images.REFS) unless `spec` names another image."""
    docs = yaml.safe_load_all(manifest.read_text())
    cr: dict[str, Any] = next(d for d in docs if d and d["kind"] == "DatabaseMigration")
    cr["metadata"]["namespace"] = namespace
    cr["spec"]["image"] = images.REFS[built]
    cr["spec"].update(spec)
    return cr


def example_app(namespace: str, *, replicas: int = 2) -> dict[str, Any]:
    """examples/demo/shop-web.yaml in `namespace`, running our built app image."""
    app: dict[str, Any] = yaml.safe_load(APP_MANIFEST.read_text())
    app["metadata"]["namespace"] = namespace
    app["spec"]["replicas"] = replicas
    container = app["spec"]["template"]["spec"]["containers"][0]
    container["image"] = images.REFS["app"]
    container["imagePullPolicy"] = "Never"
    return app


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None
