"""Unit tests of the node agent's kubelet rules (no cluster needed)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiException

from localcluster.node_agent import (
    MAX_MESSAGE,
    ConfigError,
    Container,
    EnvResolver,
    PodWorker,
    expand,
    load_image_map,
    lookup_image,
)


class FakeCore:
    """Just enough of CoreV1Api for env resolution."""

    def __init__(self, secrets: dict[str, dict[str, str]], config_maps: dict[str, dict[str, str]]) -> None:
        self.secrets, self.config_maps = secrets, config_maps

    def read_namespaced_secret(self, name: str, ns: str) -> Any:
        if name not in self.secrets:
            raise ApiException(status=404)
        data = {k: base64.b64encode(v.encode()).decode() for k, v in self.secrets[name].items()}
        return type("S", (), {"data": data})()

    def read_namespaced_config_map(self, name: str, ns: str) -> Any:
        if name not in self.config_maps:
            raise ApiException(status=404)
        return type("C", (), {"data": self.config_maps[name]})()


POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "x"}}, "spec": {}}


def resolve(env: list[dict[str, Any]], **kw: Any) -> dict[str, str]:
    core = FakeCore({"db": {"url": "postgres://x"}}, {"cfg": {"level": "debug"}})
    return EnvResolver(core, POD).resolve({"env": env, **kw}, {})  # type: ignore[arg-type]


def test_env_sources_and_expansion() -> None:
    env = resolve(
        [
            {"name": "A", "value": "1"},
            {"name": "B", "value": "$(A)-$(MISSING)-$$(A)"},
            {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
            {"name": "LVL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        ],
        envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "CM_"}],
    )
    assert env == {"CM_level": "debug", "A": "1", "B": "1-$(MISSING)-$(A)", "URL": "postgres://x",
                   "LVL": "debug", "POD": "p", "APP": "x"}  # fmt: skip


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"secretKeyRef": {"name": "nope", "key": "url"}}, 'secret "nope" not found'),
        ({"secretKeyRef": {"name": "db", "key": "pw"}}, "couldn't find key pw in Secret ns/db"),
        ({"configMapKeyRef": {"name": "x", "key": "k"}}, 'configmap "x" not found'),
        ({"configMapKeyRef": {"name": "cfg", "key": "k"}}, "couldn't find key k in ConfigMap ns/cfg"),
    ],
)
def test_missing_refs_give_kubelets_messages(ref: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve([{"name": "X", "valueFrom": ref}])
    assert str(err.value) == message


def test_image_map_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBMIGRATE_NODE_IMAGE_MAP", json.dumps({"a:1": ["echo"], "b": {"entrypoint": ["x"]}}))
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"a:1": {"entrypoint": ["true"], "cwd": "/tmp"}}))
    images = load_image_map(path)
    assert lookup_image(images, "a:1") == {"entrypoint": ["true"], "cwd": "/tmp"}  # the file wins
    assert lookup_image(images, "b:7") == {"entrypoint": ["x"]}  # by repository, any tag
    assert lookup_image(images, "b@sha256:00") == {"entrypoint": ["x"]}
    assert lookup_image(images, "c:1") is None
    assert expand("$(a)", {"a": "b"}) == "b"


def test_termination_message_is_capped_and_falls_back_to_logs(tmp_path: Path) -> None:
    worker = PodWorker.__new__(PodWorker)
    worker.meta = POD["metadata"]
    c = Container({"name": "c", "image": "i", "terminationMessagePolicy": "FallbackToLogsOnError"})
    c.msg_file, c.log_file = tmp_path / "msg", tmp_path / "log"
    c.msg_file.write_text("x" * (MAX_MESSAGE + 100))
    c.log_file.write_text("boom\n")
    worker.reap(c, 1)
    assert c.terminated is not None
    assert (c.terminated["exitCode"], c.terminated["reason"], len(c.terminated["message"])) == (
        1,
        "Error",
        MAX_MESSAGE,
    )
    c.msg_file.write_text("")
    worker.reap(c, 2)
    assert c.terminated["message"] == "boom"
    c.spec["terminationMessagePolicy"] = "File"
    worker.reap(c, 0)
    assert (c.terminated["reason"], "message" in c.terminated) == ("Completed", False)
