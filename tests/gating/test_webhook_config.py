"""The MutatingWebhookConfiguration we render (the chart mirrors it): valid, and hardened."""

from __future__ import annotations

import base64

import kubernetes_validate
import pytest

from dbmigrate_operator.constants import WAIT_FOR_LABEL
from dbmigrate_operator.gating import webhook_config
from dbmigrate_operator.gating.webhook_config import (
    WEBHOOK_ID,
    mutating_webhook_configuration,
    service_client_config,
    url_client_config,
)


def render(**kwargs: object) -> dict[str, object]:
    client = service_client_config(namespace="dbmigrate-system", service="dbmigrate-operator-webhook")
    return mutating_webhook_configuration(
        client_config=client,
        operator_namespace="dbmigrate-system",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("version", ["1.29.0", "1.34.0"])
def test_validates_against_the_kubernetes_schema(version: str) -> None:
    kubernetes_validate.validate(render(), version, strict=True)
    url = url_client_config("https://127.0.0.1:9443/", b"PEM")
    configuration = mutating_webhook_configuration(client_config=url, operator_namespace="x")
    kubernetes_validate.validate(configuration, version, strict=True)


def test_hardening() -> None:
    (hook,) = render()["webhooks"]  # type: ignore[misc]
    assert hook["objectSelector"] == {"matchExpressions": [{"key": WAIT_FOR_LABEL, "operator": "Exists"}]}
    assert hook["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["dbmigrate-system", "kube-system"],
            }
        ]
    }
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["timeoutSeconds"] <= 10
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }
    ]


def test_failure_policy_is_configurable() -> None:
    (hook,) = render(failure_policy="Ignore")["webhooks"]  # type: ignore[misc]
    assert hook["failurePolicy"] == "Ignore"


def test_client_configs_route_to_the_handler_id() -> None:
    assert WEBHOOK_ID == "gate-pods"  # DNS-safe: it is the URL path behind the Service
    service = service_client_config(namespace="ns", service="svc", ca_bundle=b"PEM")
    assert service == {
        "service": {"namespace": "ns", "name": "svc", "path": "/gate-pods", "port": 443},
        "caBundle": base64.b64encode(b"PEM").decode(),
    }
    assert url_client_config("https://127.0.0.1:9443/") == {"url": "https://127.0.0.1:9443/gate-pods"}


def test_cli_prints_the_same_object(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    assert (
        webhook_config.main(["--namespace", "dbmigrate-system", "--service", "dbmigrate-operator-webhook"])
        == 0
    )
    assert yaml.safe_load(capsys.readouterr().out) == render()
