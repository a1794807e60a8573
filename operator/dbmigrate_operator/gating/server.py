"""Webhook serving settings (environment variables), the kopf server, and local registration.

In a cluster: the chart mounts the serving certificate from a Secret (cert-manager's or its own)
at the default paths, creates the Service and the MutatingWebhookConfiguration; the operator
only listens. Locally (or in tests): without certificate files, a self-signed certificate is made
for the public host, and `DBMIGRATE_WEBHOOK_REGISTER=true` points a configuration at this process.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import pathlib
import tempfile
from collections.abc import Mapping
from typing import Any

import kopf
import kubernetes.client
from kubernetes.client.exceptions import ApiException

from dbmigrate_operator.gating import tls, webhook_config
from dbmigrate_operator.rawapi import RawApi, json_of, service_account_namespace

logger = logging.getLogger(__name__)

DEFAULT_CERT_DIR = "/etc/dbmigrate-operator/webhook-tls"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclasses.dataclass(frozen=True)
class WebhookSettings:
    listen_host: str = "0.0.0.0"  # a pod listens on its own IP; the Service fronts it
    port: int = 9443
    cert_file: str = f"{DEFAULT_CERT_DIR}/tls.crt"
    key_file: str = f"{DEFAULT_CERT_DIR}/tls.key"
    public_host: str | None = None  # the host in the URL and in a self-signed certificate
    register: bool = False
    failure_policy: webhook_config.FailurePolicy = "Fail"
    operator_namespace: str = "dbmigrate-system"
    sweep_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        """Read the DBMIGRATE_* variables (documented in docs/gating.md)."""
        env = os.environ if env is None else env
        defaults = cls()
        namespace = env.get("DBMIGRATE_OPERATOR_NAMESPACE") or service_account_namespace()
        policy = env.get("DBMIGRATE_WEBHOOK_FAILURE_POLICY", "Fail")
        if policy not in ("Fail", "Ignore"):
            raise ValueError(f"DBMIGRATE_WEBHOOK_FAILURE_POLICY must be Fail or Ignore, not {policy!r}")
        return cls(
            listen_host=env.get("DBMIGRATE_WEBHOOK_LISTEN_HOST") or defaults.listen_host,
            port=int(env.get("DBMIGRATE_WEBHOOK_PORT") or defaults.port),
            cert_file=env.get("DBMIGRATE_WEBHOOK_CERT_FILE") or defaults.cert_file,
            key_file=env.get("DBMIGRATE_WEBHOOK_KEY_FILE") or defaults.key_file,
            public_host=env.get("DBMIGRATE_WEBHOOK_PUBLIC_HOST") or None,
            register=_flag(env.get("DBMIGRATE_WEBHOOK_REGISTER")),
            failure_policy="Ignore" if policy == "Ignore" else "Fail",
            operator_namespace=namespace or defaults.operator_namespace,
            sweep_seconds=float(env.get("DBMIGRATE_GATE_SWEEP_SECONDS") or defaults.sweep_seconds),
        )

    @property
    def url_host(self) -> str:
        if self.public_host:
            return self.public_host
        return "127.0.0.1" if self.listen_host in ("0.0.0.0", "::", "") else self.listen_host

    @property
    def url(self) -> str:
        host = f"[{self.url_host}]" if ":" in self.url_host else self.url_host
        return f"https://{host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class Serving:
    """The kopf server and the CA bundle a client needs to trust it."""

    server: kopf.WebhookServer
    ca_bundle: bytes


def build_server(settings: WebhookSettings) -> Serving:
    """A kopf WebhookServer on the configured certificate, or on a fresh self-signed one.

    kopf re-reads mounted certificate files and restarts the listener when they change, so a
    certificate renewed by cert-manager is picked up without a restart.
    """
    cert, key = pathlib.Path(settings.cert_file), pathlib.Path(settings.key_file)
    if not (cert.is_file() and key.is_file()):
        logger.warning(
            f"No webhook certificate at {cert} and {key}: serving a self-signed one for "
            f"{settings.url_host} (fine for local runs; in a cluster, mount the chart's Secret there)."
        )
        made = tls.self_signed([settings.url_host, "localhost", "127.0.0.1"])
        directory = pathlib.Path(tempfile.mkdtemp(prefix="dbmigrate-webhook-"))
        cert, key = directory / "tls.crt", directory / "tls.key"
        cert.write_bytes(made.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(made.key_pem)
    # The CA bundle: a mounted ca.crt next to the certificate (cert-manager, chart), else the cert.
    ca_file = cert.with_name("ca.crt")
    ca_bundle = ca_file.read_bytes() if ca_file.is_file() else cert.read_bytes()
    server = kopf.WebhookServer(
        addr=settings.listen_host,
        port=settings.port,
        host=settings.url_host,
        certfile=str(cert),
        pkeyfile=str(key),
    )
    return Serving(server=server, ca_bundle=ca_bundle)


def local_configuration(settings: WebhookSettings, ca_bundle: bytes) -> dict[str, Any]:
    """The configuration pointing the API server at this process by URL (local runs, tests)."""
    return webhook_config.mutating_webhook_configuration(
        client_config=webhook_config.url_client_config(settings.url, ca_bundle),
        operator_namespace=settings.operator_namespace,
        failure_policy=settings.failure_policy,
    )


def register(api_client: kubernetes.client.ApiClient, configuration: dict[str, Any]) -> None:
    """Create or replace a MutatingWebhookConfiguration (blocking)."""
    api = RawApi(api_client)  # not AdmissionregistrationV1Api: see rawapi (memory)
    name = configuration["metadata"]["name"]
    try:
        api.create_mutating_webhook_configuration(configuration)
    except ApiException as e:
        if e.status != 409:
            raise
        current = json_of(api.read_mutating_webhook_configuration(name))
        replacement = copy.deepcopy(configuration)
        replacement["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        api.replace_mutating_webhook_configuration(name, replacement)
    logger.info(f"Registered MutatingWebhookConfiguration {name}.")


def unregister(api_client: kubernetes.client.ApiClient, name: str) -> None:
    """Delete a MutatingWebhookConfiguration if present (blocking)."""
    api = RawApi(api_client)  # not AdmissionregistrationV1Api: see rawapi (memory)
    try:
        api.delete_mutating_webhook_configuration(name)
    except ApiException as e:
        if e.status != 404:
            raise
