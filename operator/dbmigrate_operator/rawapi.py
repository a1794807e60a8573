"""The few API operations the operator calls, over the official client's ``ApiClient`` without its
generated API classes.

Why: in ``kubernetes`` 37 each generated API class (``CoreV1Api`` most of all) wraps every one of
its methods in pydantic's ``validate_call`` and imports the pydantic model of every type they name;
importing ``CoreV1Api`` alone allocates ~100 MiB (traced) and leaves the process ~80 MiB larger
(docs/benchmarks.md, figure 7). The operator only ever sends and reads plain JSON
(``_preload_content=False``), so the models buy it nothing. :class:`RawApi` offers the same method
names and arguments as the generated classes for the calls the operator makes, and goes through the
same ``ApiClient.param_serialize`` / ``call_api`` the generated code uses (authentication, TLS,
proxies, retries, URL quoting all stay the client's). Like the generated methods called with
``_preload_content=False``, each returns the raw response (read: ``.data`` holds the body) and
raises :class:`kubernetes.client.exceptions.ApiException` for a non-2xx answer.
"""

from __future__ import annotations

from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

JSON = "application/json"
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


class RawApi:
    """The subset of ``CoreV1Api``/``BatchV1Api``/``AppsV1Api``/``CoordinationV1Api``/
    ``CustomObjectsApi``/``AdmissionregistrationV1Api`` the operator uses, same signatures."""

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api_client = api_client

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
        """One call; ``query`` holds the generated methods' query keywords (``label_selector``...)."""
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
        response = self.api_client.call_api(*serialized, _request_timeout=_request_timeout)
        response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            # what the generated methods raise with _preload_content=False
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response

    # -- custom resources ----------------------------------------------------------------------

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kw: Any
    ) -> Any:
        path = "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}"
        params = {"group": group, "version": version, "namespace": namespace, "plural": plural, "name": name}
        return self.request("GET", path, params, **kw)

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kw: Any
    ) -> Any:
        path = "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}"
        params = {"group": group, "version": version, "namespace": namespace, "plural": plural, "name": name}
        kw.setdefault("_content_type", "application/merge-patch+json")
        return self.request("PATCH", path, params, body=body, **kw)

    def patch_namespaced_custom_object_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kw: Any
    ) -> Any:
        path = "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}/status"
        params = {"group": group, "version": version, "namespace": namespace, "plural": plural, "name": name}
        kw.setdefault("_content_type", "application/merge-patch+json")
        return self.request("PATCH", path, params, body=body, **kw)

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
