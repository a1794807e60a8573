"""Run the gating handlers in-process (kopf) against kmock, and talk to the webhook over HTTPS.

kmock is an in-memory Kubernetes API emulator with known limits, which the tests must not lean on:
- label/field selectors are ignored (lists return every object): our code filters on the client
  side as well, and the tests put non-matching pods next to matching ones;
- a failing JSON-patch `test` op yields HTTP 500 (a real API server says 422), and intercepted
  writes are still applied to the stored objects: conflicts are tested with a fake API instead;
- no strategic merge (everything is a plain merge) and no admission chain: we only send JSON
  patches, and the real admission chain is covered by tests/e2e/test_gating.py;
- watch events fire only for changes made over HTTP, so the tests change objects over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import pathlib
import ssl
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonpatch
import kmock
import kopf
import pytest
import yaml

import dbmigrate_operator.gating
from dbmigrate_operator import identity
from dbmigrate_operator.constants import API_VERSION, KIND, PLURAL, SCHEDULING_GATE, WAIT_FOR_LABEL
from dbmigrate_operator.gating import tls

DM_RESOURCE = f"{API_VERSION}/{PLURAL}"
NAMESPACE = "shop"


def gating_registry() -> kopf.OperatorRegistry:
    """A registry with only the gating handlers (the default one may hold the controller's too)."""
    default = kopf.get_default_registry()
    registry = kopf.OperatorRegistry()
    prefix = dbmigrate_operator.gating.__name__

    def ours(handler: Any) -> bool:
        return str(getattr(handler.fn, "__module__", "")).startswith(prefix)

    for sub in ("_activities", "_watching", "_webhooks", "_changing", "_spawning", "_indexing"):
        for handler in getattr(default, sub).get_all_handlers():
            if ours(handler):
                getattr(registry, sub).append(handler)

    # kopf and our kubernetes client then read the same $KUBECONFIG, set by the test.
    kopf.on.login(registry=registry, id="login-kubeconfig")(kopf.login_with_kubeconfig)
    return registry


class KopfThread:
    """kopf in its own thread and event loop.

    At exit kopf cancels every task of its loop that it did not see at start; in the test's loop
    that would include pytest's own fixture tasks, hence a dedicated loop.
    """

    def __init__(self, registry: kopf.OperatorRegistry) -> None:
        self.registry = registry
        self.stop = threading.Event()
        self.failure: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="kopf", daemon=True)

    def _run(self) -> None:
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False
        settings.watching.server_timeout = 10
        try:
            asyncio.run(
                kopf.operator(
                    registry=self.registry,
                    settings=settings,
                    standalone=True,
                    clusterwide=True,
                    stop_flag=self.stop,
                    memo=kopf.Memo(),
                )
            )
        except BaseException as e:
            self.failure.append(e)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        self.thread.join(20)

    def check_alive(self) -> None:
        if not self.thread.is_alive():
            raise RuntimeError(f"the operator exited: {self.failure!r}")


def declare_resources(k: kmock.KubernetesEmulator) -> None:
    k.resources["v1/pods"] = kmock.ResourceInfo(
        kind="Pod", namespaced=True, verbs={"get", "list", "watch", "create", "patch"}
    )
    k.resources["v1/events"] = kmock.ResourceInfo(kind="Event", namespaced=True, verbs={"create", "list"})
    k.resources["apps/v1/replicasets"] = kmock.ResourceInfo(kind="ReplicaSet", namespaced=True, verbs={"get"})
    k.resources[DM_RESOURCE] = kmock.ResourceInfo(
        kind=KIND, namespaced=True, verbs={"get", "list", "watch", "patch"}, subresources={"status"}
    )


def write_kubeconfig(path: pathlib.Path, server: str) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                "current-context": "kmock",
            }
        )
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    """A running in-process operator with gating; `review()` posts an AdmissionReview to it."""

    def __init__(self, port: int, ca: bytes) -> None:
        self.port = port
        self.ssl = ssl.create_default_context(cadata=ca.decode())

    async def review(self, pod: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        request = admission_review(pod, dry_run=dry_run)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"https://127.0.0.1:{self.port}/gate-pods", json=request, ssl=self.ssl) as resp,
        ):
            assert resp.status == 200, await resp.text()
            response: dict[str, Any] = (await resp.json())["response"]
            assert response["uid"] == request["request"]["uid"]
            return response


@contextlib.asynccontextmanager
async def running_operator(
    k: kmock.KubernetesEmulator, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, **env: str
) -> AsyncIterator[Operator]:
    """Start kopf with the gating handlers against kmock; stop it on exit."""
    server_url = str(k.url).rstrip("/")
    write_kubeconfig(tmp_path / "kubeconfig", server_url)
    made = tls.self_signed(["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(made.cert_pem)
    (tmp_path / "tls.key").write_bytes(made.key_pem)
    port = free_port()
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    env.update(
        {
            "KUBECONFIG": str(tmp_path / "kubeconfig"),
            "DBMIGRATE_WEBHOOK_LISTEN_HOST": "127.0.0.1",
            "DBMIGRATE_WEBHOOK_PORT": str(port),
            "DBMIGRATE_WEBHOOK_CERT_FILE": str(tmp_path / "tls.crt"),
            "DBMIGRATE_WEBHOOK_KEY_FILE": str(tmp_path / "tls.key"),
            "DBMIGRATE_OPERATOR_NAMESPACE": "dbmigrate-system",
        }
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    kopf_thread = KopfThread(gating_registry())
    kopf_thread.start()
    try:
        async with asyncio.timeout(30):
            while not port_open(port):
                kopf_thread.check_alive()
                await asyncio.sleep(0.05)
        yield Operator(port, made.cert_pem)
    finally:
        await asyncio.to_thread(kopf_thread.join)


def port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def admission_review(pod: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
    """An AdmissionReview as the API server sends it for a pod created by a ReplicaSet."""
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "namespace": pod["metadata"].get("namespace"),
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": str(uuid.uuid4()),
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:kube-system",
                    "system:authenticated",
                ],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def applied(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The pod after the API server applies the webhook's JSON patch."""
    if "patch" not in response:
        return pod
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(pod, patch)
    return result


def make_pod(
    name: str,
    *,
    wait_for: str | None = "shop-db",
    version: str | None = None,
    gates: tuple[str, ...] = (),
    owner: dict[str, Any] | None = None,
    namespace: str = NAMESPACE,
) -> dict[str, Any]:
    labels = {"app": "web"}
    if wait_for is not None:
        labels[WAIT_FOR_LABEL] = wait_for
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": labels}
    if version is not None:
        meta["annotations"] = {"dbmigrate.dev/wait-for-version": version}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "containers": [{"name": "web", "image": "example/web:1"}],
            **({"schedulingGates": [{"name": g} for g in gates]} if gates else {}),
        },
    }


def migration_body(
    name: str = "shop-db", *, ready: bool, generation: int = 1, applied: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": "Succeeded" if ready else "Running",
        "conditions": [
            {"type": "Ready", "status": "True" if ready else "False", "observedGeneration": generation}
        ],
    }
    spec = {"image": "example/migrations:1", "database": {"secretRef": {"name": "shop-db"}}}
    if applied is not None:
        status["appliedVersions"] = applied
        # The versions belong to the database the spec names (status.database, see identity.py).
        status["database"] = {"ref": identity.ref(spec), "job": f"{name}-1"}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": NAMESPACE, "generation": generation, "uid": f"uid-{name}"},
        "spec": spec,
        "status": status,
    }


def gates_of(pod: dict[str, Any]) -> list[str]:
    return [g["name"] for g in (pod.get("spec") or {}).get("schedulingGates") or []]


__all__ = ["SCHEDULING_GATE"]
