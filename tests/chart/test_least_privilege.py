"""Least privilege that holds (issue #11), offline: the admission policy and the NetworkPolicy render as
promised; tests/chart/test_least_privilege_e2e.py checks them on the real API server."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest

from tests.chart.conftest import (
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    VAP_API,
    VAP_BETA_API,
    Rendered,
    RenderFn,
)

VAP = "ValidatingAdmissionPolicy"
POLICY_KINDS = {VAP, "ValidatingAdmissionPolicyBinding"}
OPERATOR = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-dbmigrate-operator"


def _policies(rendered: Rendered) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return rendered.of_kind(VAP), rendered.of_kind("ValidatingAdmissionPolicyBinding")


@pytest.mark.parametrize(
    ("kube_version", "api", "version"),
    [(KUBE_VERSION, VAP_API, "v1"), ("1.29.0", VAP_BETA_API, "v1beta1"), ("1.30.0", VAP_API, "v1")],
)
def test_admission_policy_renders_for_the_api_the_server_serves(
    render: RenderFn, kube_version: str, api: str, version: str
) -> None:
    """Kubernetes 1.30+ serves v1; 1.29 only v1beta1 (where the cluster turned it on)."""
    rendered = render(api_versions=(api,), kube_version=kube_version)
    policies, bindings = _policies(rendered)
    # pods, jobs, databasemigrations (the run-in-progress finalizer only); and running-migrations, which
    # holds the garbage collector, not the operator (tests/chart/test_running_migrations_policy.py)
    assert len(policies) == 4
    names = sorted(p["metadata"]["name"] for p in policies)
    assert sorted(b["spec"]["policyName"] for b in bindings) == names
    for binding in bindings:
        assert binding["spec"]["validationActions"] == ["Deny"]
    for policy in policies:
        assert policy["spec"]["failurePolicy"] == "Fail"
        if policy["metadata"]["name"].endswith("-running-migrations"):
            continue
        (condition,) = policy["spec"]["matchConditions"]
        assert condition["expression"] == f'request.userInfo.username == "{OPERATOR}"'
    for doc in policies + bindings:
        assert doc["apiVersion"] == f"admissionregistration.k8s.io/{version}"
        kubernetes_validate.validate(doc, kube_version, strict=True)
    # both served (1.30-1.3x with the beta still on): the GA one
    both = render(api_versions=(VAP_BETA_API, VAP_API), kube_version=kube_version)
    if version == "v1":
        assert {
            d["apiVersion"] for d in [*both.of_kind(VAP), *both.of_kind("ValidatingAdmissionPolicyBinding")]
        } == {"admissionregistration.k8s.io/v1"}


def test_admission_policy_never_silently_disappears(
    render: RenderFn, helm: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """A 1.29 API server without the beta API (its default): the install fails and says why, unless
    the policy is turned off explicitly (it used to render nothing, silently)."""
    for version in ("1.29.0", KUBE_VERSION):
        done = helm("template", RELEASE, str(CHART), "--kube-version", version, "-n", NAMESPACE)
        assert done.returncode != 0, f"{version}: rendered without any admission policy"
        for words in (
            "admissionPolicy.enabled=true, but this API server serves no ValidatingAdmissionPolicy",
            "--runtime-config=admissionregistration.k8s.io/v1beta1=true",
            "--set admissionPolicy.enabled=false",
        ):
            assert words in done.stderr, done.stderr
    off = render({"admissionPolicy": {"enabled": False}}, api_versions=(), kube_version="1.29.0")
    assert not POLICY_KINDS & off.kinds()
    assert "Deployment" in off.kinds()
    assert not POLICY_KINDS & render({"admissionPolicy": {"enabled": False}}).kinds(), "off means off"
    # offline rendering (no capabilities) may name the API version itself
    forced = render({"admissionPolicy": {"apiVersion": "v1beta1"}}, api_versions=(), kube_version="1.29.0")
    assert {
        d["apiVersion"] for d in [*forced.of_kind(VAP), *forced.of_kind("ValidatingAdmissionPolicyBinding")]
    } == {"admissionregistration.k8s.io/v1beta1"}


def test_admission_policy_follows_the_service_account_and_namespace(render: RenderFn) -> None:
    rendered = render(
        {"serviceAccount": {"create": False, "name": "ops-sa"}}, namespace="ops", api_versions=(VAP_API,)
    )
    for policy in rendered.of_kind("ValidatingAdmissionPolicy"):
        if policy["metadata"]["name"].endswith("-running-migrations"):
            continue  # the garbage collector's, not the operator's
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


def test_allowed_images_are_enforced_on_the_databasemigration_itself(render: RenderFn) -> None:
    """job.allowedImages: a policy on DatabaseMigration create/update (for everybody, not only the
    operator) refuses spec.image outside the prefixes; empty = any image, no such policy."""
    assert not [p for p in render().of_kind(VAP) if p["metadata"]["name"].endswith("-images")]
    prefixes = ["registry.example.com/migrations/", "ghcr.io/shop/"]
    for values, namespaces in (
        ({"job": {"allowedImages": prefixes}}, None),
        ({"job": {"allowedImages": prefixes}, "watchNamespaces": ["shop", "billing"]}, ["shop", "billing"]),
    ):
        rendered = render(values)
        (policy,) = [p for p in rendered.of_kind(VAP) if p["metadata"]["name"].endswith("-images")]
        (binding,) = [
            b
            for b in rendered.of_kind("ValidatingAdmissionPolicyBinding")
            if b["spec"]["policyName"] == policy["metadata"]["name"]
        ]
        assert "matchConditions" not in policy["spec"], "whoever creates a DatabaseMigration"
        (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
        assert rule["apiGroups"] == ["dbmigrate.dev"]
        assert rule["resources"] == ["databasemigrations"], "not the status subresource"
        assert rule["operations"] == ["CREATE", "UPDATE"]
        (validation,) = policy["spec"]["validations"]
        assert '["registry.example.com/migrations/","ghcr.io/shop/"]' in validation["expression"]
        assert "registry.example.com/migrations/, ghcr.io/shop/" in validation["messageExpression"]
        assert binding["spec"]["validationActions"] == ["Deny"]
        selector = binding["spec"].get("matchResources", {}).get("namespaceSelector")
        if namespaces is None:
            assert selector is None
        else:
            (expression,) = selector["matchExpressions"]
            assert expression == {
                "key": "kubernetes.io/metadata.name",
                "operator": "In",
                "values": namespaces,
            }
        for doc in (policy, binding):
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


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
