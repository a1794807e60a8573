"""The operator's one API client (issue 21): every request, whoever makes it (controller, gating, the
Lease, the webhook's registration), carries a timeout; one error description, with no credential in
it; one way to build the ApiClient; and no other module builds one or loads a configuration."""

from __future__ import annotations

import ast
import json
import pathlib
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

import dbmigrate_operator
from dbmigrate_operator.gating import server
from dbmigrate_operator.gating.kube import KubeApi
from dbmigrate_operator.kube import Kube
from dbmigrate_operator.leadership import LeaseConfig, LeaseElector
from dbmigrate_operator.rawapi import REQUEST_TIMEOUT, describe, new_api_client

ROOT = pathlib.Path(dbmigrate_operator.__file__).parent


class _Response:
    status = 200
    data = b'{"items": [], "metadata": {"resourceVersion": "1"}}'

    def read(self) -> bytes:
        return self.data


class RecordingClient(kubernetes.client.ApiClient):
    """An ApiClient that sends nothing and records each request's path and timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []

    def call_api(self, method: str, url: str, *args: Any, _request_timeout: Any = None, **kw: Any) -> Any:
        self.calls.append((f"{method} {url.partition('?')[0]}", _request_timeout))
        return _Response()


def test_every_request_the_operator_makes_has_a_timeout() -> None:
    """Issue 18 item 10 for gating, now for every caller: the webhook's registration had none."""
    client = RecordingClient()
    kube = Kube(client)
    kube.get_migration("shop", "shop-db")
    kube.list_jobs("shop", "shop-db")
    kube.list_pods("shop", "shop-db")
    kube.list_job_events("shop", "uid-1")
    kube.create_event("shop", {"metadata": {"generateName": "shop-db."}})
    kube.create_job("shop", {"metadata": {"name": "shop-db-1"}})
    kube.delete_job("shop", "shop-db-1", "uid-1")
    kube.patch_status("shop", "shop-db", {"phase": "x"}, "1")
    kube.patch_finalizers("shop", "shop-db", [], "1")
    gating = KubeApi(client)
    gating.list_waiting_pods("shop", "shop-db")
    gating.list_waiting_pods(None, None, cached=True)
    gating.get_pod("shop", "web-1")
    gating.patch_pod("shop", "web-1", [{"op": "remove", "path": "/spec/schedulingGates/0"}])
    gating.get_replicaset("shop", "web-1a")
    elector = LeaseElector(client, LeaseConfig(name="l", namespace="n", identity="i"))
    elector._read()
    elector._create()
    elector._replace({"metadata": {"name": "l"}})
    configuration = {"metadata": {"name": "dbmigrate-operator"}}
    server.register(client, configuration)
    server.unregister(client, "dbmigrate-operator")
    assert len(client.calls) == 19
    untimed = [path for path, timeout in client.calls if timeout is None]
    assert untimed == []
    assert all(timeout == REQUEST_TIMEOUT for _, timeout in client.calls)


def test_the_webhooks_read_keeps_its_shorter_timeout() -> None:
    client = RecordingClient()
    KubeApi(client).get_migration("shop", "shop-db", 2.0)
    assert client.calls[0][1] == 2.0


def _api_error(status: int, reason: str, body: dict[str, Any] | str) -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = body if isinstance(body, str) else json.dumps(body)
    error.headers = {"Audit-Id": "1f6c", "Www-Authenticate": 'Bearer realm="kubernetes"'}
    return error


def test_an_api_error_is_one_line_with_the_apis_message_and_nothing_else() -> None:
    message = 'jobs.batch is forbidden: User "system:serviceaccount:x:op"\ncannot create'
    text = describe(_api_error(403, "Forbidden", {"kind": "Status", "message": message}))
    assert (
        text
        == 'API error 403 Forbidden: jobs.batch is forbidden: User "system:serviceaccount:x:op" cannot create'
    )
    assert "Audit-Id" not in text
    assert "realm" not in text
    html = _api_error(500, "Internal Server Error", "<html>oops</html>")
    assert describe(html) == "API error 500 Internal Server Error"
    assert len(describe(_api_error(422, "Unprocessable", {"message": "x" * 5000}))) == 300


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError(
            "cannot reach https://ops:hunter2@api.internal:6443/apis (proxy http://u:hunter2@p:3128)"
        ),
        RuntimeError("refused: Authorization: Bearer hunter2.abc-def_ghi"),
        _api_error(
            401, "Unauthorized", {"message": "token Bearer hunter2 rejected at https://ops:hunter2@api"}
        ),
    ],
)
def test_an_error_description_carries_no_credential(error: BaseException) -> None:
    text = describe(error)
    assert "hunter2" not in text
    assert "***" in text


def test_the_client_reads_kubeconfig_when_it_is_built(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$KUBECONFIG set after the kubernetes package was imported still counts (the controller's old
    builder read only the path the package saw at import)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://late.example:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    client = new_api_client()
    assert client.configuration.host == "https://late.example:6443"
    given = kubernetes.client.Configuration(host="https://given.example")
    assert new_api_client(given).configuration is given


def test_only_the_client_module_builds_an_api_client_or_sets_a_timeout() -> None:
    """One way to build the ApiClient and one request timeout: no other module of the operator calls
    ApiClient(...), Configuration() or kubernetes.config's loaders, nor sends a timeout of its own
    (a caller may only pass on the `timeout` it was given, as the webhook's shorter read does)."""
    builders = {"ApiClient", "load_kube_config", "load_incluster_config", "Configuration"}
    offenders: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "rawapi.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in builders
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.func.attr}")
            passed_on = (
                isinstance(node, ast.keyword)
                and isinstance(node.value, ast.Name)
                and node.value.id == "timeout"
            )
            if isinstance(node, ast.keyword) and node.arg == "_request_timeout" and not passed_on:
                offenders.append(f"{path.relative_to(ROOT)}:{node.value.lineno} _request_timeout")
    assert offenders == []
