"""The MutatingWebhookConfiguration for pod gating: the single source of its content.

In a cluster the Helm chart owns this object (its template mirrors `mutating_webhook_configuration`
and a chart test compares the two); the operator only serves the endpoint. We do not use kopf's
managed webhook configurations: kopf strips non-persistent webhooks from the configuration when a
replica exits, so a rolling update would let opted-in pods through ungated, and its generated
webhooks match every namespace with a 30-second timeout. Local runs and the tests render the same
object here with a URL client config (see `register` in `server.py`).

Run `python -m dbmigrate_operator.gating.webhook_config --help` to print it as YAML.
"""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any, Literal

from dbmigrate_operator.constants import GROUP, WAIT_FOR_LABEL

# The kopf handler id; it is also the URL path of the endpoint behind the Service (DNS-safe).
WEBHOOK_ID = "gate-pods"
# Webhook names must be fully qualified (at least three DNS labels).
WEBHOOK_NAME = f"{WEBHOOK_ID}.{GROUP}"
CONFIGURATION_NAME = "dbmigrate-operator"
DEFAULT_TIMEOUT_SECONDS = 5
# Our own API read in the handler must finish well before the API server gives up on us,
# so a slow API server leads to a gated pod (our choice) rather than to a failed webhook call.
API_READ_TIMEOUT_SECONDS = 2.0

FailurePolicy = Literal["Fail", "Ignore"]


def url_client_config(url: str, ca_bundle: bytes | None = None) -> dict[str, Any]:
    """Client config for a webhook reachable at a URL (local runs, tests); `url` is the server root."""
    config: dict[str, Any] = {"url": f"{url.rstrip('/')}/{WEBHOOK_ID}"}
    if ca_bundle:
        config["caBundle"] = base64.b64encode(ca_bundle).decode("ascii")
    return config


def service_client_config(
    *, namespace: str, service: str, port: int = 443, ca_bundle: bytes | None = None
) -> dict[str, Any]:
    """Client config for the in-cluster Service in front of the operator's webhook port."""
    config: dict[str, Any] = {
        "service": {"namespace": namespace, "name": service, "path": f"/{WEBHOOK_ID}", "port": port}
    }
    if ca_bundle:
        config["caBundle"] = base64.b64encode(ca_bundle).decode("ascii")
    return config


def mutating_webhook_configuration(
    *,
    client_config: dict[str, Any],
    operator_namespace: str,
    name: str = CONFIGURATION_NAME,
    failure_policy: FailurePolicy = "Fail",
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
    excluded_namespaces: tuple[str, ...] = ("kube-system",),
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The whole MutatingWebhookConfiguration object as a plain dict.

    - objectSelector: only pods that opted in reach us; every other pod is never sent.
    - namespaceSelector: never our own namespace (the operator's pods must start even when the
      webhook is down) nor kube-system.
    - failurePolicy Fail: an opted-in pod is never created ungated because the webhook was down.
    - reinvocationPolicy IfNeeded: if a later webhook rewrites spec.schedulingGates wholesale, we are
      called again and re-add our gate (the handler is idempotent).
    """
    excluded = sorted({operator_namespace, *excluded_namespaces})
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata,
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "admissionReviewVersions": ["v1"],
                "clientConfig": client_config,
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "operations": ["CREATE"],
                        "scope": "Namespaced",
                    }
                ],
                "objectSelector": {"matchExpressions": [{"key": WAIT_FOR_LABEL, "operator": "Exists"}]},
                "namespaceSelector": {
                    "matchExpressions": [
                        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded}
                    ]
                },
                "failurePolicy": failure_policy,
                "sideEffects": "None",
                "matchPolicy": "Equivalent",
                "reinvocationPolicy": "IfNeeded",
                "timeoutSeconds": timeout_seconds,
            }
        ],
    }


def main(argv: list[str] | None = None) -> int:
    """Print the configuration as YAML (for a chart author, or to apply by hand)."""
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--namespace", required=True, help="the operator's namespace")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--service", help="the Service in front of the operator's webhook port")
    target.add_argument("--url", help="the webhook server's root URL (local runs)")
    parser.add_argument("--port", type=int, default=443, help="the Service port")
    parser.add_argument("--ca-file", help="PEM CA bundle that signed the serving certificate")
    parser.add_argument("--failure-policy", choices=["Fail", "Ignore"], default="Fail")
    parser.add_argument("--timeout-seconds", type=int, default=DEFAULT_TIMEOUT_SECONDS)
    args = parser.parse_args(argv)
    ca = None
    if args.ca_file:
        with open(args.ca_file, "rb") as f:
            ca = f.read()
    client_config = (
        service_client_config(namespace=args.namespace, service=args.service, port=args.port, ca_bundle=ca)
        if args.service
        else url_client_config(args.url, ca)
    )
    configuration = mutating_webhook_configuration(
        client_config=client_config,
        operator_namespace=args.namespace,
        failure_policy=args.failure_policy,
        timeout_seconds=args.timeout_seconds,
    )
    yaml.safe_dump(configuration, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
