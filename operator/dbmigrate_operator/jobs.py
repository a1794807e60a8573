"""The migration Job: its run hash, its deterministic name, its manifest. Pure functions."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from dbmigrate_operator import constants as c
from dbmigrate_operator.settings import Settings
from dbmigrate_runner import report

HASH_CHARS = 10
MAX_NAME = 63
COMMAND_ANNOTATION = f"{c.GROUP}/command"
GENERATION_ANNOTATION = f"{c.GROUP}/generation"
# Sub-second creation order: creationTimestamp has whole seconds, and "newest Job" must be exact.
CREATED_ANNOTATION = f"{c.GROUP}/created-at"
# Set to "plan" on a plan Job (and its Pod): it computes the SQL of a run, it does not migrate.
JOB_KIND_LABEL = f"{c.GROUP}/job-kind"
PLAN_KIND = "plan"
CHECK_KIND = "check"  # a database check Job: `dbmigrate-runner status`, which database the Secret names
# On a check Job: the rollouts (pod template hashes) it verifies, comma-separated.
ROLLOUTS_ANNOTATION = f"{c.GROUP}/rollouts"
CHECK_DEADLINE_SECONDS = 120  # a check connects and reads; one that hangs longer has failed
DEFAULT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}
# spec.lint.ignore reaches the runner (plan and approved run) as this variable; spec.job.env cannot set it.
LINT_IGNORE_ENV = "DBMIGRATE_LINT_IGNORE"
SECRET_FIELDS = (  # (env var the runner reads, secretRef key field, default key)
    ("DB_HOST", "hostKey", "host"),
    ("DB_PORT", "portKey", "port"),
    ("DB_NAME", "nameKey", "name"),
    ("DB_USER", "userKey", "user"),
    ("DB_PASS", "passwordKey", "password"),
)
# Runner exit codes that no retry can fix: fail the Job at once instead of burning backoffLimit.
# LockNotAvailable (7): the runner already retried within spec.locking's budget; more is the user's call.
FINAL_EXIT_CODES = (2, 5, 6, 7)  # ConfigError, MigrationFailed, DowngradeRefused, LockNotAvailable
# spec.locking → the runner's environment (unset fields: the runner's defaults).
LOCKING_ENV = (
    ("timeout", "DBMIGRATE_LOCKING_TIMEOUT"),
    ("retries", "DBMIGRATE_LOCKING_RETRIES"),
    ("budget", "DBMIGRATE_LOCKING_BUDGET"),
)


def database_ref(spec: dict[str, Any]) -> dict[str, Any]:
    """The database reference with the CRD defaults applied, so hashing does not depend on defaulting."""
    db = spec.get("database") or {}
    if url := db.get("urlSecretRef"):
        return {"urlSecretRef": {"name": url.get("name", ""), "key": url.get("key", "")}}
    ref = db.get("secretRef") or {}
    out = {"name": ref.get("name", "")}
    out.update({field: ref.get(field) or default for _, field, default in SECRET_FIELDS})
    return {"secretRef": out}


def run_hash(cr: dict[str, Any]) -> str:
    """What decides a run's outcome; a change of any of it asks for a new run (and a new Job name)."""
    spec = cr.get("spec") or {}
    meta = cr.get("metadata") or {}
    essence = {
        "uid": meta.get("uid", ""),  # a re-created CR of the same name never adopts the old one's Jobs
        "image": spec.get("image", ""),
        "tool": spec.get("tool") or "aerich",
        "config": spec.get("config") or "",
        "apps": sorted(spec.get("apps") or []),
        "target": spec.get("target") or "",
        "database": database_ref(spec),
        "allowDowngrade": bool(spec.get("allowDowngrade", False)),
        "rerun": (meta.get("annotations") or {}).get(c.RERUN_ANNOTATION, ""),
    }
    if spec.get("baseline"):  # only when set: existing resources keep their Job names
        essence["baseline"] = spec["baseline"]
    if ignore := lint_ignore(spec):  # only when set, as baseline; it changes the plan and its hash
        essence["lintIgnore"] = ignore
    # A database check found the Secret naming another database: a run against that one is desired
    # (only when set: existing resources keep their Job names; it stays recorded, so it never flips back).
    if moved := ((cr.get("status") or {}).get("databaseCheck") or {}).get("moved"):
        essence["databaseMoved"] = str(moved)
    raw = json.dumps(essence, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:HASH_CHARS]


def lint_ignore(spec: dict[str, Any]) -> list[str]:
    """``spec.lint.ignore``, sorted and deduplicated: the runner's ``DBMIGRATE_LINT_IGNORE``."""
    return sorted({str(rule) for rule in ((spec.get("lint") or {}).get("ignore") or []) if rule})


def job_name(cr_name: str, hash_: str) -> str:
    """``<name>-<hash>`` within 63 characters and a valid DNS label (a CR name may hold dots)."""
    base = re.sub(r"[^a-z0-9-]", "-", cr_name.lower())[: MAX_NAME - len(hash_) - 1].rstrip("-") or "dbm"
    return f"{base}-{hash_}"


def runner_args(spec: dict[str, Any], command: str) -> list[str]:
    args = [command, "--tool", spec.get("tool") or "aerich"]
    if spec.get("config"):
        args += ["--config", spec["config"]]
    for app in spec.get("apps") or []:
        args += ["--app", app]
    if spec.get("target"):
        args += ["--target", spec["target"]]
    if spec.get("baseline") and command in ("upgrade", "plan"):
        args += ["--baseline", spec["baseline"]]
    return args


def database_env(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Credentials reach the container only as secretKeyRef env vars; the operator never sees them."""
    ref = database_ref(spec)
    if "urlSecretRef" in ref:
        url = ref["urlSecretRef"]
        return [
            {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": url["name"], "key": url["key"]}}}
        ]
    split = ref["secretRef"]
    return [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": split["name"], "key": split[field]}}}
        for env, field, _ in SECRET_FIELDS
    ]


def locking_env(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """``spec.locking`` for the runner. Not part of the run hash: it says how a run waits for table
    locks, not what it applies (after a LockNotAvailable, a changed budget needs a rerun)."""
    locking = spec.get("locking") or {}
    return [
        {"name": env, "value": str(locking[key])}
        for key, env in LOCKING_ENV
        if locking.get(key) not in (None, "")
    ]


def labels_for(cr_name: str, hash_: str) -> dict[str, str]:
    return {
        c.MIGRATION_LABEL: cr_name,
        c.RUN_HASH_LABEL: hash_,
        c.MANAGED_BY_LABEL: c.MANAGED_BY,
        "app.kubernetes.io/name": "dbmigrate-migration",
    }


def plan_job_name(cr_name: str, hash_: str) -> str:
    """The plan Job of run ``hash_``: ``<name>-<hash>-plan``, next to the run's own Job name."""
    return job_name(cr_name, f"{hash_}-plan")


def is_plan_job(job: dict[str, Any]) -> bool:
    return ((job.get("metadata") or {}).get("labels") or {}).get(JOB_KIND_LABEL) == PLAN_KIND


def build_plan_job(
    cr: dict[str, Any], *, hash_: str, settings: Settings, now: datetime | None = None
) -> dict[str, Any]:
    """The plan Job of run ``hash_``: the run's manifest (same image, Secret, limits, Pod Security)
    with ``dbmigrate-runner plan``, its own name and the plan label. Read-only, takes no lock."""
    manifest = build_job(cr, hash_=hash_, command="plan", settings=settings, now=now)
    manifest["metadata"]["name"] = plan_job_name(cr["metadata"]["name"], hash_)
    manifest["metadata"]["labels"][JOB_KIND_LABEL] = PLAN_KIND
    manifest["spec"]["template"]["metadata"]["labels"][JOB_KIND_LABEL] = PLAN_KIND
    return manifest


def is_check_job(job: dict[str, Any]) -> bool:
    return ((job.get("metadata") or {}).get("labels") or {}).get(JOB_KIND_LABEL) == CHECK_KIND


def check_job_name(cr_name: str, rollouts: list[str], fingerprint: str, attempt: int) -> str:
    """``<name>-<digest>-check``: one name per (rollouts, fingerprint checked against, attempt)."""
    raw = json.dumps([sorted(rollouts), fingerprint, attempt], separators=(",", ":")).encode()
    return job_name(cr_name, f"{hashlib.sha256(raw).hexdigest()[:HASH_CHARS]}-check")


def build_check_job(
    cr: dict[str, Any],
    *,
    rollouts: list[str],
    fingerprint: str,
    attempt: int,
    settings: Settings,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A database check: the run's manifest (same image, Secret wiring, limits, Pod Security) with
    ``dbmigrate-runner status`` (read-only, takes no lock), one attempt, a short deadline, its own
    name and the check label; the rollouts it verifies in an annotation."""
    name = check_job_name(cr["metadata"]["name"], rollouts, fingerprint, attempt)
    manifest = build_job(cr, hash_=run_hash(cr), command="status", settings=settings, now=now)
    manifest["metadata"]["name"] = name
    manifest["metadata"]["labels"][JOB_KIND_LABEL] = CHECK_KIND
    manifest["metadata"]["annotations"][ROLLOUTS_ANNOTATION] = ",".join(sorted(rollouts))
    manifest["spec"]["template"]["metadata"]["labels"][JOB_KIND_LABEL] = CHECK_KIND
    manifest["spec"]["backoffLimit"] = 0  # the decision retries, with a new Job
    manifest["spec"]["activeDeadlineSeconds"] = CHECK_DEADLINE_SECONDS
    return manifest


def check_rollouts(job: dict[str, Any]) -> list[str]:
    """The rollouts a check Job verifies."""
    raw = str(((job.get("metadata") or {}).get("annotations") or {}).get(ROLLOUTS_ANNOTATION) or "")
    return [r for r in raw.split(",") if r]


def build_job(
    cr: dict[str, Any],
    *,
    hash_: str,
    command: str,
    settings: Settings,
    now: datetime | None = None,
    expect_plan: str | None = None,
    image: str | None = None,
) -> dict[str, Any]:
    """The Job manifest for one run: restricted Pod Security, report in the termination message.
    ``expect_plan``: the approved plan's hash; the runner applies nothing if the plan differs.
    ``image``: the image the approved plan ran (``repo@sha256:…``) instead of ``spec.image``."""
    meta = cr["metadata"]
    spec = cr.get("spec") or {}
    job = spec.get("job") or {}
    name = job_name(meta["name"], hash_)
    labels = labels_for(meta["name"], hash_)
    pod_labels = {**(job.get("podLabels") or {}), **labels}  # ours win
    user_env = [
        e
        for e in job.get("env") or []
        if e.get("name") not in {"DATABASE_URL", LINT_IGNORE_ENV, *(f[0] for f in SECRET_FIELDS)}
        and not (spec.get("locking") and e.get("name") in {env for _, env in LOCKING_ENV})
    ]
    # Plan and approved run alike: the runner re-makes the plan with the same silenced rules.
    lint_env = [{"name": LINT_IGNORE_ENV, "value": ",".join(ignore)}] if (ignore := lint_ignore(spec)) else []
    container: dict[str, Any] = {
        "name": c.CONTAINER_NAME,
        "image": image or spec["image"],
        "command": list(settings.runner_command),
        "args": [*runner_args(spec, command), *(["--expect-plan", expect_plan] if expect_plan else [])],
        "env": [
            *user_env,
            *lint_env,
            *database_env(spec),
            *locking_env(spec),
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "resources": job.get("resources") or DEFAULT_RESOURCES,
        "terminationMessagePath": report.DEFAULT_PATH,  # where the runner writes it: one constant
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the runner talks to the database, never to the API
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    for key in ("serviceAccountName", "nodeSelector", "tolerations", "imagePullSecrets"):
        if job.get(key):
            pod_spec[key] = job[key]
    template_meta: dict[str, Any] = {"labels": pod_labels}
    if job.get("podAnnotations"):
        template_meta["annotations"] = dict(job["podAnnotations"])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {
                COMMAND_ANNOTATION: command,
                GENERATION_ANNOTATION: str(meta.get("generation", "")),
                CREATED_ANNOTATION: (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
            "ownerReferences": [
                {
                    "apiVersion": c.API_VERSION,
                    "kind": c.KIND,
                    "name": meta["name"],
                    "uid": meta.get("uid", ""),
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {
            "backoffLimit": int(job.get("backoffLimit", settings.backoff_limit)),
            "activeDeadlineSeconds": int(job.get("activeDeadlineSeconds", settings.active_deadline_seconds)),
            # No ttlSecondsAfterFinished: the operator keeps spec.historyLimit finished Jobs itself.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": c.CONTAINER_NAME,
                            "operator": "In",
                            "values": list(FINAL_EXIT_CODES),
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                ]
            },
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }
