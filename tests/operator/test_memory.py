"""What keeps the operator's memory down (docs/benchmarks.md, figure 7): no generated API class of the
kubernetes client is ever loaded, freed heap memory is handed back (malloc_trim), and the plain
``RawApi`` calls that replace the generated classes behave like them on the real API server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from dbmigrate_operator import memory
from dbmigrate_operator.settings import Settings

RSS = "int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) // 1024"


def _run(code: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_operator_loads_no_generated_api_class() -> None:
    """Each generated API class of kubernetes 37 costs tens of MiB (CoreV1Api ~80): none may be loaded
    by the modules and objects the operator runs with."""
    result = _run(
        f"""
        import json, sys
        import kubernetes.client
        import dbmigrate_operator.__main__, dbmigrate_operator.gating, dbmigrate_operator.handlers
        from dbmigrate_operator.kube import Kube
        from dbmigrate_operator.gating.kube import KubeApi
        from dbmigrate_operator.leadership import LeaseConfig, LeaseElector
        client = kubernetes.client.ApiClient()
        Kube(client), KubeApi(client)
        LeaseElector(client, LeaseConfig(name="l", namespace="n", identity="i", duration=15))
        loaded = sorted(m for m in sys.modules if m.startswith("kubernetes.client.api."))
        print(json.dumps({{"loaded": loaded, "rss": {RSS}}}))
        """
    )
    assert result["loaded"] == []
    assert result["rss"] < 110, f"{result['rss']} MiB after imports: what grew?"


@pytest.mark.skipif(not memory.available(), reason="no malloc_trim in this C library")
def test_trim_hands_freed_heap_memory_back() -> None:
    """Freed malloc memory kept below a live block stays resident until a trim returns it."""
    result = _run(
        f"""
        import json
        from dbmigrate_operator import memory
        blocks = [bytes(2000) for _ in range(60_000)]  # ~115 MiB from malloc (too big for pymalloc)
        keep = blocks[-1]
        del blocks
        before = {RSS}
        released = memory.trim()
        print(json.dumps({{"before": before, "after": {RSS}, "released": released}}))
        """
    )
    assert result["released"] is True
    assert result["after"] < result["before"] - 50, result


def test_trimming_runs_in_the_background_and_can_be_off() -> None:
    assert memory.start_trimming(0) is None
    stop = memory.start_trimming(0.01)
    assert (stop is not None) == memory.available()
    if stop is not None:
        stop.set()
    assert Settings.from_env({}).malloc_trim_seconds == 30
    assert Settings.from_env({"DBMIGRATE_MALLOC_TRIM_SECONDS": "0"}).malloc_trim_seconds == 0
    with pytest.raises(ValueError, match="DBMIGRATE_MALLOC_TRIM_SECONDS"):
        Settings.from_env({"DBMIGRATE_MALLOC_TRIM_SECONDS": "-1"})


@pytest.mark.e2e
def test_raw_api_calls_behave_like_the_generated_ones(cluster: Any, namespace: str) -> None:
    """Selectors, resourceVersion=0, 404s as ApiException, bodies as plain dicts: on the API server."""
    from dbmigrate_operator.gating.kube import KubeApi
    from dbmigrate_operator.rawapi import RawApi

    api = RawApi(cluster.api_client())
    # label values unique to this namespace: pods of an earlier run may linger in a terminating one
    for name, labels in (("a", {"x": namespace}), ("b", {"y": namespace})):
        pod = {
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }
        api.request("POST", "/api/v1/namespaces/{namespace}/pods", {"namespace": namespace}, body=pod)
    listed = json.loads(
        api.list_namespaced_pod(namespace, label_selector=f"x={namespace}", resource_version="0").data
    )
    assert [p["metadata"]["name"] for p in listed["items"]] == ["a"]
    everywhere = json.loads(api.list_pod_for_all_namespaces(label_selector=f"y={namespace}").data)
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in everywhere["items"]] == [
        (namespace, "b")
    ]
    with pytest.raises(ApiException) as missing:
        api.read_namespaced_pod("nope", namespace)
    assert missing.value.status == 404
    assert "not found" in str(missing.value.body)
    with pytest.raises(TypeError):
        api.list_namespaced_pod(namespace, watch=True)

    gating = KubeApi(cluster.api_client())
    pod_a = gating.get_pod(namespace, "a")
    assert pod_a is not None
    assert gating.get_pod(namespace, "nope") is None
    gating.create_event(
        namespace,
        {
            "metadata": {"generateName": "a."},
            "involvedObject": {
                "kind": "Pod",
                "name": "a",
                "namespace": namespace,
                "uid": pod_a["metadata"]["uid"],
            },
            "reason": "Testing",
            "message": "hello",
            "type": "Normal",
            "source": {"component": "dbmigrate-test"},
        },
    )
    events = json.loads(
        api.list_namespaced_event(
            namespace, field_selector=f"involvedObject.uid={pod_a['metadata']['uid']},reason=Testing"
        ).data
    )
    assert [(e["reason"], e["message"]) for e in events["items"]] == [("Testing", "hello")]
