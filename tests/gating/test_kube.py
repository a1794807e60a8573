"""Every gating API request carries a timeout (issue 18 item 10): a hung API server cannot hold a
release pass, the sweep or a webhook thread forever."""

from __future__ import annotations

from typing import Any

import kubernetes.client

from dbmigrate_operator.gating.kube import REQUEST_TIMEOUT, KubeApi


class _Response:
    status = 200
    data = b'{"items": [], "metadata": {}}'

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


def test_every_gating_request_has_a_timeout() -> None:
    client = RecordingClient()
    api = KubeApi(client)
    api.get_migration("shop", "shop-db")
    api.list_waiting_pods("shop", "shop-db")
    api.list_waiting_pods(None, None, cached=True)
    api.get_pod("shop", "web-1")
    api.patch_pod("shop", "web-1", [{"op": "remove", "path": "/spec/schedulingGates/0"}])
    api.get_replicaset("shop", "web-1a")
    api.create_event("shop", {"metadata": {"generateName": "web-1."}})
    assert len(client.calls) == 7
    untimed = [path for path, timeout in client.calls if timeout is None]
    assert untimed == []
    assert all(timeout == REQUEST_TIMEOUT for _, timeout in client.calls)


def test_the_webhooks_read_keeps_its_shorter_timeout() -> None:
    client = RecordingClient()
    KubeApi(client).get_migration("shop", "shop-db", 2.0)
    assert client.calls[0][1] == 2.0
