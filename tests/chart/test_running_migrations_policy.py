"""The running-migrations policy renders as promised (docs/install.md): on by default for every API version
the chart supports, DELETE of Jobs only, for the garbage collector's user names only; turned off
explicitly. What it refuses is checked on the real API server in test_running_migrations_policy_e2e.py."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.chart.conftest import KUBE_VERSION, VAP_API, VAP_BETA_API, Rendered, RenderFn

GC_USERS = ["system:serviceaccount:kube-system:generic-garbage-collector", "system:kube-controller-manager"]


def _running_migrations(rendered: Rendered) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def ours(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d for d in docs if d["metadata"]["name"].endswith("-running-migrations")]

    return (
        ours(rendered.of_kind("ValidatingAdmissionPolicy")),
        ours(rendered.of_kind("ValidatingAdmissionPolicyBinding")),
    )


@pytest.mark.parametrize(
    ("kube_version", "api", "version"), [(KUBE_VERSION, VAP_API, "v1"), ("1.29.0", VAP_BETA_API, "v1beta1")]
)
def test_rendered_by_default_for_the_garbage_collector_only(
    render: RenderFn, kube_version: str, api: str, version: str
) -> None:
    (policy,), (binding,) = _running_migrations(render(api_versions=(api,), kube_version=kube_version))
    assert policy["apiVersion"] == binding["apiVersion"] == f"admissionregistration.k8s.io/{version}"
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["DELETE"], "resources": ["jobs"]}
    ]
    by, job = spec["matchConditions"]
    assert by["expression"] == f"request.userInfo.username in {GC_USERS}".replace("'", '"').replace(", ", ",")
    for words in ('"dbmigrate-operator"', '"dbmigrate.dev/migration"', '"dbmigrate.dev/job-kind"', '"plan"'):
        assert words in job["expression"]
    (rule,) = spec["validations"]
    assert rule["expression"] == "variables.finished || variables.suspendedIdle || variables.namespaceGoing"
    for doc in (policy, binding):
        kubernetes_validate.validate(doc, kube_version, strict=True)


def test_off_switch_users_and_watched_namespaces(render: RenderFn) -> None:
    assert _running_migrations(render({"admissionPolicy": {"holdRunningJobs": False}})) == ([], [])
    assert _running_migrations(render({"admissionPolicy": {"enabled": False}})) == ([], [])
    (policy,), _ = _running_migrations(render({"admissionPolicy": {"garbageCollectorUsers": ["gc"]}}))
    assert policy["spec"]["matchConditions"][0]["expression"] == 'request.userInfo.username in ["gc"]'
    _, (binding,) = _running_migrations(render({"watchNamespaces": ["shop"]}))
    (selector,) = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert selector == {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop"]}
