"""Objects as the API server and the Job controller/kubelet would show them, for the decision tests.

Shared with the kmock wiring tests (which play the Job controller and kubelet with them) so both
describe Pods and Jobs the same way.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from dbmigrate_operator import constants as c
from dbmigrate_runner.report import AppState, ErrorInfo, Outcome, Report, encode

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_cr(
    name: str = "shop-db",
    namespace: str = "shop",
    *,
    uid: str = "11111111-2222-3333-4444-555555555555",
    generation: int = 1,
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image": "registry.example.com/shop-migrations:1.4.2",
        "database": {"urlSecretRef": {"name": "shop-db", "key": "url"}},
    }
    body.update(spec)
    cr: dict[str, Any] = {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": generation},
        "spec": body,
    }
    if annotations:
        cr["metadata"]["annotations"] = dict(annotations)
    if status is not None:
        cr["status"] = copy.deepcopy(status)
    return cr


def admit(manifest: dict[str, Any], created: datetime, uid: str | None = None) -> dict[str, Any]:
    """What the API server adds to a created Job."""
    job = copy.deepcopy(manifest)
    job["metadata"]["uid"] = uid or f"job-{manifest['metadata']['name']}"
    job["metadata"]["creationTimestamp"] = ts(created)
    job["status"] = {}
    return job


def pod_for(job: dict[str, Any], suffix: str = "a1b2c", **status: Any) -> dict[str, Any]:
    meta = job["metadata"]
    labels = {**job["spec"]["template"]["metadata"]["labels"], "batch.kubernetes.io/job-name": meta["name"]}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-{suffix}",
            "namespace": meta["namespace"],
            "uid": f"pod-{meta['name']}-{suffix}",
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": copy.deepcopy(job["spec"]["template"]["spec"]),
        "status": status,
    }


def running_pod(job: dict[str, Any], started: datetime, suffix: str = "a1b2c") -> dict[str, Any]:
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    return pod_for(
        job,
        suffix,
        phase="Running",
        startTime=ts(started),
        containerStatuses=[
            {
                "name": c.CONTAINER_NAME,
                "image": image,
                "ready": True,
                "state": {"running": {"startedAt": ts(started)}},
            }
        ],
    )


def waiting_pod(job: dict[str, Any], reason: str, message: str, suffix: str = "a1b2c") -> dict[str, Any]:
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    return pod_for(
        job,
        suffix,
        phase="Pending",
        containerStatuses=[
            {
                "name": c.CONTAINER_NAME,
                "image": image,
                "ready": False,
                "state": {"waiting": {"reason": reason, "message": message}},
            }
        ],
    )


def unschedulable_pod(
    job: dict[str, Any], message: str, suffix: str = "a1b2c", since: datetime | None = None
) -> dict[str, Any]:
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    if since is not None:
        cond["lastTransitionTime"] = ts(since)
    return pod_for(job, suffix, phase="Pending", conditions=[cond])


def terminated_pod(
    job: dict[str, Any],
    exit_code: int,
    message: str | None,
    finished: datetime,
    suffix: str = "a1b2c",
    reason: str | None = None,
) -> dict[str, Any]:
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    state: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "finishedAt": ts(finished),
        "startedAt": ts(finished - timedelta(seconds=5)),
    }
    if message is not None:
        state["message"] = message
    return pod_for(
        job,
        suffix,
        phase="Succeeded" if exit_code == 0 else "Failed",
        containerStatuses=[
            {"name": c.CONTAINER_NAME, "image": image, "ready": False, "state": {"terminated": state}}
        ],
    )


def started(job: dict[str, Any], at: datetime) -> dict[str, Any]:
    job = copy.deepcopy(job)
    job["status"] = {**job.get("status", {}), "startTime": ts(at), "active": 1}
    return job


def completed(job: dict[str, Any], at: datetime) -> dict[str, Any]:
    job = started(job, at - timedelta(seconds=10))
    job["status"].update(
        {
            "active": 0,
            "succeeded": 1,
            "completionTime": ts(at),
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": ts(at)},
                {"type": "Complete", "status": "True", "lastTransitionTime": ts(at)},
            ],
        }
    )
    return job


def failed(
    job: dict[str, Any], at: datetime, reason: str = "BackoffLimitExceeded", failures: int = 3
) -> dict[str, Any]:
    job = started(job, at - timedelta(seconds=10))
    job["status"].update(
        {
            "active": 0,
            "failed": failures,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": reason, "lastTransitionTime": ts(at)},
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": reason,
                    "message": "Job has reached the specified backoff limit"
                    if reason == "BackoffLimitExceeded"
                    else "Job was active longer than specified deadline",
                    "lastTransitionTime": ts(at),
                },
            ],
        }
    )
    return job


def success_report(
    versions: list[str], applied: list[str] | None = None, app: str = "models", command: str = "upgrade"
) -> str:
    applied = [f"{app}:{v}" for v in versions] if applied is None else applied
    return encode(
        Report(
            outcome=Outcome.SUCCEEDED,
            tool="aerich",
            command=command,
            apps={
                app: AppState(
                    current=versions[-1] if versions else None, count=len(versions), versions=versions
                )
            },
            applied=applied,
            applied_count=len(applied),
            duration_ms=1234,
        )
    )


def failure_report(
    outcome: Outcome,
    message: str,
    versions: list[str] | None = None,
    kind: str = "Error",
    migration: str | None = None,
    app: str = "models",
) -> str:
    apps = {}
    if versions is not None:
        apps = {
            app: AppState(current=versions[-1] if versions else None, count=len(versions), versions=versions)
        }
    return encode(
        Report(
            outcome=outcome,
            tool="aerich",
            command="upgrade",
            apps=apps,
            error=ErrorInfo(kind=kind, message=message, migration=migration),
        )
    )


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies it."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
