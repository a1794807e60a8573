"""The real kopf operator, in-process, against kmock — with the missing parts of a control plane.

kmock (0.8) stores objects as JSON and merges patches; it has no label selectors, no uid or
creationTimestamp, no status subresource isolation, no generation, no generateName, no Job
controller and no kubelet. :class:`Emulator` adds what an API server does on its own (uid,
creationTimestamp, generation on create, generateName, equality and existence label selectors on lists,
status isolation for DatabaseMigrations), so a test cannot pass only because the mock is lax.
:class:`FakeCluster` plays the Job controller and the kubelet explicitly, step by step, from the
test (the scenarios say what the runner reported); the e2e suite plays the same scenarios on
the real control plane, where real components do those steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import kmock
import kopf
import kubernetes.client

from dbmigrate_operator import constants as c
from dbmigrate_operator.controller import Controller
from dbmigrate_operator.handlers import register
from dbmigrate_operator.jobs import CREATED_ANNOTATION
from dbmigrate_operator.settings import Settings
from tests.operator.builders import pod_for, ts

CR_PATH = f"/apis/{c.GROUP}/{c.VERSION}/namespaces/{{ns}}/{c.PLURAL}"
T = TypeVar("T")


def now() -> str:
    return ts(datetime.now(UTC))


class Emulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock plus the API server behaviour our controller relies on (see the module doc)."""

    async def _handle(self, request: Any) -> Any:
        data = request.data if isinstance(request.data, dict) else None
        action = request.action
        if data is not None and action == kmock.action.CREATE:
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now())
            if request.resource is not None and request.resource.group == c.GROUP:
                meta["generation"] = 1
                data.pop("status", None)
        elif (
            data is not None
            and action == kmock.action.UPDATE
            and request.resource is not None
            and (request.resource.group == c.GROUP)
        ):
            if request.subresource == "status":  # only .status may change through /status
                for key in [k for k in data if k != "status"]:
                    del data[key]
            else:  # and never through the main resource
                data.pop("status", None)
        return await super()._handle(request)

    async def _serve_list(self, request: Any) -> Any:
        result = await super()._serve_list(request)
        selector = (request.params or {}).get("labelSelector")
        if selector:
            result["items"] = [item for item in result["items"] if selected(item, selector)]
        return result


def selected(obj: dict[str, Any], selector: str) -> bool:
    """Equality (``k=v``) and existence (``k``) label selectors, as the API server applies them."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for part in selector.split(","):
        key, eq, value = part.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


async def eventually(check: Callable[[], T], within: float = 15.0, what: str = "") -> T:
    """Poll until ``check`` returns something truthy without raising; fail with its last error."""
    deadline = asyncio.get_running_loop().time() + within
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (AssertionError, KeyError, IndexError, StopIteration) as exc:
            last = exc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}: {last!r}")
        await asyncio.sleep(0.05)


class FakeCluster:
    """Talks HTTP to the emulator like clients do; plays Job controller and kubelet on request."""

    def __init__(self, server: Any) -> None:
        self.k = server

    # -------------------------------------------------------- reading the stored state

    def objects(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        out = []
        for (resource, ns, _), obj in self.k.objects.items():
            if resource.plural == plural and ns == namespace and not obj.deleted:
                out.append(copy.deepcopy(dict(obj.raw)))
        return out

    def cr(self, namespace: str, name: str) -> dict[str, Any]:
        (found,) = [o for o in self.objects(c.PLURAL, namespace) if o["metadata"]["name"] == name]
        return found

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.cr(namespace, name).get("status") or {})

    def condition(self, namespace: str, name: str, type_: str) -> dict[str, Any]:
        return next(x for x in self.status(namespace, name).get("conditions", []) if x["type"] == type_)

    def jobs(self, namespace: str, cr_name: str) -> list[dict[str, Any]]:
        jobs = [
            j
            for j in self.objects("jobs", namespace)
            if j["metadata"].get("labels", {}).get(c.MIGRATION_LABEL) == cr_name
        ]
        return sorted(
            jobs,
            key=lambda j: (
                j["metadata"]["creationTimestamp"],
                j["metadata"]["annotations"].get(CREATED_ANNOTATION, ""),
            ),
        )

    def requests(self, method: str, path_part: str) -> list[Any]:
        return [
            r for r in self.k if str(r.method).upper().endswith(method.upper()) and path_part in r.url.path
        ]

    def events(self, namespace: str, name: str) -> list[tuple[str, str, str]]:
        out = []
        for req in self.requests("POST", f"/api/v1/namespaces/{namespace}/events"):
            obj = req.data.get("involvedObject") or req.data.get("regarding") or {}
            if obj.get("name") == name:
                out.append((req.data.get("type"), req.data.get("reason"), req.data.get("message")))
        return out

    # -------------------------------------------------------- what a user does

    async def _send(self, method: str, path: str, body: Any, content_type: str = "application/json") -> Any:
        # A fresh connection per call, like separate kubectl invocations: kmock's shared client session
        # can be left with a dead keep-alive connection when an operator under test shuts down.
        url = str(self.k.url).rstrip("/") + path
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, url, data=json.dumps(body), headers={"Content-Type": content_type}
            ) as resp,
        ):
            assert resp.status < 300, (resp.status, await resp.text())
            return await resp.json()

    async def apply_cr(self, cr: dict[str, Any]) -> None:
        body = copy.deepcopy(cr)
        body["metadata"].pop("uid", None)
        await self._send("POST", CR_PATH.format(ns=body["metadata"]["namespace"]), body)

    async def change_cr(
        self,
        namespace: str,
        name: str,
        *,
        spec: dict[str, Any] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> None:
        """A merge patch like ``kubectl patch --type merge``; spec changes bump the generation."""
        patch: dict[str, Any] = {"metadata": {}}
        if spec:
            patch["spec"] = spec
            patch["metadata"]["generation"] = int(self.cr(namespace, name)["metadata"]["generation"]) + 1
        if annotations:
            patch["metadata"]["annotations"] = annotations
        await self._send(
            "PATCH", f"{CR_PATH.format(ns=namespace)}/{name}", patch, "application/merge-patch+json"
        )

    async def delete_cr(self, namespace: str, name: str) -> None:
        await self._send("DELETE", f"{CR_PATH.format(ns=namespace)}/{name}", {})

    async def create(self, path: str, body: dict[str, Any]) -> None:
        await self._send("POST", path, body)

    # -------------------------------------------------------- the Job controller and the kubelet

    async def _patch_job(self, job: dict[str, Any], status: dict[str, Any]) -> None:
        meta = job["metadata"]
        await self._send(
            "PATCH",
            f"/apis/batch/v1/namespaces/{meta['namespace']}/jobs/{meta['name']}/status",
            {"status": status},
            "application/merge-patch+json",
        )

    async def _put_pod(self, job: dict[str, Any], suffix: str, status: dict[str, Any]) -> dict[str, Any]:
        meta = job["metadata"]
        name = f"{meta['name']}-{suffix}"
        path = f"/api/v1/namespaces/{meta['namespace']}/pods"
        existing = [p for p in self.objects("pods", meta["namespace"]) if p["metadata"]["name"] == name]
        if existing:
            await self._send(
                "PATCH", f"{path}/{name}/status", {"status": status}, "application/merge-patch+json"
            )
        else:
            pod = pod_for(job, suffix)
            del pod["metadata"]["uid"]  # the API server assigns it, as for every object it admits
            pod["status"] = status
            await self.create(path, pod)
        return next(p for p in self.objects("pods", meta["namespace"]) if p["metadata"]["name"] == name)

    def _cstatus(self, job: dict[str, Any], state: dict[str, Any]) -> list[dict[str, Any]]:
        image = job["spec"]["template"]["spec"]["containers"][0]["image"]
        return [{"name": c.CONTAINER_NAME, "image": image, "ready": "running" in state, "state": state}]

    async def run_pod(self, job: dict[str, Any], suffix: str = "p0001") -> None:
        await self._patch_job(job, {"startTime": now(), "active": 1})
        await self._put_pod(
            job,
            suffix,
            {
                "phase": "Running",
                "startTime": now(),
                "containerStatuses": self._cstatus(job, {"running": {"startedAt": now()}}),
            },
        )

    async def stuck_pod(
        self, job: dict[str, Any], reason: str, message: str, suffix: str = "p0001", since: float = 3600
    ) -> None:
        """``since``: seconds ago the scheduler found no node (default: longer than any grace)."""
        await self._patch_job(job, {"startTime": now(), "active": 1})
        if reason == "Unschedulable":
            status = {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": reason,
                        "message": message,
                        "lastTransitionTime": ts(datetime.now(UTC) - timedelta(seconds=since)),
                    }
                ],
            }
        else:
            status = {
                "phase": "Pending",
                "containerStatuses": self._cstatus(job, {"waiting": {"reason": reason, "message": message}}),
            }
        await self._put_pod(job, suffix, status)

    async def end_pod(
        self,
        job: dict[str, Any],
        exit_code: int,
        message: str | None,
        suffix: str = "p0001",
        job_done: bool = True,
        job_reason: str = "BackoffLimitExceeded",
    ) -> None:
        """The container exits with ``message`` as its termination message; the Job ends with it."""
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": now(),
            "finishedAt": now(),
        }
        if message is not None:
            terminated["message"] = message
        await self._put_pod(
            job,
            suffix,
            {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "containerStatuses": self._cstatus(job, {"terminated": terminated}),
            },
        )
        if not job_done:
            return
        if exit_code == 0:
            await self._patch_job(
                job,
                {
                    "active": 0,
                    "succeeded": 1,
                    "completionTime": now(),
                    "conditions": [
                        {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now()},
                        {"type": "Complete", "status": "True", "lastTransitionTime": now()},
                    ],
                },
            )
        else:
            await self._patch_job(
                job,
                {
                    "active": 0,
                    "failed": 1,
                    "conditions": [
                        {
                            "type": "FailureTarget",
                            "status": "True",
                            "reason": job_reason,
                            "lastTransitionTime": now(),
                        },
                        {
                            "type": "Failed",
                            "status": "True",
                            "reason": job_reason,
                            "lastTransitionTime": now(),
                        },
                    ],
                },
            )


@contextlib.asynccontextmanager
async def emulator() -> AsyncIterator[Any]:
    async with Emulator() as server, kmock.Server(server):
        server.resources.load_bundled()
        server.resources[f"{c.GROUP}/{c.VERSION}/{c.PLURAL}"] = kmock.ResourceInfo(
            kind=c.KIND,
            namespaced=True,
            subresources={"status"},
            shortnames={"dbm"},
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )
        yield server


@contextlib.asynccontextmanager
async def running_operator(server: Any, settings: Settings | None = None) -> AsyncIterator[Controller]:
    """The real kopf operator with our handlers, in this event loop, until the block ends."""
    url = str(server.url).rstrip("/")
    registry = kopf.OperatorRegistry()
    controller = register(
        registry, settings or Settings(resync_seconds=5), api_config=kubernetes.client.Configuration(host=url)
    )

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True)

    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(registry=registry, clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready)
    )
    try:
        await asyncio.wait_for(ready.wait(), 20)
        yield controller
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
