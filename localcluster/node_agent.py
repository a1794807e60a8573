"""A kubelet stand-in for the e2e cluster: one Ready Node, and pods bound to it brought to life.

- Registers the Node (allocatable cpu/memory/pods) and keeps it Ready with Lease + status
  heartbeats, so the node lifecycle controller never taints it.
- Resolves each container's env like kubelet (value, $(VAR) expansion, secretKeyRef,
  configMapKeyRef, fieldRef, envFrom); a missing Secret/ConfigMap/key is reported as Waiting
  `CreateContainerConfigError` with kubelet's message and retried.
- Images mapped in the image map (JSON file `--image-map-file`, re-read on every attempt, plus the
  `DBMIGRATE_NODE_IMAGE_MAP` env var) run as real local processes with the resolved env; the file
  at `DBMIGRATE_REPORT_PATH` becomes the terminated state's `message` (first 4096 bytes, as kubelet
  reads terminationMessagePath). Unmapped images: `restartPolicy: Always` pods (Deployments) just
  report Running/Ready; others (Jobs) report `ErrImagePull`, then `ImagePullBackOff`.
- Pod deletion kills the process group, then confirms the deletion (grace 0) as kubelet does.
- With --egress-socket it also runs the apiserver's egress proxy (service_proxy.py), so webhooks
  with `clientConfig.service` reach local processes.

Image map entry: {"<image>": {"entrypoint": [...], "cmd": [...], "cwd": "...", "env": {...}}}
(a bare list means the entrypoint). Lookup is by exact image, then by image without tag/digest.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import datetime
import faulthandler
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client import ApiException

from localcluster.service_proxy import ServiceProxy

MAX_MESSAGE = 4096  # kubelet: MaxContainerTerminationMessageLength
LOG_FALLBACK_BYTES, LOG_FALLBACK_LINES = 2048, 80
BACKOFF_SECONDS = 2.0
log = logging.getLogger("node-agent")
Json = dict[str, Any]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConfigError(Exception):
    """Container can't be configured yet (kubelet: CreateContainerConfigError)."""


class PullError(Exception):
    """Image can't be 'pulled': it is not in the image map (kubelet: ErrImagePull)."""


def load_image_map(path: Path | None) -> dict[str, Json]:
    images: dict[str, Any] = json.loads(os.environ.get("DBMIGRATE_NODE_IMAGE_MAP") or "{}")
    if path and path.exists():
        images.update(json.loads(path.read_text() or "{}"))
    return {k: {"entrypoint": v} if isinstance(v, list) else v for k, v in images.items()}


def lookup_image(images: dict[str, Json], image: str) -> Json | None:
    if image in images:
        return images[image]
    repo = image.split("@", 1)[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    return images.get(repo)


_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubelet's $(VAR) expansion: known names are replaced, $$ escapes, unknown refs stay."""
    return _REF.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def _field(pod: Json, path: str) -> str:
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str(pod["metadata"].get(m.group(1), {}).get(m.group(2), ""))
    section, _, key = path.partition(".")
    return str((pod.get(section) or {}).get(key, ""))


class EnvResolver:
    """Reads Secrets/ConfigMaps through the API, with kubelet's error messages."""

    def __init__(self, core: client.CoreV1Api, pod: Json) -> None:
        self.core, self.pod, self.ns = core, pod, pod["metadata"]["namespace"]

    def _data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        try:
            if kind == "Secret":
                obj = self.core.read_namespaced_secret(name, self.ns)
                return {k: base64.b64decode(v).decode() for k, v in (obj.data or {}).items()}
            cm = self.core.read_namespaced_config_map(name, self.ns)
            return dict(cm.data or {})
        except ApiException as exc:
            if exc.status == 404:
                if optional:
                    return None
                raise ConfigError(f'{kind.lower()} "{name}" not found') from None
            raise

    def _key(self, kind: str, ref: Json) -> str | None:
        optional = bool(ref.get("optional"))
        data = self._data(kind, ref["name"], optional)
        if data is None or ref["key"] not in data:
            if optional:
                return None
            raise ConfigError(f"couldn't find key {ref['key']} in {kind} {self.ns}/{ref['name']}")
        return data[ref["key"]]

    def resolve(self, container: Json, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        for src in container.get("envFrom") or []:
            kind, ref = (
                ("Secret", src["secretRef"]) if src.get("secretRef") else ("ConfigMap", src["configMapRef"])
            )
            data = self._data(kind, ref["name"], bool(ref.get("optional"))) or {}
            env.update({src.get("prefix", "") + k: v for k, v in data.items()})
        for var in container.get("env") or []:
            vf = var.get("valueFrom")
            value: str | None
            if not vf:
                value = expand(var.get("value", ""), env)
            elif "secretKeyRef" in vf:
                value = self._key("Secret", vf["secretKeyRef"])
            elif "configMapKeyRef" in vf:
                value = self._key("ConfigMap", vf["configMapKeyRef"])
            elif "fieldRef" in vf:
                value = _field(self.pod, vf["fieldRef"]["fieldPath"])
            else:  # resourceFieldRef: the limit if set, else the request, else 0
                res = container.get("resources") or {}
                name = vf["resourceFieldRef"]["resource"].split(".", 1)[1]
                value = str((res.get("limits") or {}).get(name) or (res.get("requests") or {}).get(name) or 0)
            if value is not None:
                env[var["name"]] = value
        return env


@dataclass
class Container:
    """Runtime state of one container, rendered as a kubelet-style containerStatus."""

    spec: Json
    init: bool = False
    proc: subprocess.Popen[bytes] | None = None
    fake: bool = False
    waiting: Json | None = None
    started_at: str | None = None
    terminated: Json | None = None
    last_state: Json | None = None
    restart_count: int = 0
    msg_file: Path | None = None
    log_file: Path | None = None
    container_id: str = ""

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self) -> Json:
        state: Json
        if self.terminated:
            state = {"terminated": self.terminated}
        elif self.started_at:
            state = {"running": {"startedAt": self.started_at}}
        else:
            state = {"waiting": self.waiting or {"reason": "ContainerCreating"}}
        running = "running" in state
        out: Json = {
            "name": self.name,
            "image": self.spec["image"],
            "imageID": "",
            "ready": running and not self.init,
            "started": running,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": self.last_state or {},
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def _preexec() -> None:
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # die with the agent


class PodWorker(threading.Thread):
    """Drives one pod from bound to terminal (or deleted)."""

    def __init__(self, agent: Agent, pod: Json, pod_ip: str) -> None:
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.agent, self.pod, self.pod_ip = agent, pod, pod_ip
        self.core = agent.core
        self.meta = pod["metadata"]
        self.deleting = threading.Event()
        self.policy = pod["spec"].get("restartPolicy", "Always")
        self.inits = [Container(c, init=True) for c in pod["spec"].get("initContainers") or []]
        self.containers = [Container(c) for c in pod["spec"]["containers"]]
        self.dir = agent.work_dir / self.meta["uid"]
        self.start_time = now()
        self.phase = "Pending"
        self.gone = False

    # -- status -------------------------------------------------------------------------------
    def publish(self) -> None:
        if self.gone:
            return
        init_done = all(c.terminated and c.terminated["exitCode"] == 0 for c in self.inits)
        terminal = self.phase in ("Succeeded", "Failed")
        ready = not terminal and all(c.started_at and not c.terminated for c in self.containers)
        reason = "PodCompleted" if terminal else "ContainersNotReady"
        not_ready = [c.name for c in self.containers if not (c.started_at and not c.terminated)]

        def cond(kind: str, ok: bool, why: str | None = None, msg: str | None = None) -> Json:
            c: Json = {
                "type": kind,
                "status": "True" if ok else "False",
                "lastProbeTime": None,
                "lastTransitionTime": now(),
            }
            if not ok and why:
                c["reason"] = why
                if msg:
                    c["message"] = msg
            return c

        msg = f"containers with unready status: [{' '.join(not_ready)}]"
        status: Json = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            "conditions": [
                cond("PodReadyToStartContainers", not terminal or self.phase == "Succeeded"),
                cond(
                    "Initialized", init_done, "ContainersNotInitialized", "containers with incomplete status"
                ),
                cond("ContainersReady", ready, reason, None if terminal else msg),
                cond("Ready", ready, reason, None if terminal else msg),
            ],
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.inits:
            status["initContainerStatuses"] = [c.status() for c in self.inits]
        # Keep a transition time stable when the status did not change (kubelet does too).
        for old in (self.pod.get("status") or {}).get("conditions") or []:
            for new in status["conditions"]:
                if new["type"] == old.get("type") and new["status"] == old.get("status"):
                    new["lastTransitionTime"] = old.get("lastTransitionTime") or new["lastTransitionTime"]
        try:
            self.pod = self.agent.api.sanitize_for_serialization(
                self.core.patch_namespaced_pod_status(
                    self.meta["name"], self.meta["namespace"], {"status": status}
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                self.gone = True
                return
            log.warning("status patch of %s failed: %s", self.meta["name"], exc.reason)
        except Exception as exc:  # connection trouble: the next publish carries the full status
            log.warning("status patch of %s failed: %s", self.meta["name"], exc)

    # -- containers ---------------------------------------------------------------------------
    def prepare(self, c: Container) -> tuple[list[str], dict[str, str], str | None] | None:
        """Argv/env/cwd to run `c` locally, None to fake it; retries config/pull errors until deleted."""
        pulled_before = False
        while not self.deleting.is_set():
            try:
                image = lookup_image(load_image_map(self.agent.image_map_file), c.spec["image"])
                if image is None:
                    if self.policy != "Always":
                        raise PullError(c.spec["image"])
                    EnvResolver(self.core, self.pod).resolve(c.spec, {})  # config errors still show
                    return None
                base = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "HOME": os.environ.get("HOME", "/"),
                    "LANG": os.environ.get("LANG", "C.UTF-8"),
                    "HOSTNAME": self.meta["name"],
                    "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                    "KUBERNETES_SERVICE_PORT": os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
                }
                base.update(image.get("env") or {})
                env = EnvResolver(self.core, self.pod).resolve(c.spec, base)
                cmd = [expand(a, env) for a in c.spec.get("command") or []]
                args = [expand(a, env) for a in c.spec.get("args") or []]
                argv = (cmd or list(image.get("entrypoint") or [])) + (
                    args or ([] if cmd else list(image.get("cmd") or []))
                )
                return argv, env, image.get("cwd")
            except ConfigError as exc:
                c.waiting = {"reason": "CreateContainerConfigError", "message": str(exc)}
            except PullError:
                ref = c.spec["image"]
                err = (
                    f'Failed to pull image "{ref}": rpc error: code = NotFound desc = failed to pull and '
                    f'unpack image "{ref}": not found (image not in the node agent\'s image map)'
                )
                c.waiting = (
                    {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{ref}": {err}'}
                    if pulled_before
                    else {"reason": "ErrImagePull", "message": err}
                )
                pulled_before = True
            except ApiException as exc:
                log.warning("env of %s: %s", self.meta["name"], exc.reason)
            self.publish()
            self.deleting.wait(BACKOFF_SECONDS)
        return None

    def launch(self, c: Container) -> bool:
        """Start `c` (really, or as a fake); False if the pod got deleted meanwhile."""
        prepared = self.prepare(c)
        if self.deleting.is_set():
            return False
        c.waiting, c.terminated = None, None
        c.container_id = f"dbmigrate://{self.meta['uid'][:8]}-{c.name}-{c.restart_count}"
        c.started_at = now()
        if prepared is None:
            c.fake = True
            return True
        argv, env, cwd = prepared
        cdir = self.dir / c.name
        cdir.mkdir(parents=True, exist_ok=True)
        c.msg_file, c.log_file = cdir / f"termination-log.{c.restart_count}", cdir / f"log.{c.restart_count}"
        c.msg_file.write_bytes(b"")
        env["DBMIGRATE_REPORT_PATH"] = str(c.msg_file)
        exe = shutil.which(argv[0], path=env.get("PATH")) if argv else None
        if not exe:
            c.terminated = {
                "exitCode": 128,
                "reason": "StartError",
                "startedAt": c.started_at,
                "finishedAt": now(),
                "containerID": c.container_id,
                "message": f'exec: "{argv[0] if argv else ""}": executable file not found in $PATH',
            }
            return True
        with c.log_file.open("wb") as out:
            c.proc = subprocess.Popen(
                [exe, *argv[1:]],
                cwd=cwd or cdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_preexec,
            )
        log.info(
            "pod %s/%s container %s: started %s", self.meta["namespace"], self.meta["name"], c.name, argv
        )
        return True

    def reap(self, c: Container, code: int) -> None:
        """Turn an exited process into a terminated state with kubelet's message rules."""
        assert c.msg_file
        assert c.log_file
        with c.msg_file.open("rb") as f:
            message = f.read(MAX_MESSAGE).decode(errors="replace")
        if not message and code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = c.log_file.read_bytes()[-LOG_FALLBACK_BYTES:].decode(errors="replace").splitlines()
            message = "\n".join(lines[-LOG_FALLBACK_LINES:])
        c.terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": now(),
            "containerID": c.container_id,
        }
        if message:
            c.terminated["message"] = message
        c.proc = None
        log.info("pod %s container %s exited %s", self.meta["name"], c.name, code)

    def restart(self, c: Container) -> bool:
        if self.policy == "Never" or (
            self.policy == "OnFailure" and c.terminated and c.terminated["exitCode"] == 0
        ):
            return False
        c.last_state, c.terminated, c.started_at = {"terminated": c.terminated}, None, None
        c.restart_count += 1
        c.waiting = {
            "reason": "CrashLoopBackOff",
            "message": f"back-off restarting failed container {c.name}",
        }
        self.publish()
        self.deleting.wait(BACKOFF_SECONDS)
        return self.launch(c)

    def kill_all(self) -> None:
        grace = min(int(self.pod["spec"].get("terminationGracePeriodSeconds") or 30), 5)
        for c in [*self.inits, *self.containers]:
            if c.proc:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGTERM)
                try:
                    code = c.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(c.proc.pid, signal.SIGKILL)
                    code = c.proc.wait()
                self.reap(c, 128 + signal.SIGTERM if code < 0 else code)
            elif c.started_at and not c.terminated:
                c.terminated = {
                    "exitCode": 0 if c.fake else 137,
                    "reason": "Completed" if c.fake else "Error",
                    "startedAt": c.started_at,
                    "finishedAt": now(),
                    "containerID": c.container_id,
                }

    def run(self) -> None:
        try:
            self.publish()
            if self.run_inits() and self.run_containers():
                self.publish()
        except Exception:
            log.exception("pod %s worker crashed", self.meta["name"])
        if self.deleting.is_set():
            self.kill_all()
            if self.phase not in ("Succeeded", "Failed"):
                self.phase = "Failed" if self.policy != "Always" else self.phase
            self.publish()
            self.agent.confirm_deletion(self.pod)

    def run_inits(self) -> bool:
        for c in self.inits:
            while True:
                if not self.launch(c):
                    return False
                if c.proc:
                    self.publish()
                    while c.proc.poll() is None:
                        if self.deleting.wait(0.2):
                            return False
                    self.reap(c, c.proc.returncode)
                elif not c.terminated:  # fake: done at once
                    c.terminated = {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": c.started_at,
                        "finishedAt": now(),
                        "containerID": c.container_id,
                    }
                if c.terminated and c.terminated["exitCode"] == 0:
                    break
                if self.policy == "Never":
                    self.phase = "Failed"
                    return False
                self.restart(c)
        self.publish()
        return True

    def run_containers(self) -> bool:
        for c in self.containers:
            if not self.launch(c):
                return False
        self.phase = "Running"
        self.publish()
        while not self.deleting.wait(0.2):
            changed = False
            for c in self.containers:
                if c.proc and c.proc.poll() is not None:
                    self.reap(c, c.proc.returncode)
                    changed = True
                if c.terminated and not c.proc and self.policy != "Never" and self.restart(c):
                    changed = True
            if all(c.terminated for c in self.containers):
                ok = all(c.terminated and c.terminated["exitCode"] == 0 for c in self.containers)
                self.phase = "Succeeded" if ok else "Failed"
                return True
            if changed:
                self.publish()
        return False


class Agent:
    def __init__(self, kubeconfig: str, node: str, image_map_file: Path | None, work_dir: Path) -> None:
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
        cfg.connection_pool_maxsize = 32
        # Typed as Any: we speak plain JSON dicts to the API, not the client's model classes.
        self.api: Any = client.ApiClient(cfg)
        self.core: Any = client.CoreV1Api(self.api)
        self.coord: Any = client.CoordinationV1Api(self.api)
        self.node, self.image_map_file, self.work_dir = node, image_map_file, work_dir
        self.workers: dict[str, PodWorker] = {}
        self.confirmed: set[str] = set()
        self.next_ip = 2
        self.lock = threading.Lock()

    def register(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.node,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }
        with contextlib.suppress(ApiException):
            self.core.create_node({"metadata": {"name": self.node, "labels": labels}})
        resources = {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "50Gi"}
        info = {
            "kubeletVersion": os.environ.get("DBMIGRATE_NODE_VERSION", "v1.34.4"),
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "osImage": "dbmigrate node agent",
            "containerRuntimeVersion": "dbmigrate://0.1",
            "kernelVersion": os.uname().release,
            "machineID": self.node,
            "systemUUID": self.node,
            "bootID": self.node,
        }
        self.core.patch_node_status(
            self.node,
            {
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "nodeInfo": info,
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": self.node},
                    ],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                    "conditions": self.conditions(),
                }
            },
        )

    def conditions(self) -> list[Json]:
        t = now()
        rows = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        return [
            {
                "type": k,
                "status": s,
                "reason": r,
                "message": "node agent",
                "lastHeartbeatTime": t,
                "lastTransitionTime": t,
            }
            for k, s, r in rows
        ]

    def heartbeat(self) -> None:
        """Renew the node Lease every 10s and the Ready condition every 30s (kubelet's defaults)."""
        beats = 0
        while True:
            try:
                renew = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                spec = {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": renew}
                try:
                    self.coord.patch_namespaced_lease(self.node, "kube-node-lease", {"spec": spec})
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    self.coord.create_namespaced_lease(
                        "kube-node-lease", {"metadata": {"name": self.node}, "spec": spec}
                    )
                if beats % 3 == 0:
                    # Patch the heartbeat time only, keeping each condition's lastTransitionTime.
                    node = self.core.read_node_status(self.node)
                    conds = self.api.sanitize_for_serialization(node.status.conditions or [])
                    for cond in conds:
                        cond["lastHeartbeatTime"] = now()
                    self.core.patch_node_status(self.node, {"status": {"conditions": conds}})
                beats += 1
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            time.sleep(10)

    def confirm_deletion(self, pod: Json) -> None:
        meta = pod["metadata"]
        if meta["uid"] in self.confirmed:
            return
        self.confirmed.add(meta["uid"])
        with contextlib.suppress(ApiException):
            # Options go in the body: the apiserver ignores query parameters when a body is sent.
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )

    def handle(self, pod: Json) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if pod["metadata"].get("deletionTimestamp"):
            if worker and worker.is_alive():
                worker.deleting.set()
            else:
                self.confirm_deletion(pod)
        elif worker is None and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            with self.lock:
                ip = f"10.244.{self.next_ip // 250}.{self.next_ip % 250 + 2}"
                self.next_ip += 1
            worker = self.workers[uid] = PodWorker(self, pod, ip)
            worker.start()

    def forget(self, pod: Json) -> None:
        worker = self.workers.pop(pod["metadata"]["uid"], None)
        if worker:
            worker.gone = True
            worker.deleting.set()

    def serve(self) -> None:
        threading.Thread(target=self.heartbeat, daemon=True, name="heartbeat").start()
        selector = f"spec.nodeName={self.node}"
        while True:
            try:
                pods = self.core.list_pod_for_all_namespaces(field_selector=selector)
                for pod in self.api.sanitize_for_serialization(pods.items):
                    self.handle(pod)
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=pods.metadata.resource_version,
                    timeout_seconds=300,
                )
                for event in stream:
                    if event["type"] == "ERROR":
                        break
                    if event["type"] == "DELETED":
                        self.forget(event["raw_object"])
                    else:
                        self.handle(event["raw_object"])
            except Exception as exc:
                log.warning("pod watch restarted: %s", exc)
                time.sleep(1)

    def shutdown(self, *_: object) -> None:
        for worker in self.workers.values():
            for c in [*worker.inits, *worker.containers]:
                if c.proc:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(c.proc.pid, signal.SIGKILL)
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", default="dbmigrate-node")
    parser.add_argument("--image-map-file", type=Path, default=None)
    parser.add_argument("--work-dir", type=Path, default=Path("pods"))
    parser.add_argument("--egress-socket", type=Path, help="serve the apiserver's cluster egress here")
    parser.add_argument("--service-map-file", type=Path, default=Path("service-map.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    agent = Agent(args.kubeconfig, args.node_name, args.image_map_file, args.work_dir)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` dumps stacks to the log
    signal.signal(signal.SIGTERM, agent.shutdown)
    signal.signal(signal.SIGINT, agent.shutdown)
    if args.egress_socket:
        proxy = ServiceProxy(args.egress_socket, args.service_map_file, agent.core)
        threading.Thread(target=proxy.serve_forever, daemon=True, name="egress-proxy").start()
    agent.register()
    log.info("node %s registered", args.node_name)
    agent.serve()


if __name__ == "__main__":
    main()
