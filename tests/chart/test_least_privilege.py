"""Least privilege that holds (issue #11), offline: the admission policy and the NetworkPolicy render as
promised; tests/chart/test_least_privilege_e2e.py checks them on the real API server."""

from __future__ import annotations

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
    assert len(policies) == 2
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
