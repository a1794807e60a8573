"""The operator's one client for the Kubernetes API: how the ``ApiClient`` is built, the request
timeout, how an API error is described, and every request (the controller, gating and the Lease all
go through :class:`RawApi`; their facades, ``kube.py`` and ``gating/kube.py``, only name calls).

Why not the official client's generated API classes: in ``kubernetes`` 37 each of them (``CoreV1Api``
most of all) wraps every one of its methods in pydantic's ``validate_call`` and imports the pydantic
model of every type they name; importing ``CoreV1Api`` alone allocates ~100 MiB (traced) and leaves
the process ~80 MiB larger (docs/benchmarks.md, figure 7). The operator only ever sends and reads
plain JSON, so the models buy it nothing. :class:`RawApi` offers the same method names and arguments
as the generated classes for the calls the operator makes, and goes through the same
``ApiClient.param_serialize`` / ``call_api`` the generated code uses (authentication, TLS, proxies,
retries, URL quoting all stay the client's). Like the generated methods called with
``_preload_content=False``, each returns the raw response (read: ``.data`` holds the body) and raises
:class:`kubernetes.client.exceptions.ApiException` for a non-2xx answer.

Every request carries a timeout (:data:`REQUEST_TIMEOUT`: connect, then each read of the response),
so a hung API server or connection cannot hold a thread, a pass, the sweep or a Lease renewal
forever: the call raises and its caller's next trigger tries again. The webhook's own read passes a
shorter one (``webhook_config.API_READ_TIMEOUT_SECONDS``).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Callable
from typing import Any

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# (connect, read) seconds for every request unless the call names its own.
REQUEST_TIMEOUT: tuple[float, float] = (5.0, 30.0)
# The query parameters the operator passes, by their Python name in the generated methods.
QUERY_NAMES = {
    "label_selector": "labelSelector",
    "field_selector": "fieldSelector",
    "resource_version": "resourceVersion",
    "limit": "limit",
    "container": "container",
    "tail_lines": "tailLines",
    "limit_bytes": "limitBytes",
}
# What an error text may carry of a credential: a URL's user:password@, an Authorization value.
_USERINFO = re.compile(r"(?<=://)[^/\s@]+@")
_AUTHORIZATION = re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]+")
DESCRIBE_LIMIT = 300
SERVICE_ACCOUNT_NAMESPACE = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def new_api_client(
    configuration: kubernetes.client.Configuration | None = None,
) -> kubernetes.client.ApiClient:
    """Configured like kubectl: the in-cluster ServiceAccount, else the kubeconfig; or as given."""
    if configuration is None:
        configuration = kubernetes.client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            # The client reads $KUBECONFIG once, at import; read it now (tests and tools set it late).
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
            )
    return kubernetes.client.ApiClient(configuration)


def service_account_namespace() -> str | None:
    """The namespace of the ServiceAccount an in-cluster client runs as; None outside a cluster."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def describe(error: BaseException) -> str:
    """One line for logs, Events and a pod's gating message: the API's status and message, never the
    response headers and body ApiException prints, never a credential (a proxy's user:password in a
    connection error's URL, an Authorization value)."""
    if isinstance(error, ApiException):
        detail = ""
        try:
            detail = str(json.loads(error.body or "{}").get("message") or "")
        except (ValueError, AttributeError):
            detail = ""
        text = f"API error {error.status} {error.reason or ''}".rstrip()
        text = f"{text}: {detail}" if detail else text
    else:
        text = f"{type(error).__name__}: {error}"
    text = _AUTHORIZATION.sub(r"\1 ***", _USERINFO.sub("***@", " ".join(text.split())))
    return text if len(text) <= DESCRIBE_LIMIT else text[: DESCRIBE_LIMIT - 1] + "…"


def json_of(response: Any) -> dict[str, Any]:
    """A raw response's body as a JSON object (empty when there is none)."""
    data = json.loads(response.data or b"{}")
    return data if isinstance(data, dict) else {}


def items_of(response: Any) -> list[dict[str, Any]]:
    """A list response's ``items``."""
    return list(json_of(response).get("items") or [])


def found(call: Callable[..., Any], *args: Any, **kw: Any) -> dict[str, Any] | None:
    """A read's object, or None when the API answers 404 (it does not exist, or no longer)."""
    try:
        return json_of(call(*args, **kw))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


class RawApi:
    """The subset of ``CoreV1Api``/``BatchV1Api``/``AppsV1Api``/``CoordinationV1Api``/
    ``CustomObjectsApi``/``AdmissionregistrationV1Api`` the operator uses, same signatures."""

    def __init__(
        self, api_client: kubernetes.client.ApiClient, timeout: tuple[float, float] | float = REQUEST_TIMEOUT
    ) -> None:
        self.api_client = api_client
        self.timeout = timeout

    # -- the one request path ----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        path_params: dict[str, str] | None = None,
        *,
        body: Any = None,
        _content_type: str | None = None,
        _request_timeout: Any = None,
        _preload_content: bool = False,
        **query: Any,
    ) -> Any:
        """One call; ``query`` holds the generated methods' query keywords (``label_selector``...).
        ``_request_timeout``: this call's own; None (or left out) is the client's :attr:`timeout`."""
        if _preload_content:
            raise ValueError("RawApi returns raw responses only: pass _preload_content=False")
        unknown = set(query) - set(QUERY_NAMES)
        if unknown:
            raise TypeError(f"unsupported query parameters {sorted(unknown)}")
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = _content_type or JSON
        serialized = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            path_params=path_params,
            query_params=[(QUERY_NAMES[k], v) for k, v in query.items() if v is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        timeout = self.timeout if _request_timeout is None else _request_timeout
        response = self.api_client.call_api(*serialized, _request_timeout=timeout)
        response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            # what the generated methods raise with _preload_content=False
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response

    # -- custom resources ----------------------------------------------------------------------

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kw: Any
    ) -> Any:
        return self._custom_object("GET", "", group, version, namespace, plural, name, **kw)

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kw: Any
    ) -> Any:
        kw.setdefault("_content_type", MERGE_PATCH)
        return self._custom_object("PATCH", "", group, version, namespace, plural, name, body=body, **kw)

    def patch_namespaced_custom_object_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kw: Any
    ) -> Any:
        kw.setdefault("_content_type", MERGE_PATCH)
        return self._custom_object(
            "PATCH", "/status", group, version, namespace, plural, name, body=body, **kw
        )

    def _custom_object(
        self,
        method: str,
        sub: str,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        **kw: Any,
    ) -> Any:
        path = "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}" + sub
        params = {"group": group, "version": version, "namespace": namespace, "plural": plural, "name": name}
        return self.request(method, path, params, **kw)

    # -- batch/v1 Jobs ---------------------------------------------------------------------------

    def list_namespaced_job(self, namespace: str, **kw: Any) -> Any:
        path = "/apis/batch/v1/namespaces/{namespace}/jobs"
        return self.request("GET", path, {"namespace": namespace}, **kw)

    def create_namespaced_job(self, namespace: str, body: Any, **kw: Any) -> Any:
        path = "/apis/batch/v1/namespaces/{namespace}/jobs"
        return self.request("POST", path, {"namespace": namespace}, body=body, **kw)

    def delete_namespaced_job(self, name: str, namespace: str, body: Any = None, **kw: Any) -> Any:
        path = "/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
        return self.request("DELETE", path, {"namespace": namespace, "name": name}, body=body, **kw)

    # -- core/v1 Pods and Events ---------------------------------------------------------------

    def list_namespaced_pod(self, namespace: str, **kw: Any) -> Any:
        return self.request("GET", "/api/v1/namespaces/{namespace}/pods", {"namespace": namespace}, **kw)

    def list_pod_for_all_namespaces(self, **kw: Any) -> Any:
        return self.request("GET", "/api/v1/pods", **kw)

    def read_namespaced_pod(self, name: str, namespace: str, **kw: Any) -> Any:
        path = "/api/v1/namespaces/{namespace}/pods/{name}"
        return self.request("GET", path, {"namespace": namespace, "name": name}, **kw)

    def read_namespaced_pod_log(self, name: str, namespace: str, **kw: Any) -> Any:
        path = "/api/v1/namespaces/{namespace}/pods/{name}/log"
        return self.request("GET", path, {"namespace": namespace, "name": name}, **kw)

    def patch_namespaced_pod(self, name: str, namespace: str, body: Any, **kw: Any) -> Any:
        path = "/api/v1/namespaces/{namespace}/pods/{name}"
        kw.setdefault("_content_type", "application/strategic-merge-patch+json")
        return self.request("PATCH", path, {"namespace": namespace, "name": name}, body=body, **kw)

    def list_namespaced_event(self, namespace: str, **kw: Any) -> Any:
        return self.request("GET", "/api/v1/namespaces/{namespace}/events", {"namespace": namespace}, **kw)

    def create_namespaced_event(self, namespace: str, body: Any, **kw: Any) -> Any:
        path = "/api/v1/namespaces/{namespace}/events"
        return self.request("POST", path, {"namespace": namespace}, body=body, **kw)

    # -- apps/v1 ReplicaSets ---------------------------------------------------------------------

    def read_namespaced_replica_set(self, name: str, namespace: str, **kw: Any) -> Any:
        path = "/apis/apps/v1/namespaces/{namespace}/replicasets/{name}"
        return self.request("GET", path, {"namespace": namespace, "name": name}, **kw)

    # -- coordination.k8s.io/v1 Leases -----------------------------------------------------------

    def read_namespaced_lease(self, name: str, namespace: str, **kw: Any) -> Any:
        path = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        return self.request("GET", path, {"namespace": namespace, "name": name}, **kw)

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any, **kw: Any) -> Any:
        path = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        return self.request("PUT", path, {"namespace": namespace, "name": name}, body=body, **kw)

    def create_namespaced_lease(self, namespace: str, body: Any, **kw: Any) -> Any:
        path = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return self.request("POST", path, {"namespace": namespace}, body=body, **kw)

    # -- admissionregistration.k8s.io/v1 MutatingWebhookConfigurations ---------------------------

    def create_mutating_webhook_configuration(self, body: Any, **kw: Any) -> Any:
        path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
        return self.request("POST", path, body=body, **kw)

    def read_mutating_webhook_configuration(self, name: str, **kw: Any) -> Any:
        path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}"
        return self.request("GET", path, {"name": name}, **kw)

    def replace_mutating_webhook_configuration(self, name: str, body: Any, **kw: Any) -> Any:
        path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}"
        return self.request("PUT", path, {"name": name}, body=body, **kw)

    def delete_mutating_webhook_configuration(self, name: str, **kw: Any) -> Any:
        path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}"
        return self.request("DELETE", path, {"name": name}, **kw)
