"""Least privilege that holds (issue #11), offline: the admission policy and the NetworkPolicy render as
promised; tests/chart/test_least_privilege_e2e.py checks them on the real API server."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.chart.conftest import KUBE_VERSION, NAMESPACE, RELEASE, VAP_API, RenderFn

VAP = "ValidatingAdmissionPolicy"
POLICY_KINDS = {VAP, "ValidatingAdmissionPolicyBinding"}
OPERATOR = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-dbmigrate-operator"


def test_admission_policy_renders_only_where_the_api_server_serves_it(render: RenderFn) -> None:
    assert not POLICY_KINDS & render().kinds(), "an API server without VAP v1 (< 1.30) gets none"
    assert not POLICY_KINDS & render({"admissionPolicy": {"enabled": False}}, api_versions=(VAP_API,)).kinds()
    rendered = render(api_versions=(VAP_API,))
    policies = rendered.of_kind("ValidatingAdmissionPolicy")
    bindings = rendered.of_kind("ValidatingAdmissionPolicyBinding")
    assert len(policies) == 3  # pods, jobs, databasemigrations (the run-in-progress finalizer only)
    names = sorted(p["metadata"]["name"] for p in policies)
    assert sorted(b["spec"]["policyName"] for b in bindings) == names
    for binding in bindings:
        assert binding["spec"]["validationActions"] == ["Deny"]
    for policy in policies:
        assert policy["spec"]["failurePolicy"] == "Fail"
        (condition,) = policy["spec"]["matchConditions"]
        assert condition["expression"] == f'request.userInfo.username == "{OPERATOR}"'
    for doc in rendered.of_kind("ValidatingAdmissionPolicy") + bindings:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_admission_policy_follows_the_service_account_and_namespace(render: RenderFn) -> None:
    rendered = render(
        {"serviceAccount": {"create": False, "name": "ops-sa"}}, namespace="ops", api_versions=(VAP_API,)
    )
    for policy in rendered.of_kind("ValidatingAdmissionPolicy"):
        (condition,) = policy["spec"]["matchConditions"]
        assert '"system:serviceaccount:ops:ops-sa"' in condition["expression"]


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"job": {"allowedServiceAccounts": ["migrator", "default"]}}, '["migrator","default"]'),
        ({"job": {"allowedImages": ["registry.example.com/"]}}, '["registry.example.com/"]'),
    ],
)
def test_admission_policy_carries_the_allowlists(
    render: RenderFn, values: dict[str, dict[str, list[str]]], words: str
) -> None:
    plain = render(api_versions=(VAP_API,))
    listed = render(values, api_versions=(VAP_API,))
    (policy,) = [
        p for p in listed.of_kind("ValidatingAdmissionPolicy") if p["metadata"]["name"].endswith("-jobs")
    ]
    assert any(words in v["expression"] for v in policy["spec"]["validations"])
    (before,) = [
        p for p in plain.of_kind("ValidatingAdmissionPolicy") if p["metadata"]["name"].endswith("-jobs")
    ]
    assert len(policy["spec"]["validations"]) == len(before["spec"]["validations"]) + 1


# ------------------------------------------------------------------ NetworkPolicy


def test_network_policy_is_off_by_default(render: RenderFn) -> None:
    assert "NetworkPolicy" not in render().kinds()


def test_network_policy_opens_only_the_webhook_metrics_and_health_ports(render: RenderFn) -> None:
    rendered = render({"networkPolicy": {"enabled": True}})
    policy = rendered.one("NetworkPolicy")
    for version in ("1.29.0", KUBE_VERSION):
        kubernetes_validate.validate(policy, version, strict=True)
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    webhook, metrics, health = policy["spec"]["ingress"]
    assert webhook == {"ports": [{"port": 9443, "protocol": "TCP"}]}, "default: any source, that port only"
    assert metrics == {"ports": [{"port": 8000, "protocol": "TCP"}]}
    assert health == {"ports": [{"port": 8080, "protocol": "TCP"}]}
    container = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in container["ports"]} == {9443, 8000, 8080}, "no other port to open"


def test_network_policy_takes_the_webhook_peers_from_values(render: RenderFn) -> None:
    peers = [{"ipBlock": {"cidr": "10.0.0.0/24"}}, {"namespaceSelector": {"matchLabels": {"team": "ops"}}}]
    values: dict[str, Any] = {
        "networkPolicy": {"enabled": True, "webhookFrom": peers, "allowHealthPort": False},
        "metrics": {"enabled": False},
    }
    values["webhook"] = {"port": 10250}
    policy = render(values).one("NetworkPolicy")
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 10250, "protocol": "TCP"}], "from": peers}]
