"""The Job manifest: valid for the API, restricted Pod Security, credentials only as secretKeyRef."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from dbmigrate_operator import constants as c
from dbmigrate_operator.jobs import build_job, job_name, run_hash, runner_args
from dbmigrate_operator.settings import Settings
from dbmigrate_runner import report
from tests.operator.builders import make_cr

S = Settings()
K8S_SCHEMA = "1.29.0"  # the oldest Kubernetes we support


def container(job: dict[str, Any]) -> dict[str, Any]:
    (only,) = job["spec"]["template"]["spec"]["containers"]
    return dict(only)


def full_cr() -> dict[str, Any]:
    return make_cr(
        tool="tortoise",
        config="app.config.TORTOISE_ORM",
        apps=["models", "billing"],
        target="models:3",
        job={
            "backoffLimit": 4,
            "activeDeadlineSeconds": 600,
            "serviceAccountName": "migrator",
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": 1073741824}},
            "nodeSelector": {"pool": "batch"},
            "imagePullSecrets": [{"name": "regcred"}],
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
            "env": [{"name": "LOG_LEVEL", "value": "debug"}],
            "podLabels": {"team": "shop", c.MIGRATION_LABEL: "x"},
            "podAnnotations": {"sidecar.istio.io/inject": "false"},
        },
    )


@pytest.mark.parametrize("cr", [make_cr(), full_cr(), make_cr(database={"secretRef": {"name": "pg"}})])
def test_manifest_is_a_valid_job(cr: dict[str, Any]) -> None:
    job = build_job(cr, hash_=run_hash(cr), command="upgrade", settings=S)
    kubernetes_validate.validate(job, K8S_SCHEMA, strict=True)


def test_runner_arguments_and_job_settings() -> None:
    cr = full_cr()
    job = build_job(cr, hash_=run_hash(cr), command="upgrade", settings=S)
    assert container(job)["command"] == ["dbmigrate-runner"]
    assert container(job)["args"] == [
        "upgrade",
        "--tool",
        "tortoise",
        "--config",
        "app.config.TORTOISE_ORM",
        "--app",
        "models",
        "--app",
        "billing",
        "--target",
        "models:3",
    ]
    assert job["spec"]["backoffLimit"] == 4
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert "ttlSecondsAfterFinished" not in job["spec"]
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "migrator"
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["restartPolicy"] == "Never"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "shop"
    assert labels[c.MIGRATION_LABEL] == "shop-db"
    assert job["spec"]["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert {"name": "LOG_LEVEL", "value": "debug"} in container(job)["env"]


def test_defaults() -> None:
    cr = make_cr()
    job = build_job(cr, hash_=run_hash(cr), command="upgrade", settings=S)
    assert container(job)["args"] == ["upgrade", "--tool", "aerich"]
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["activeDeadlineSeconds"] == 1800
    meta = job["metadata"]
    assert meta["labels"][c.MIGRATION_LABEL] == "shop-db"
    assert meta["labels"][c.RUN_HASH_LABEL] == run_hash(cr)
    assert meta["labels"][c.MANAGED_BY_LABEL] == c.MANAGED_BY
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "name": "shop-db",
        "uid": cr["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }


def test_restricted_pod_security_and_termination_message() -> None:
    cr = make_cr()
    job = build_job(cr, hash_=run_hash(cr), command="upgrade", settings=S)
    pod = job["spec"]["template"]["spec"]
    ctr = container(job)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
    assert ctr["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in ctr["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"])
    assert ctr["terminationMessagePolicy"] == "File"
    assert ctr["terminationMessagePath"] == "/dev/termination-log"
    assert pod["automountServiceAccountToken"] is False


def test_credentials_only_through_secret_key_refs() -> None:
    url = make_cr()
    (env,) = [
        e
        for e in container(build_job(url, hash_="h", command="upgrade", settings=S))["env"]
        if e["name"] == "DATABASE_URL"
    ]
    assert env == {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "url"}}}
    split = make_cr(database={"secretRef": {"name": "pg", "passwordKey": "pw"}})
    envs = {
        e["name"]: e for e in container(build_job(split, hash_="h", command="upgrade", settings=S))["env"]
    }
    assert envs["DB_PASS"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "pw"}
    assert envs["DB_HOST"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "host"}
    assert {"DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASS"} <= set(envs)
    assert "DATABASE_URL" not in envs
    assert all("value" not in e for n, e in envs.items() if n.startswith("DB"))


def test_job_name_is_deterministic_short_and_dns_safe() -> None:
    assert job_name("shop-db", "0123456789") == "shop-db-0123456789"
    long = job_name("a" * 63, "0123456789")
    assert len(long) <= 63
    assert long.endswith("-0123456789")
    assert job_name("shop.db.v2", "0123456789") == "shop-db-v2-0123456789"
    assert job_name("x" * 51 + "-yyyy", "0123456789") == "x" * 51 + "-0123456789"  # no "--"


def test_hash_covers_what_decides_the_outcome_and_nothing_else() -> None:
    base = make_cr()
    h = run_hash(base)
    assert run_hash(copy.deepcopy(base)) == h
    # CRD defaults applied by the API server do not change the run
    assert run_hash(make_cr(tool="aerich", allowDowngrade=False)) == h
    assert run_hash(make_cr(database={"secretRef": {"name": "pg"}})) == run_hash(
        make_cr(
            database={
                "secretRef": {
                    "name": "pg",
                    "hostKey": "host",
                    "portKey": "port",
                    "nameKey": "name",
                    "userKey": "user",
                    "passwordKey": "password",
                }
            }
        )
    )
    changed = [
        make_cr(image="registry.example.com/shop-migrations:1.4.3"),
        make_cr(tool="tortoise"),
        make_cr(config="app.settings.DB"),
        make_cr(apps=["models"]),
        make_cr(target="3"),
        make_cr(database={"urlSecretRef": {"name": "shop-db", "key": "other"}}),
        make_cr(allowDowngrade=True),
        make_cr(annotations={c.RERUN_ANNOTATION: "1"}),
        make_cr(uid="another-incarnation"),
    ]
    hashes = {run_hash(cr) for cr in changed}
    assert len(hashes) == len(changed)
    assert h not in hashes
    # how the Job runs is not what it does: no new run for new resources or labels
    assert run_hash(make_cr(job={"resources": {"limits": {"memory": "1Gi"}}, "podLabels": {"a": "b"}})) == h
    assert run_hash(make_cr(apps=["b", "a"])) == run_hash(make_cr(apps=["a", "b"]))


def test_the_termination_message_path_is_the_runners_report_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """One constant: where the runner writes its report is where the Pod tells the kubelet to read it."""
    monkeypatch.setattr(report, "DEFAULT_PATH", "/dev/elsewhere")
    cr = make_cr()
    job = build_job(cr, hash_=run_hash(cr), command="upgrade", settings=S)
    assert container(job)["terminationMessagePath"] == "/dev/elsewhere"


def test_baseline_reaches_the_runner_and_the_hash_only_when_set() -> None:
    spec = {"image": "r/m:1", "tool": "alembic", "database": {"urlSecretRef": {"name": "s", "key": "url"}}}
    assert "--baseline" not in runner_args(spec, "upgrade")
    with_baseline = {**spec, "baseline": "a1b2c3"}
    assert runner_args(with_baseline, "upgrade")[-2:] == ["--baseline", "a1b2c3"]
    assert "--baseline" not in runner_args(with_baseline, "downgrade")
    cr = {"metadata": {"uid": "u"}, "spec": spec}
    assert run_hash(cr) != run_hash({**cr, "spec": with_baseline})


def test_lint_ignore_reaches_plan_and_run_and_changes_the_run() -> None:
    """spec.lint.ignore: the same DBMIGRATE_LINT_IGNORE on the plan Job and the approved run (whose
    runner re-makes the plan, hash included), never from spec.job.env; a new run when it changes."""
    from dbmigrate_operator.jobs import build_plan_job

    plain = make_cr(approval="OnDestructive")
    quiet = make_cr(
        approval="OnDestructive",
        lint={"ignore": ["require-concurrent-index-creation", "ban-drop-index", "ban-drop-index"]},
        job={"env": [{"name": "DBMIGRATE_LINT_IGNORE", "value": "ban-drop-table"}]},
    )
    assert run_hash(plain) != run_hash(quiet)
    assert run_hash(plain) == run_hash(make_cr(approval="OnDestructive", lint={"ignore": []}))
    for job in (
        build_plan_job(quiet, hash_=run_hash(quiet), settings=Settings()),
        build_job(quiet, hash_=run_hash(quiet), command="upgrade", settings=Settings(), expect_plan="0" * 64),
    ):
        env = [e for e in container(job)["env"] if e["name"] == "DBMIGRATE_LINT_IGNORE"]
        assert env == [
            {"name": "DBMIGRATE_LINT_IGNORE", "value": "ban-drop-index,require-concurrent-index-creation"}
        ]
    plain_job = build_plan_job(plain, hash_=run_hash(plain), settings=Settings())
    assert all(e["name"] != "DBMIGRATE_LINT_IGNORE" for e in container(plain_job)["env"])


def test_spec_locking_reaches_the_runner_as_env_not_the_hash_and_exit_7_is_final() -> None:
    plain = make_cr()
    locked = make_cr(locking={"timeout": "500ms", "retries": 5, "budget": "2m"})
    assert run_hash(locked) == run_hash(plain)  # how a run waits for locks, not what it applies
    env = container(build_job(locked, hash_=run_hash(locked), command="upgrade", settings=S))["env"]
    assert {"name": "DBMIGRATE_LOCKING_TIMEOUT", "value": "500ms"} in env
    assert {"name": "DBMIGRATE_LOCKING_RETRIES", "value": "5"} in env
    assert {"name": "DBMIGRATE_LOCKING_BUDGET", "value": "2m"} in env
    partial = make_cr(locking={"timeout": "0"})
    names = [
        e["name"] for e in container(build_job(partial, hash_="h", command="upgrade", settings=S))["env"]
    ]
    assert "DBMIGRATE_LOCKING_TIMEOUT" in names
    assert "DBMIGRATE_LOCKING_RETRIES" not in names  # unset: the runner's default
    job = build_job(plain, hash_="h", command="upgrade", settings=S)
    assert not [e for e in container(job)["env"] if e["name"].startswith("DBMIGRATE_LOCKING_")]
    final = job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"]
    assert report.Outcome.LOCK_NOT_AVAILABLE.exit_code in final  # the runner already retried
    assert report.Outcome.DATABASE_UNREACHABLE.exit_code not in final  # the Job's retry resumes
