"""The chart repeats nothing: CRDs, RBAC rules and the webhook configuration come from their owners."""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbmigrate_operator.gating import webhook_config
from tests.chart.conftest import CHART, NAMESPACE, RELEASE, ROOT, Rendered, RenderFn

REPO_CRDS = sorted((ROOT / "crds").glob("*.yaml"))
RBAC_RULES = CHART / "files" / "rbac-rules.yaml"
# Resources in the rules file, by scope. A new resource must be sorted into one of these on
# purpose: the namespaced install binds cluster-scoped ones cluster-wide, the rest per namespace.
CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces"}
NAMESPACED = {
    "databasemigrations",
    "databasemigrations/status",
    "jobs",
    "pods",
    "pods/log",
    "events",
    "replicasets",
    "leases",
}


def test_repository_crds_exist() -> None:
    assert [p.name for p in REPO_CRDS] == ["databasemigrations.dbmigrate.dev.yaml"]


@pytest.mark.parametrize("crd", REPO_CRDS, ids=lambda p: p.name)
def test_chart_links_every_repository_crd(crd: Path) -> None:
    link = CHART / "crds" / crd.name
    assert link.is_symlink(), f"{link} must be a symlink to {crd} (single source), not a copy"
    assert link.resolve() == crd.resolve()


@pytest.mark.parametrize("crd", REPO_CRDS, ids=lambda p: p.name)
def test_packaged_chart_carries_the_crd_itself(
    helm: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, crd: Path
) -> None:
    """`helm package` follows the symlink: the tarball has the file's content, not a dangling link."""
    done = helm("package", str(CHART), "--destination", str(tmp_path))
    assert done.returncode == 0, done.stderr
    (package,) = tmp_path.glob("dbmigrate-operator-*.tgz")
    with tarfile.open(package) as tar:
        member = tar.getmember(f"dbmigrate-operator/crds/{crd.name}")
        assert member.isfile()
        packaged = tar.extractfile(member)
        assert packaged is not None
        assert packaged.read() == crd.read_bytes()


def test_rendered_crds_are_exactly_the_repository_crds(render: RenderFn) -> None:
    crds = {c["metadata"]["name"]: c for c in render().of_kind("CustomResourceDefinition")}
    for path in REPO_CRDS:
        ours = yaml.safe_load(path.read_text())
        assert crds.pop(ours["metadata"]["name"]) == ours
    assert crds == {}, "the chart ships no CRD of its own (kopf's peering CRDs are gone)"


def test_chart_crds_are_only_links_to_the_repository_crds() -> None:
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [p.name for p in REPO_CRDS]


# --- RBAC -------------------------------------------------------------------------------------


def _rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load(RBAC_RULES.read_text())
    assert isinstance(rules, list)
    assert rules
    return rules


def test_rbac_rules_grant_no_secrets_and_no_wildcards() -> None:
    for rule in _rules():
        assert "secrets" not in rule["resources"], rule
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_rbac_rule_resources_are_classified_by_scope() -> None:
    resources = {r for rule in _rules() for r in rule["resources"]}
    assert resources <= CLUSTER_SCOPED | NAMESPACED, resources - CLUSTER_SCOPED - NAMESPACED


LEASE = "<lease>"  # in rbac-rules.yaml: the operator's own Lease


def _split(lease: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rules file as the chart must bind it: (ClusterRole rules, leader-election Role rules)."""
    lease_rules = [r for r in _rules() if "coordination.k8s.io" in r["apiGroups"]]
    for rule in lease_rules:
        if "resourceNames" in rule:
            rule["resourceNames"] = [lease if n == LEASE else n for n in rule["resourceNames"]]
    return [r for r in _rules() if "coordination.k8s.io" not in r["apiGroups"]], lease_rules


def test_lease_rules_name_the_operators_own_lease() -> None:
    """Issue #18: get/update only the operator's own Lease; create (which cannot be limited by
    name) is the only namespace-wide right, and no rule on Leases is cluster-wide."""
    lease_rules = [r for r in _rules() if "leases" in r["resources"]]
    assert lease_rules, "leader election needs its Lease rules"
    for rule in lease_rules:
        assert rule["apiGroups"] == ["coordination.k8s.io"]
        assert rule["resources"] == ["leases"]
        if rule.get("resourceNames") != [LEASE]:
            assert rule["verbs"] == ["create"], rule
    verbs = {v for r in lease_rules for v in r["verbs"]}
    assert verbs == {"get", "create", "update"}
    assert not {"delete", "patch", "list", "watch", "deletecollection"} & verbs


def _lease_role(rendered: Rendered) -> dict[str, Any]:
    (binding,) = [b for b in rendered.of_kind("RoleBinding") if b["roleRef"]["kind"] == "Role"]
    assert binding["metadata"]["namespace"] == NAMESPACE
    sa = rendered.one("ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": NAMESPACE}]
    role = rendered.one("Role")
    assert role["metadata"]["name"] == binding["roleRef"]["name"]
    assert role["metadata"]["namespace"] == NAMESPACE
    return role


def test_cluster_wide_install_binds_exactly_the_rules_file(render: RenderFn) -> None:
    rendered = render()
    role = rendered.one("ClusterRole")
    cluster_rules, lease_rules = _split(f"{RELEASE}-dbmigrate-operator")
    assert role["rules"] == cluster_rules
    assert not [r for r in role["rules"] if "leases" in r["resources"]], "no Lease of the cluster"
    binding = rendered.one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = rendered.one("ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}
    ]
    # the Lease rights: a Role in the release namespace, get/update on the Lease the operator uses
    assert _lease_role(rendered)["rules"] == lease_rules
    env = {
        e["name"]: e.get("value")
        for e in rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert [r["resourceNames"] for r in lease_rules if "resourceNames" in r] == [
        [env["DBMIGRATE_LEASE_NAME"]]
    ]
    # peering.name renames the Lease: the Role follows
    renamed = render({"peering": {"name": "shop-leader"}})
    assert _lease_role(renamed)["rules"] == _split("shop-leader")[1]


def test_no_lease_rights_without_leader_election(render: RenderFn) -> None:
    rendered = render({"replicaCount": 1, "peering": {"enabled": False}})
    assert not rendered.of_kind("Role")
    assert not rendered.of_kind("RoleBinding")
    assert rendered.one("ClusterRole")["rules"] == _split("unused")[0]


def test_namespaced_install_grants_namespaced_rules_only_in_watched_namespaces(render: RenderFn) -> None:
    cluster_rules, lease_rules = _split(f"{RELEASE}-dbmigrate-operator")
    # the release namespace among the watched ones or not: the Lease rights are the same Role's
    for watched in (["shop", "billing"], ["shop", NAMESPACE]):
        rendered = render({"watchNamespaces": watched})
        roles = {r["metadata"]["name"]: r for r in rendered.of_kind("ClusterRole")}
        bindings = [b for b in rendered.of_kind("RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"]
        assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(watched)
        (main,) = {b["roleRef"]["name"] for b in bindings}
        assert _lease_role(rendered)["rules"] == lease_rules
        assert roles[main]["rules"] == cluster_rules
        (cluster_binding,) = rendered.of_kind("ClusterRoleBinding")
        cluster_role = roles[cluster_binding["roleRef"]["name"]]
        assert cluster_role["metadata"]["name"] != main
        granted = {r for rule in cluster_role["rules"] for r in rule["resources"]}
        assert granted == CLUSTER_SCOPED & {r for rule in _rules() for r in rule["resources"]}
        for rule in cluster_role["rules"]:
            original = next(o for o in _rules() if set(rule["resources"]) <= set(o["resources"]))
            assert rule["verbs"] == original["verbs"]
            assert rule["apiGroups"] == original["apiGroups"]


def test_rbac_disabled_renders_none(render: RenderFn) -> None:
    kinds = render({"rbac": {"create": False}}).kinds()
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} & kinds


# --- the webhook configuration ------------------------------------------------------------------


def _strip(configuration: dict[str, Any]) -> dict[str, Any]:
    """Drop what only the chart decides: metadata labels/annotations and the CA bundle."""
    out = yaml.safe_load(yaml.safe_dump(configuration))
    out["metadata"] = {"name": out["metadata"]["name"]}
    for webhook in out["webhooks"]:
        webhook["clientConfig"].pop("caBundle", None)
    return dict(out)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "webhook": {
                "failurePolicy": "Ignore",
                "timeoutSeconds": 9,
                "excludedNamespaces": ["ops", "kube-system"],
            }
        },
    ],
    ids=["default", "custom"],
)
def test_webhook_configuration_mirrors_the_gating_module(render: RenderFn, values: dict[str, Any]) -> None:
    rendered = render(values)
    chart = rendered.one("MutatingWebhookConfiguration")
    webhook = {**{"failurePolicy": "Fail", "timeoutSeconds": 5, "excludedNamespaces": ["kube-system"]}}
    webhook.update(values.get("webhook", {}))
    (service,) = [
        s["metadata"]["name"]
        for s in rendered.of_kind("Service")
        if s["metadata"]["name"].endswith("-webhook")
    ]
    expected = webhook_config.mutating_webhook_configuration(
        client_config=webhook_config.service_client_config(namespace=NAMESPACE, service=service, port=443),
        operator_namespace=NAMESPACE,
        name=chart["metadata"]["name"],
        failure_policy=webhook["failurePolicy"],
        timeout_seconds=webhook["timeoutSeconds"],
        excluded_namespaces=tuple(webhook["excludedNamespaces"]),
    )
    assert _strip(chart) == _strip(expected)


def test_namespaced_webhook_only_gates_watched_namespaces(render: RenderFn) -> None:
    chart = render({"watchNamespaces": ["shop", "kube-system", "billing"]}).one(
        "MutatingWebhookConfiguration"
    )
    (webhook,) = chart["webhooks"]
    assert webhook["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["billing", "shop"]}
        ]
    }
    assert webhook["name"] == webhook_config.WEBHOOK_NAME
    assert webhook["clientConfig"]["service"]["path"] == f"/{webhook_config.WEBHOOK_ID}"


def test_webhook_refuses_to_gate_nothing(
    helm: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    done = helm(
        "template",
        RELEASE,
        str(CHART),
        "--kube-version",
        "1.34.4",
        "--api-versions",
        "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
        "-n",
        NAMESPACE,
        "--set",
        f"watchNamespaces={{{NAMESPACE}}}",
    )
    assert done.returncode != 0
    assert "every namespace in watchNamespaces is excluded" in done.stderr


def test_the_e2e_identity_binds_exactly_what_the_chart_binds() -> None:
    """localcluster/stack.py (every control-plane test's operator identity) splits the rules file as
    the chart does: a missing or extra permission shows in the e2e tests too."""
    from localcluster import stack

    assert stack.RBAC_RULES == RBAC_RULES
    assert stack.operator_rules("dbm-ha") == _split("dbm-ha")
