"""helm lint, helm template validated against the Kubernetes schemas, and the chart's promises."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from cryptography import x509

from tests.chart.conftest import (
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    VAP_API,
    VAP_BETA_API,
    Rendered,
    RenderFn,
    helm_args,
)

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "single-replica": {"replicaCount": 1, "peering": {"enabled": False}},
    "namespaced": {"watchNamespaces": ["shop", "billing"]},
    "cert-manager": {"webhook": {"certManager": {"enabled": True}}},
    "cert-manager-cluster-issuer": {
        "webhook": {
            "certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}
        }
    },
    "no-webhook": {"webhook": {"enabled": False}},
    "allowlists": {
        "watchNamespaces": ["shop"],
        "job": {
            "allowedImages": ["registry.example.com/migrations/"],
            "allowedServiceAccounts": ["migrator"],
        },
    },
    "network-policy": {
        "networkPolicy": {"enabled": True, "webhookFrom": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]}
    },
    "monitoring": {
        "metrics": {
            "port": 9100,
            "service": {"annotations": {"example.com/scrape": "true"}},
            "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "prometheus"},
                "heldPodsThresholdSeconds": 600,
            },
        }
    },
    "no-metrics": {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}},
    "everything-set": {
        "replicaCount": 3,
        "image": {"digest": "sha256:" + "a" * 64},
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceAccount": {"create": False, "name": "existing-sa"},
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "dbmigrate-operator"}},
            }
        ],
        "podAnnotations": {"prometheus.io/scrape": "false"},
        "podLabels": {"team": "platform"},
        "extraEnv": [{"name": "DBMIGRATE_APPLIED_VERSIONS_CAP", "value": "20"}],
        "webhook": {
            "failurePolicy": "Ignore",
            "timeoutSeconds": 3,
            "excludedNamespaces": ["kube-system", "ops"],
        },
        "podDisruptionBudget": {"minAvailable": 2},
        "job": {"allowedServiceAccounts": ["migrator", "default"], "allowedImages": ["reg.example/m/"]},
    },
}
# Kinds that are not built into Kubernetes (cert-manager's, the Prometheus Operator's).
CUSTOM_KINDS = {
    "Issuer",
    "Certificate",
    "ServiceMonitor",
    "PrometheusRule",
}
# The oldest supported minor (DESIGN.md: clusters from 1.29) and the one the tests run.
VALIDATE_VERSIONS = ["1.29.0", KUBE_VERSION]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(
    helm: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, scenario: str
) -> None:
    done = helm(
        "lint",
        str(CHART),
        "--strict",
        "--kube-version",
        KUBE_VERSION,
        # helm lint cannot be told what an API server serves: the policies' apiVersion is forced
        *helm_args(SCENARIOS[scenario], ["admissionPolicy.apiVersion=v1"], tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_objects_match_the_kubernetes_schemas(render: RenderFn, scenario: str) -> None:
    for version in VALIDATE_VERSIONS:
        # each supported version as its API server tells helm (1.29: the beta policy API turned on)
        api = VAP_BETA_API if version.startswith("1.29.") else VAP_API
        rendered = render(SCENARIOS[scenario], api_versions=(api,), kube_version=version)
        assert {"Deployment", "CustomResourceDefinition", "ValidatingAdmissionPolicy"} <= rendered.kinds()
        for doc in rendered.docs:
            if doc["kind"] in CUSTOM_KINDS:
                continue
            kubernetes_validate.validate(doc, version, strict=True)


# A values file written for the chart when it still ran kopf peering (every key it had then).
OLD_PEERING_VALUES = {"peering": {"enabled": True, "name": "shop-operator", "createObjects": True}}


def _kopf_objects(rendered: Rendered) -> list[dict[str, Any]]:
    return [
        doc
        for doc in rendered.docs
        if doc["apiVersion"].startswith("kopf.dev/")
        or (doc["kind"] == "CustomResourceDefinition" and doc["spec"]["group"] == "kopf.dev")
    ]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_kopf_peering_object_or_crd_is_rendered(render: RenderFn, scenario: str) -> None:
    """The replicas elect with a Lease the operator makes itself: nothing of kopf's peering is installed."""
    rendered = render(SCENARIOS[scenario])
    assert _kopf_objects(rendered) == []
    assert {c["spec"]["group"] for c in rendered.of_kind("CustomResourceDefinition")} == {"dbmigrate.dev"}
    rules = [r for kind in ("ClusterRole", "Role") for doc in rendered.of_kind(kind) for r in doc["rules"]]
    assert not [r for r in rules if "kopf.dev" in r["apiGroups"] or "peering" in str(r["resources"])]


@pytest.mark.parametrize("extra", [{}, SCENARIOS["namespaced"]], ids=["cluster-wide", "namespaced"])
def test_an_old_values_file_with_peering_create_objects_still_renders(
    render: RenderFn, extra: dict[str, Any]
) -> None:
    """`peering.createObjects` is deprecated and ignored, not rejected: `helm upgrade -f old.yaml` works."""
    rendered = render({**OLD_PEERING_VALUES, **extra})
    assert _kopf_objects(rendered) == []
    env = _env(_container(rendered))
    assert env["DBMIGRATE_STANDALONE"] == "false"
    assert env["DBMIGRATE_LEASE_NAME"] == "shop-operator"  # peering.name names the Lease
    assert rendered.one("PodDisruptionBudget")


BAD_VALUES = [
    (["replicaCount=0"], "/replicaCount", "minimum"),
    (["replicaCount=two"], "/replicaCount", "integer"),
    (["webhook.failurePolicy=Maybe"], "/webhook/failurePolicy", "Fail"),
    (["webhook.timeoutSeconds=60"], "/webhook/timeoutSeconds", "maximum"),
    (["webhook.port=80"], "/webhook/port", "minimum"),
    (["watchNamespaces[0]=Not_A_Namespace"], "/watchNamespaces/0", "pattern"),
    (["logFormat=xml"], "/logFormat", "plain"),
    (["imageTag=1.0"], "imageTag", "not allowed"),
    (["image.digest=latest"], "/image/digest", "pattern"),
    (["image.pullPolicy=Sometimes"], "/image/pullPolicy", "IfNotPresent"),
    (["podSecurityContext.runAsNonRoot=false"], "/podSecurityContext/runAsNonRoot", "true"),
    (["securityContext.privileged=true"], "/securityContext/privileged", "false"),
    (["resyncSeconds=1"], "/resyncSeconds", "minimum"),
    (["webhook.certManager.issuerRef.kind=Vault"], "/webhook/certManager/issuerRef", ""),
    (["webhook.certManager.duration=1year"], "/webhook/certManager/duration", "pattern"),
    (["extraEnv[0].value=x"], "/extraEnv/0", "name"),
    (["metrics.port=80"], "/metrics/port", "minimum"),
    (["metrics.serviceMonitor.interval=soon"], "/metrics/serviceMonitor/interval", "pattern"),
    (
        ["metrics.prometheusRule.heldPodsThresholdSeconds=0"],
        "/metrics/prometheusRule/heldPodsThresholdSeconds",
        "minimum",
    ),
]


@pytest.mark.parametrize(("sets", "where", "why"), BAD_VALUES, ids=[b[0][0] for b in BAD_VALUES])
def test_schema_rejects_bad_values_with_a_clear_message(
    helm: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    sets: list[str],
    where: str,
    why: str,
) -> None:
    done = helm(
        "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, "--api-versions", VAP_API,
        *helm_args(None, sets, tmp_path),
    )  # fmt: skip
    assert done.returncode != 0, f"{sets} was accepted"
    assert "values don't meet the specifications of the schema" in done.stderr
    assert where in done.stderr, done.stderr
    assert why in done.stderr, done.stderr


def test_several_replicas_without_peering_fail_with_the_reason(
    helm: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    sets = ["replicaCount=2", "peering.enabled=false"]
    done = helm(
        "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, "--api-versions", VAP_API,
        *helm_args(None, sets, tmp_path),
    )  # fmt: skip
    assert done.returncode != 0
    assert "needs peering.enabled=true" in done.stderr


def test_chart_refuses_clusters_older_than_1_29(
    helm: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    done = helm("template", RELEASE, str(CHART), "--kube-version", "1.28.9")
    assert done.returncode != 0
    assert "kubeVersion" in done.stderr


# --- the Deployment -------------------------------------------------------------------------


def _container(rendered: Any) -> dict[str, Any]:
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_pod_meets_the_restricted_pod_security_standard(render: RenderFn) -> None:
    rendered = render()
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    container = _container(rendered)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    assert all("hostPath" not in v for v in pod["volumes"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])


def test_pod_runs_as_the_images_user(render: RenderFn) -> None:
    """runAsUser must equal the Dockerfile's USER, or file permissions in the image would not fit."""
    from tests.images.conftest import OPERATOR_DOCKERFILE
    from tests.images.dockerfile_model import load

    user = load(OPERATOR_DOCKERFILE).final.last("USER")
    assert user is not None
    uid, _, gid = user.value.partition(":")
    pod = render().one("Deployment")["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == uid
    assert str(pod["securityContext"]["runAsGroup"]) == gid


def test_ports_probes_and_service_agree(render: RenderFn) -> None:
    rendered = render()
    container = _container(rendered)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = _env(container)
    assert env["DBMIGRATE_LIVENESS_ENDPOINT"] == f"http://0.0.0.0:{ports['health']}/healthz"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["tcpSocket"] == {"port": "webhook"}
    assert int(env["DBMIGRATE_WEBHOOK_PORT"]) == ports["webhook"]
    assert int(env["DBMIGRATE_METRICS_PORT"]) == ports["metrics"] == 8000
    service = _service(rendered, "webhook")
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    selector = rendered.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    metrics = _service(rendered, "metrics")
    assert metrics["spec"]["ports"] == [
        {"name": "metrics", "port": 8000, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert metrics["spec"]["selector"] == selector


def _service(rendered: Any, suffix: str) -> dict[str, Any]:
    (found,) = [s for s in rendered.of_kind("Service") if s["metadata"]["name"].endswith(f"-{suffix}")]
    return found


LIBC_ENV = {"MALLOC_ARENA_MAX"}  # read by glibc's allocator, not by the operator's code


def test_the_operator_runs_with_few_malloc_arenas_and_trims_its_heap(render: RenderFn) -> None:
    """glibc settings that keep the operator's RSS down (docs/benchmarks.md, figure 7), overridable."""
    env = _env(_container(render()))
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert float(env["DBMIGRATE_MALLOC_TRIM_SECONDS"]) > 0
    env = _env(_container(render({"memory": {"mallocArenaMax": 4, "trimSeconds": 0}})))
    assert (env["MALLOC_ARENA_MAX"], env["DBMIGRATE_MALLOC_TRIM_SECONDS"]) == ("4", "0")


def test_every_operator_setting_the_chart_passes_is_read_by_the_operator(render: RenderFn) -> None:
    """A renamed variable in the operator must not leave the chart setting a dead one."""
    source = "\n".join(p.read_text() for p in (CHART.parents[1] / "operator").rglob("*.py"))
    for scenario in SCENARIOS:
        env = _env(_container(render(SCENARIOS[scenario])))
        for name in set(env) - LIBC_ENV:
            assert f'"{name}"' in source, f"{scenario}: the chart sets {name}, which the operator never reads"


def test_certificate_files_are_where_the_operator_looks(render: RenderFn) -> None:
    from dbmigrate_operator.gating import server

    rendered = render()
    container = _container(rendered)
    env = _env(container)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "webhook-tls")
    assert mount["mountPath"] == server.DEFAULT_CERT_DIR
    assert mount["readOnly"] is True
    assert env["DBMIGRATE_WEBHOOK_CERT_FILE"] == server.WebhookSettings().cert_file
    assert env["DBMIGRATE_WEBHOOK_KEY_FILE"] == server.WebhookSettings().key_file
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-tls")
    assert volume["secret"]["secretName"] == rendered.one("Secret")["metadata"]["name"]


def test_replicas_elect_with_the_lease_and_a_pdb(render: RenderFn) -> None:
    rendered = render()
    assert rendered.one("Deployment")["spec"]["replicas"] >= 2
    env = _env(_container(rendered))
    assert env["DBMIGRATE_STANDALONE"] == "false"
    assert env["DBMIGRATE_LEASE_NAME"] == f"{RELEASE}-dbmigrate-operator"  # the release's full name
    assert "DBMIGRATE_PEERING_NAME" not in env
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == rendered.one("Deployment")["spec"]["selector"]
    strategy = rendered.one("Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0, "a rollout must never leave the webhook without a replica"


def test_single_replica_runs_standalone_without_pdb(render: RenderFn) -> None:
    rendered = render(SCENARIOS["single-replica"])
    assert _env(_container(rendered))["DBMIGRATE_STANDALONE"] == "true"
    assert not rendered.of_kind("PodDisruptionBudget")


def test_watch_namespaces_elect_with_one_lease_in_the_release_namespace(render: RenderFn) -> None:
    rendered = render(SCENARIOS["namespaced"])
    env = _env(_container(rendered))
    assert env["DBMIGRATE_NAMESPACES"] == "shop,billing"
    assert env["DBMIGRATE_STANDALONE"] == "false"
    assert env["DBMIGRATE_LEASE_NAME"] == f"{RELEASE}-dbmigrate-operator"


def test_scheduling_settings_pass_through(render: RenderFn) -> None:
    values = SCENARIOS["everything-set"]
    rendered = render(values)
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName"):
        assert pod[key] == values[key], key
    assert pod["serviceAccountName"] == "existing-sa"
    assert not rendered.of_kind("ServiceAccount")
    assert (
        _container(rendered)["image"]
        == f"ghcr.io/dbmigrate-operator/dbmigrate-operator@{values['image']['digest']}"
    )


def test_default_affinity_spreads_replicas_over_nodes(render: RenderFn) -> None:
    pod = render().one("Deployment")["spec"]["template"]["spec"]
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


# --- the self-generated webhook certificate -------------------------------------------------


def test_generated_certificate_is_signed_by_the_ca_in_the_webhook_configuration(render: RenderFn) -> None:
    rendered = render()
    secret = rendered.one("Secret")
    assert secret["type"] == "kubernetes.io/tls"
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert.verify_directly_issued_by(ca)
    (webhook,) = rendered.one("MutatingWebhookConfiguration")["webhooks"]
    assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca_pem
    service = _service(rendered, "webhook")["metadata"]["name"]
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert f"{service}.{NAMESPACE}.svc" in names  # the name the API server dials


def test_cert_manager_mode_lets_cert_manager_issue_and_inject(render: RenderFn) -> None:
    rendered = render(SCENARIOS["cert-manager"])
    assert not rendered.of_kind("Secret"), "the chart must not generate a certificate as well"
    serving = _certificate(rendered, "webhook")
    configuration = rendered.one("MutatingWebhookConfiguration")
    assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-tls")
    assert volume["secret"]["secretName"] == serving["spec"]["secretName"]
    service = _service(rendered, "webhook")["metadata"]["name"]
    assert f"{service}.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    assert not serving["spec"].get("isCA")


def _certificate(rendered: Any, suffix: str) -> dict[str, Any]:
    (found,) = [x for x in rendered.of_kind("Certificate") if x["metadata"]["name"].endswith(f"-{suffix}")]
    return dict(found)


def test_cert_manager_mode_signs_the_serving_certificate_with_a_long_lived_ca(render: RenderFn) -> None:
    """selfSigned Issuer → CA Certificate → CA Issuer → serving Certificate; the caBundle is the CA's.

    A selfSigned Issuer signing the serving certificate itself would change the caBundle on every
    renewal: until cainjector and every API server caught up, calls to the webhook would fail TLS.
    """
    rendered = render(SCENARIOS["cert-manager"])
    issuers = {x["metadata"]["name"]: x["spec"] for x in rendered.of_kind("Issuer")}
    assert len(issuers) == 2
    serving, ca = _certificate(rendered, "webhook"), _certificate(rendered, "webhook-ca")
    assert len(rendered.of_kind("Certificate")) == 2
    # the CA: self-signed, long-lived, its key kept across renewals (old serving certs stay valid)
    assert ca["spec"]["isCA"] is True
    assert "selfSigned" in issuers[ca["spec"]["issuerRef"]["name"]]
    assert _hours(ca["spec"]["duration"]) >= 5 * _hours(serving["spec"]["duration"])
    assert ca["spec"]["privateKey"]["rotationPolicy"] == "Never"
    # the serving certificate: signed by the CA Issuer that holds the CA's Secret
    ca_issuer = issuers[serving["spec"]["issuerRef"]["name"]]
    assert ca_issuer == {"ca": {"secretName": ca["spec"]["secretName"]}}
    assert serving["spec"]["issuerRef"]["kind"] == "Issuer"
    # cainjector injects the CA, which serving-certificate renewals do not change
    configuration = rendered.one("MutatingWebhookConfiguration")
    meta = ca["metadata"]
    assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{meta['namespace']}/{meta['name']}"
    )


def _hours(duration: str) -> float:
    match = re.fullmatch(r"(\d+)h", duration)
    assert match, duration
    return float(match.group(1))


def test_cert_manager_with_an_existing_issuer_creates_none(render: RenderFn) -> None:
    rendered = render(SCENARIOS["cert-manager-cluster-issuer"])
    assert not rendered.of_kind("Issuer")
    certificate = rendered.one("Certificate")
    assert certificate["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    # the issuer's own CA comes with the serving certificate (its ca.crt)
    meta = certificate["metadata"]
    assert (
        rendered.one("MutatingWebhookConfiguration")["metadata"]["annotations"][
            "cert-manager.io/inject-ca-from"
        ]
        == f"{meta['namespace']}/{meta['name']}"
    )


def test_without_webhook_nothing_webhook_related_is_rendered(render: RenderFn) -> None:
    rendered = render(SCENARIOS["no-webhook"])
    assert not {"Secret", "MutatingWebhookConfiguration", "Certificate"} & rendered.kinds()
    assert [s["metadata"]["name"] for s in rendered.of_kind("Service")] == [
        f"{RELEASE}-dbmigrate-operator-metrics"
    ]
    env = _env(_container(rendered))
    assert not [name for name in env if name.startswith("DBMIGRATE_WEBHOOK_")]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_parses_the_settings_the_chart_gives_it(render: RenderFn, scenario: str) -> None:
    """Feed the rendered env to the operator's own settings readers, as the pod would."""
    from dbmigrate_operator.gating.server import WebhookSettings
    from dbmigrate_operator.settings import Settings

    values = SCENARIOS[scenario]
    container = _container(render(values))
    env = {}
    for item in container["env"]:
        if "valueFrom" in item:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, item
            env[item["name"]] = NAMESPACE
        else:
            env[item["name"]] = item["value"]
    settings = Settings.from_env(env)
    assert settings.namespaces == tuple(values.get("watchNamespaces", ()))
    assert settings.standalone is (not values.get("peering", {}).get("enabled", True))
    assert settings.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    assert settings.log_format == "json"
    assert settings.resync_seconds == 300
    job = values.get("job", {})
    assert settings.allowed_service_accounts == tuple(job.get("allowedServiceAccounts", ()))
    assert settings.allowed_images == tuple(job.get("allowedImages", ()))
    metrics = values.get("metrics", {})
    assert settings.metrics_port == (metrics.get("port", 8000) if metrics.get("enabled", True) else 0)
    if values.get("webhook", {}).get("enabled", True):
        webhook = WebhookSettings.from_env(env)
        assert webhook.operator_namespace == NAMESPACE
        assert webhook.port == 9443
        assert webhook.failure_policy == values.get("webhook", {}).get("failurePolicy", "Fail")
        assert webhook.register is False, "in a cluster the chart owns the webhook configuration"


def test_replicas_started_from_the_chart_elect_with_a_lease_in_the_release_namespace(
    render: RenderFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every replica runs kopf without peering (kopf pauses only its own handlers, never our tasks);
    the one that writes holds the Lease named by the chart, in the release namespace."""
    import kopf

    from dbmigrate_operator import __main__ as entry
    from dbmigrate_operator import metrics

    container = _container(render())
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    # not the chart's fixed port 8000 on this machine: another test run may hold it
    monkeypatch.setattr(metrics, "serve", lambda port: None)
    for item in container["env"]:
        monkeypatch.setenv(item["name"], item.get("value", NAMESPACE))
    entry.main([])
    assert calls[0]["standalone"] is True
    assert "peering_name" not in calls[0]
    from dbmigrate_operator.settings import Settings

    settings = Settings.from_env(dict(os.environ))
    assert settings.standalone is False
    assert settings.lease_namespace == NAMESPACE
    assert settings.lease_name == _env(container)["DBMIGRATE_LEASE_NAME"] == f"{RELEASE}-dbmigrate-operator"


def test_watch_namespaces_still_grant_the_lease_in_the_release_namespace(render: RenderFn) -> None:
    rendered = render(SCENARIOS["namespaced"])
    (role,) = [r for r in rendered.of_kind("Role") if r["metadata"]["namespace"] == NAMESPACE]
    lease = f"{RELEASE}-dbmigrate-operator"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease],
            "verbs": ["get", "update"],
        },
    ]
    bindings = [b for b in rendered.of_kind("RoleBinding") if b["metadata"]["namespace"] == NAMESPACE]
    assert [b["roleRef"]["name"] for b in bindings] == [role["metadata"]["name"]]


def test_metrics_service_monitor_and_alerts(render: RenderFn) -> None:
    """monitoring.coreos.com/v1 objects (no schema to validate against): their structure, by hand."""
    values = SCENARIOS["monitoring"]
    rendered = render(values)
    container = _container(rendered)
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in container["ports"]
    service = _service(rendered, "metrics")
    assert service["metadata"]["annotations"] == {"example.com/scrape": "true"}
    assert service["spec"]["ports"][0]["port"] == 9100

    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()  # it selects the metrics Service...
    webhook = _service(rendered, "webhook")
    assert not selected.items() <= webhook["metadata"]["labels"].items()  # ...and not the webhook's
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s"}

    rule = rendered.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == {"DatabaseMigrationFailed", "DatabaseMigrationPodsHeldTooLong"}
    for alert in alerts.values():
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}
        assert isinstance(alert["expr"], str)
        assert alert["labels"]["severity"] == "warning"
        assert "{{ $" in alert["annotations"]["summary"]  # Prometheus templating survives Helm's
    assert "dbmigrate_runs_total" in alerts["DatabaseMigrationFailed"]["expr"]
    assert alerts["DatabaseMigrationPodsHeldTooLong"]["expr"].endswith("> 600")
    # every metric an alert reads is one the operator exports
    from prometheus_client import REGISTRY

    from dbmigrate_operator import metrics  # noqa: F401 - registers them

    exported = {family.name for family in REGISTRY.collect()}
    for alert in alerts.values():
        for name in re.findall(r"dbmigrate_[a-z_]+", alert["expr"]):
            assert name.removesuffix("_total") in exported, name


def test_metrics_off_renders_no_port_service_or_monitor(render: RenderFn) -> None:
    rendered = render(SCENARIOS["no-metrics"])
    assert not {"ServiceMonitor", "PrometheusRule"} & rendered.kinds()
    assert not [s for s in rendered.of_kind("Service") if s["metadata"]["name"].endswith("-metrics")]
    container = _container(rendered)
    assert "metrics" not in {p["name"] for p in container["ports"]}
    assert _env(container)["DBMIGRATE_METRICS_PORT"] == "0"


def test_monitoring_objects_are_off_by_default(render: RenderFn) -> None:
    assert not {"ServiceMonitor", "PrometheusRule"} & render().kinds()
