"""Least privilege that holds (issue #11), on the real API server: the chart installed with helm, then
requests made as the operator's own ServiceAccount (a token kubeconfig: exactly the chart's RBAC).

- the chart's ValidatingAdmissionPolicy lets the operator remove its scheduling gate from a Pod and
  nothing else, create (and delete) only migration Jobs as it builds them, and change nothing of a
  DatabaseMigration but its own finalizer;
- a namespaced install (`watchNamespaces`) binds its rights to those namespaces: 403 elsewhere, and no
  cluster-wide list or watch of Jobs and Pods.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dbmigrate_operator import constants as c
from dbmigrate_operator import jobs
from dbmigrate_operator.gating.patches import remove_gate_patch
from dbmigrate_operator.settings import Settings
from localcluster import Cluster
from localcluster.stack import wait_for
from tests.chart.conftest import CHART

pytestmark = pytest.mark.e2e

OTHER_GATE = "example.com/quota"
DENIED = "denied request"  # ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request: ...


@dataclass
class Install:
    release: str
    fullname: str
    namespace: str  # the release's
    app: str  # the one watched namespace
    other: str  # a namespace the operator does not watch
    operator: Path  # kubeconfig of the operator's ServiceAccount

    def as_operator(self, cluster: Cluster, *args: str, input: str | None = None) -> tuple[bool, str]:
        done = cluster.kubectl(*args, kubeconfig=self.operator, input=input, check=False)
        return done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def install(cluster: Cluster, namespace: str) -> Iterator[Install]:
    app = cluster.create_namespace("lp-app")
    other = cluster.create_namespace("lp-other")
    release = f"dbm-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-dbmigrate-operator"
    # No --wait: what is checked here is RBAC and admission, not the operator's pods.
    cluster.helm("install", release, str(CHART), "-n", namespace, "--set", f"watchNamespaces={{{app}}}")
    try:
        kinds = cluster.kubectl("get", "validatingadmissionpolicies", "-o", "name").stdout
        assert f"{fullname}-pods" in kinds, kinds
        assert f"{fullname}-jobs" in kinds, kinds
        cluster.kubectl("wait", "--for=condition=Established", "crd/databasemigrations.dbmigrate.dev")
        kubeconfig = cluster.service_account_kubeconfig(namespace, fullname, create=False)
        installed = Install(release, fullname, namespace, app, other, kubeconfig)
        wait_until_enforced(cluster, installed)
        yield installed
    finally:
        cluster.helm("uninstall", release, "-n", namespace, "--wait", check=False)
        cluster.delete_namespace(app)
        cluster.delete_namespace(other)


def refused(result: tuple[bool, str], *words: str) -> None:
    """The request failed, and its error says all of `words`."""
    ok, out = result
    assert not ok, f"allowed, expected a refusal naming {words}"
    for word in words:
        assert word in out, out


def wait_until_enforced(cluster: Cluster, install: Install) -> None:
    """A new policy takes a moment to reach the API server's admission: probe both with dry runs."""
    gated_pod(cluster, install.app, "probe")
    pod = {"name": "x", "image": "x:1"}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "probe", "namespace": install.app},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [pod]}}},
    }
    label = json.dumps({"metadata": {"labels": {"probe": "yes"}}})
    dry = "--dry-run=server"

    def enforced() -> bool:
        jobs_ = install.as_operator(cluster, "create", dry, "-f", "-", input=json.dumps(job))[1]
        pods = install.as_operator(
            cluster, "patch", "pod", "probe", "-n", install.app, dry, "--type", "merge", "-p", label
        )[1]
        return DENIED in jobs_ and DENIED in pods

    wait_for(enforced, 60, "the admission policies to be enforced")


def gated_pod(cluster: Cluster, namespace: str, name: str = "app") -> dict[str, Any]:
    """A Pod held by another controller's gate and ours (created as admin: no wait-for label, no webhook)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "web"}},
        "spec": {
            "schedulingGates": [{"name": OTHER_GATE}, {"name": c.SCHEDULING_GATE}],
            "containers": [{"name": "app", "image": "registry.example.com/shop:1"}],
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    return dict(json.loads(cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout))


def migration(cluster: Cluster, namespace: str, name: str = "shop-db") -> dict[str, Any]:
    cr = {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "image": "registry.example.com/shop-migrations:1.4.2",
            "database": {"urlSecretRef": {"name": "shop-db", "key": "url"}},
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(cr))
    return dict(json.loads(cluster.kubectl("get", "dbm", name, "-n", namespace, "-o", "json").stdout))


def operator_job(cr: dict[str, Any], **job: Any) -> dict[str, Any]:
    """The Job exactly as the operator builds it (spec.job fields from `job`)."""
    cr = copy.deepcopy(cr)
    cr["spec"]["job"] = job
    manifest = jobs.build_job(cr, hash_=jobs.run_hash(cr), command="upgrade", settings=Settings())
    manifest["spec"]["suspend"] = True  # nothing needs to run: admission is what is checked
    return manifest


def patch_pod(
    install: Install, cluster: Cluster, pod: dict[str, Any], patch: Any, kind: str
) -> tuple[bool, str]:
    meta = pod["metadata"]
    where = ["-n", meta["namespace"], "--type", kind]
    return install.as_operator(cluster, "patch", "pod", meta["name"], *where, "-p", json.dumps(patch))


def test_operator_may_only_remove_its_own_scheduling_gate(cluster: Cluster, install: Install) -> None:
    pod = gated_pod(cluster, install.app)
    forged = {
        "change the image": (
            "json",
            [{"op": "replace", "path": "/spec/containers/0/image", "value": "evil.example.com/miner:1"}],
            "the rest of its spec",
        ),
        "add a label": ("merge", {"metadata": {"labels": {"owned": "yes"}}}, "labels, annotations"),
        "remove another controller's gate": (
            "json",
            [
                {"op": "test", "path": "/spec/schedulingGates/0/name", "value": OTHER_GATE},
                {"op": "remove", "path": "/spec/schedulingGates/0"},
            ],
            "other scheduling gates must stay",
        ),
        "remove our gate and change the image": (
            "json",
            [
                *(remove_gate_patch(pod) or []),
                {"op": "replace", "path": "/spec/containers/0/image", "value": "evil.example.com/miner:1"},
            ],
            "the rest of its spec",
        ),
        "add a toleration": (
            "json",
            [{"op": "add", "path": "/spec/tolerations/-", "value": {"key": "x", "operator": "Exists"}}],
            "the rest of its spec",
        ),
    }
    for kind, patch, message in forged.values():
        refused(patch_pod(install, cluster, pod, patch, kind), DENIED, message)
    now = json.loads(cluster.kubectl("get", "pod", "app", "-n", install.app, "-o", "json").stdout)
    assert now["spec"]["schedulingGates"] == pod["spec"]["schedulingGates"]
    assert now["spec"]["containers"][0]["image"] == "registry.example.com/shop:1"

    # what the operator does (gating/patches.py): allowed, and only our gate goes
    ok, out = patch_pod(install, cluster, pod, remove_gate_patch(pod), "json")
    assert ok, out
    now = json.loads(cluster.kubectl("get", "pod", "app", "-n", install.app, "-o", "json").stdout)
    assert now["spec"]["schedulingGates"] == [{"name": OTHER_GATE}]
    # the policy binds the operator only: an admin (or another controller) is not limited by it
    cluster.kubectl(
        "patch", "pod", "app", "-n", install.app, "--type", "merge", "-p", '{"metadata":{"labels":{"x":"y"}}}'
    )


def test_operator_may_only_add_or_remove_its_finalizer_on_a_databasemigration(
    cluster: Cluster, install: Install
) -> None:
    """RBAC's `patch` on databasemigrations is for the run-in-progress finalizer (deletion.py
    holds_deletion): the admission policy refuses the operator any other change of the resource."""
    cr = migration(cluster, install.app)

    def patch(body: Any, kind: str = "merge", *flags: str) -> tuple[bool, str]:
        where = ["-n", install.app, "--type", kind, *flags]
        return install.as_operator(cluster, "patch", "dbm", "shop-db", *where, "-p", json.dumps(body))

    spec_change = {"spec": {"image": "evil.example.com/miner:1"}}
    wait_for(lambda: DENIED in patch(spec_change, "merge", "--dry-run=server")[1], 60, "the policy enforced")
    forged = [
        spec_change,
        {"metadata": {"labels": {"owned": "yes"}}},
        {"metadata": {"annotations": {c.APPROVE_ANNOTATION: "0" * 64}}},
        {"metadata": {"finalizers": [c.RUN_FINALIZER, "example.com/other"]}},
    ]
    for body in forged:
        refused(patch(body), DENIED, "dbmigrate.dev/run-in-progress finalizer")
    ok, out = patch({"metadata": {"finalizers": [c.RUN_FINALIZER]}})  # what handlers.py sends
    assert ok, out
    ok, out = patch({"metadata": {"finalizers": None}})
    assert ok, out
    now = json.loads(cluster.kubectl("get", "dbm", "shop-db", "-n", install.app, "-o", "json").stdout)
    assert now["spec"] == cr["spec"]
    assert not now["metadata"].get("finalizers")


def test_operator_may_only_create_migration_jobs_as_it_builds_them(
    cluster: Cluster, install: Install
) -> None:
    cr = migration(cluster, install.app)
    legit = operator_job(cr)
    name = legit["metadata"]["name"]

    bare = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "bare", "namespace": install.app},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "x", "image": "evil.example.com/miner:1"}],
                }
            },
        },
    }
    labelled = copy.deepcopy(legit)
    labelled["metadata"]["name"] = "no-owner"
    del labelled["metadata"]["ownerReferences"]
    foreign_owner = copy.deepcopy(legit)
    foreign_owner["metadata"]["name"] = "foreign-owner"
    foreign_owner["metadata"]["ownerReferences"][0].update(
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop-db"}
    )
    token = copy.deepcopy(legit)
    token["metadata"]["name"] = "with-token"
    token["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    host = copy.deepcopy(legit)
    host["metadata"]["name"] = "host-path"
    host["spec"]["template"]["spec"]["volumes"].append({"name": "root", "hostPath": {"path": "/"}})
    bad_jobs = {
        "a Job without labels or owner": (bare, "labels app.kubernetes.io/managed-by=dbmigrate-operator"),
        "a Job without an owner": (labelled, "controller ownerReference"),
        "a Job owned by something else": (foreign_owner, "controller ownerReference"),
        "a Job mounting a token": (token, "mounts no ServiceAccount token"),
        "a Job with a hostPath volume": (host, "no volume but emptyDir"),
    }
    for manifest, message in bad_jobs.values():
        created = install.as_operator(cluster, "create", "-f", "-", input=json.dumps(manifest))
        refused(created, DENIED, message, manifest["metadata"]["name"])

    ok, out = install.as_operator(cluster, "create", "-f", "-", input=json.dumps(legit))
    assert ok, out
    # a plan Job (spec.approval) is built like a run's Job: admitted without more rights
    plan_job = jobs.build_plan_job(cr, hash_=jobs.run_hash(cr), settings=Settings())
    plan_job["spec"]["suspend"] = True
    ok, out = install.as_operator(cluster, "create", "-f", "-", input=json.dumps(plan_job))
    assert ok, out
    # deleting: its own Jobs yes (history trimming), anybody else's no
    cluster.kubectl("create", "-f", "-", input=json.dumps(bare))
    refused(install.as_operator(cluster, "delete", "job", "bare", "-n", install.app), DENIED)
    ok, out = install.as_operator(cluster, "delete", "job", name, "-n", install.app)
    assert ok, out


def test_service_account_allowlist_is_enforced_by_the_api_server_too(
    cluster: Cluster, install: Install
) -> None:
    cluster.helm(
        "upgrade", install.release, str(CHART), "-n", install.namespace, "--reuse-values",
        "--set", "job.allowedServiceAccounts={migrator}",
        "--set", "job.allowedImages={registry.example.com/}",
    )  # fmt: skip
    cr = migration(cluster, install.app)
    deployment = json.loads(
        cluster.kubectl("get", "deployment", install.fullname, "-n", install.namespace, "-o", "json").stdout
    )
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DBMIGRATE_ALLOWED_SERVICE_ACCOUNTS"] == "migrator"
    assert env["DBMIGRATE_ALLOWED_IMAGES"] == "registry.example.com/"

    def create(manifest: dict[str, Any], *flags: str) -> tuple[bool, str]:
        return install.as_operator(cluster, "create", *flags, "-f", "-", input=json.dumps(manifest))

    # The upgraded policy takes a moment to reach the API server's admission (as after an install).
    admin_job = operator_job(cr, serviceAccountName="admin-sa")
    wait_for(
        lambda: "allowlist" in create(admin_job, "--dry-run=server")[1], 60, "the upgraded policy enforced"
    )
    refused(create(admin_job), "not in the operator's allowlist (migrator)")
    # unset: the namespace's "default"
    refused(create(operator_job(cr)), "not in the operator's allowlist (migrator)")
    evil = copy.deepcopy(cr)
    evil["spec"]["image"] = "evil.example.com/miner:1"
    refused(
        create(operator_job(evil, serviceAccountName="migrator")), "allowed prefixes (registry.example.com/)"
    )
    ok, out = create(operator_job(cr, serviceAccountName="migrator"))
    assert ok, out


def test_watch_namespaces_bind_the_operators_rights_to_them(cluster: Cluster, install: Install) -> None:
    """A namespaced install: create Jobs and patch Pods inside the watched namespace only, and no
    cluster-wide list or watch of Jobs or Pods (the operator's own watches are per namespace)."""
    from kubernetes import client
    from kubernetes.client import ApiException

    user = f'User "system:serviceaccount:{install.namespace}:{install.fullname}" cannot'
    inside = migration(cluster, install.app)
    outside = migration(cluster, install.other)
    created = install.as_operator(cluster, "create", "-f", "-", input=json.dumps(operator_job(outside)))
    refused(created, "Forbidden", f'{user} create resource "jobs"')
    ok, out = install.as_operator(cluster, "create", "-f", "-", input=json.dumps(operator_job(inside)))
    assert ok, out

    with cluster.api_client(install.operator) as api:
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        for what, call in {
            "list pods": lambda: core.list_pod_for_all_namespaces(limit=1),
            "watch pods": lambda: core.list_pod_for_all_namespaces(watch=True, timeout_seconds=1),
            "list jobs": lambda: batch.list_job_for_all_namespaces(limit=1),
            "watch jobs": lambda: batch.list_job_for_all_namespaces(watch=True, timeout_seconds=1),
            "list jobs elsewhere": lambda: batch.list_namespaced_job(install.other, limit=1),
        }.items():
            with pytest.raises(ApiException) as denied:
                call()
            assert denied.value.status == 403, what
        # patch a Pod: elsewhere refused by RBAC (kubectl would GET first: the client sends the PATCH alone)
        for where in (install.other, install.app):
            pod = gated_pod(cluster, where)
            patch = remove_gate_patch(pod)
            if where == install.other:
                with pytest.raises(ApiException) as denied:
                    core.patch_namespaced_pod("app", where, patch)
                assert denied.value.status == 403
                message = json.loads(denied.value.body)["message"]
                assert f'{user} patch resource "pods"' in message, message
            else:
                core.patch_namespaced_pod("app", where, patch)
        # inside: the watches the operator runs
        assert batch.list_namespaced_job(install.app, limit=1) is not None
        assert core.list_namespaced_pod(install.app, limit=1) is not None


def test_the_operator_may_touch_its_own_lease_only(cluster: Cluster, namespace: str) -> None:
    """Issue #18: a cluster-wide install (the default) used to grant get/create/update on every Lease
    of the cluster: kube-controller-manager's leader election, the nodes' heartbeats. Now a Role in
    the release namespace, get/update limited to the operator's own Lease."""
    release = f"dbm-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-dbmigrate-operator"
    # cluster-wide RBAC, but no webhook: other tests' pods are not sent to an operator that is not there
    cluster.helm("install", release, str(CHART), "-n", namespace, "--set", "webhook.enabled=false")
    try:
        sa = f"system:serviceaccount:{namespace}:{fullname}"
        assert cluster.kubectl("get", "clusterrolebinding", fullname, check=False).returncode == 0

        def can(verb: str, what: str, where: str) -> bool:
            done = cluster.kubectl("auth", "can-i", verb, what, "-n", where, "--as", sa, check=False)
            assert done.stdout.strip() in ("yes", "no"), done.stdout + done.stderr
            return done.stdout.strip() == "yes"

        leases = "leases.coordination.k8s.io"
        node_leases = cluster.kubectl("get", "leases", "-n", "kube-node-lease", "-o", "name").stdout.split()
        assert node_leases, "the node agent renews its heartbeat Lease in kube-node-lease"
        others = [
            ("kube-system", f"{leases}/kube-controller-manager"),
            ("kube-system", f"{leases}/kube-scheduler"),
            *(("kube-node-lease", f"{leases}/{name.rsplit('/', 1)[1]}") for name in node_leases),
            (namespace, f"{leases}/another-operators-lease"),
        ]
        for where, what in others:
            for verb in ("get", "update", "patch", "delete"):
                assert not can(verb, what, where), f"{verb} {what} in {where}"
        for where in ("kube-system", "kube-node-lease", "default"):
            for verb in ("create", "list", "watch"):
                assert not can(verb, leases, where), f"{verb} leases in {where}"
        # its own: read, renew, hand back, and make it the first time
        own = f"{leases}/{fullname}"
        assert can("get", own, namespace)
        assert can("update", own, namespace)
        assert can("create", leases, namespace)
        assert not can("delete", own, namespace)
    finally:
        cluster.helm("uninstall", release, "-n", namespace, "--wait", check=False)


def test_disallowed_images_are_refused_at_the_databasemigration(cluster: Cluster, install: Install) -> None:
    """Issue #18: `create databasemigrations` + an image of one's choice reads any Secret key of the
    namespace (the Job mounts what the CR names). job.allowedImages now refuses such a CR itself,
    for whoever creates it, with the reason; before, only the operator and its Jobs were held."""
    cluster.helm(
        "upgrade", install.release, str(CHART), "-n", install.namespace, "--reuse-values",
        "--set", "job.allowedImages={registry.example.com/shop-migrations:,ghcr.io/shop/}",
    )  # fmt: skip
    message = (
        "is not allowed here: it must start with one of the prefixes of the dbmigrate-operator chart's"
        " job.allowedImages (registry.example.com/shop-migrations:, ghcr.io/shop/)"
    )

    def cr(name: str, image: str, where: str) -> str:
        return json.dumps(
            {
                "apiVersion": c.API_VERSION,
                "kind": c.KIND,
                "metadata": {"name": name, "namespace": where},
                "spec": {"image": image, "database": {"urlSecretRef": {"name": "shop-db", "key": "url"}}},
            }
        )

    def create(name: str, image: str, where: str, *flags: str) -> tuple[bool, str]:
        done = cluster.kubectl("create", *flags, "-f", "-", input=cr(name, image, where), check=False)
        return done.returncode == 0, done.stdout + done.stderr

    evil = "evil.example.com/secret-dumper:1"
    wait_for(
        lambda: DENIED in create("probe", evil, install.app, "--dry-run=server")[1],
        60,
        "the image policy to be enforced",
    )
    refused(create("dumper", evil, install.app), DENIED, f"spec.image {evil} {message}")
    # a prefix is a prefix: the same repository name under another registry or path is not it
    refused(create("lookalike", "registry.example.com/shop-migrations-evil:1", install.app), message)
    ok, out = create("shop-db", "registry.example.com/shop-migrations:1.4.2", install.app)
    assert ok, out
    ok, out = create("other-team", "ghcr.io/shop/migrations@sha256:" + "a" * 64, install.app)
    assert ok, out
    # changing the image to one outside: refused; a change that keeps the image: allowed
    patch = json.dumps({"spec": {"image": evil}})
    done = cluster.kubectl(
        "patch", "dbm", "shop-db", "-n", install.app, "--type", "merge", "-p", patch, check=False
    )
    refused((done.returncode == 0, done.stdout + done.stderr), DENIED, message)
    cluster.kubectl("label", "dbm", "shop-db", "-n", install.app, "team=shop")
    image = cluster.kubectl("get", "dbm", "shop-db", "-n", install.app, "-o", "jsonpath={.spec.image}")
    assert image.stdout == "registry.example.com/shop-migrations:1.4.2"
    # a namespace this release does not serve is not its to police (another release may allow more)
    ok, out = create("elsewhere", evil, install.other)
    assert ok, out
