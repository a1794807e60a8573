"""The operator as its own process with the chart's RBAC, serving the gating webhook on loopback,
registered for the namespaces labelled ``scope=<run id>`` only: what the e2e stories that gate an
app's pods on a real migration share (test_alembic_e2e.py, test_database_check_e2e.py)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

from dbmigrate_operator.gating import server, tls
from localcluster import Cluster, stack
from localcluster.stack import OperatorProcess


@contextlib.contextmanager
def gated_operator(
    cluster: Cluster, tmp: Path, scope: str, name: str
) -> Iterator[tuple[OperatorProcess, str]]:
    """Yields the operator process and the run id that namespaces must carry as ``scope`` to be gated.
    The CRD and the runner image's mapping are the caller's (they differ by story)."""
    kubeconfig = stack.install_operator_identity(cluster)
    made = tls.self_signed(["127.0.0.1"])
    (tmp / "tls.crt").write_bytes(made.cert_pem)
    (tmp / "tls.key").write_bytes(made.key_pem)
    op = OperatorProcess(
        kubeconfig,
        tmp / "operator.log",
        env={
            "DBMIGRATE_RESYNC_SECONDS": "30",
            "DBMIGRATE_WEBHOOK_CERT_FILE": str(tmp / "tls.crt"),
            "DBMIGRATE_WEBHOOK_KEY_FILE": str(tmp / "tls.key"),
            "DBMIGRATE_GATE_SWEEP_SECONDS": "5",
        },
    ).start()
    run_id = uuid.uuid4().hex[:8]
    configuration_name = f"dbmigrate-{name}-{run_id}"
    settings = server.WebhookSettings(
        listen_host="127.0.0.1", port=op.webhook_port, operator_namespace=stack.OPERATOR_NAMESPACE
    )
    configuration = server.local_configuration(settings, made.cert_pem)
    configuration["metadata"]["name"] = configuration_name
    configuration["webhooks"][0]["namespaceSelector"]["matchLabels"] = {scope: run_id}
    api = cluster.api_client()
    try:
        server.register(api, configuration)
        yield op, run_id
    finally:
        server.unregister(api, configuration_name)
        api.close()
        op.stop()
