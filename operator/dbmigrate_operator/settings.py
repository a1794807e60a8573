"""Operator settings from environment variables (the chart sets them); one frozen object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list; blanks dropped."""
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _count(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = _number(env, name, default, minimum)
    if value != int(value):
        raise ValueError(f"{name} must be a whole number, got {env.get(name)!r}")
    return int(value)


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = _number(env, name, default, 0)
    if value != int(value) or value > 65535:
        raise ValueError(f"{name} must be a port number (0 disables), got {env.get(name)!r}")
    return int(value)


@dataclass(frozen=True)
class Settings:
    # Every DatabaseMigration is re-checked this often even without any event (a missed watch
    # event must not strand a run). The checks are spread over the interval, not fired at once.
    resync_seconds: float = 300.0
    # Reconcile passes that run at once (each on its own DatabaseMigration); events beyond that wait
    # as keys in the work queue (workqueue.py), which bounds the memory a burst of events costs.
    workers: int = 4
    # Namespaces to watch; empty = the whole cluster.
    namespaces: tuple[str, ...] = ()
    # Standalone: one replica, always active. Otherwise replicas elect the active one with a
    # coordination.k8s.io/v1 Lease (see leadership.py); the others write nothing.
    standalone: bool = True
    lease_name: str = "dbmigrate-operator"
    lease_namespace: str = ""  # empty: the in-cluster ServiceAccount's namespace, else "default"
    # leaseDurationSeconds: a killed active replica is replaced after this long.
    lease_seconds: float = 15.0
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    # Prometheus metrics (/metrics) on a port of their own; 0 disables them.
    metrics_port: int = 8000
    # glibc's malloc_trim(0) this often, to hand freed heap pages back (see memory.py); 0: never.
    malloc_trim_seconds: float = 30.0
    log_format: str = "full"  # kopf's: plain | full | json
    verbose: bool = False
    # Used when a CR leaves spec.historyLimit / spec.job.* unset (the CRD defaults them too).
    history_limit: int = 3
    backoff_limit: int = 2
    active_deadline_seconds: int = 1800
    # status.appliedVersions keeps at most this many entries (the newest); appliedCount stays exact.
    applied_versions_cap: int = 50
    # status.ancestry (Alembic: the applied revision ids pins are checked against) keeps at most this
    # many ids, the newest; about 8 bytes of status each for Alembic's default 12-digit ids.
    ancestry_cap: int = 2000
    # An unschedulable migration Pod stays Reconciling (WaitingForNode) this long before it is Stalled
    # (Unschedulable): under a cluster autoscaler, "no node fits" is the normal start of a scale-up.
    unschedulable_grace_seconds: float = 300.0
    # A running Job still without a Pod this long after its creation: read its Events (FailedCreate).
    pod_create_grace_seconds: float = 10.0
    # While a migration Job's runner container runs past its first lock timeout, the tail of its log
    # is read this often for the lock wait it logged (lockwatch.py: one pods/log GET each); 0: never.
    lock_watch_seconds: float = 10.0
    # Longest database error text copied into a condition message.
    message_chars: int = 1024
    # The runner's executable inside migration images (built FROM the migrations base image).
    runner_command: tuple[str, ...] = ("dbmigrate-runner",)
    # Whoever may create a DatabaseMigration may otherwise run a Pod with any image and any
    # ServiceAccount of its namespace. ServiceAccounts spec.job.serviceAccountName may name (unset
    # counts as "default"); empty = any.
    allowed_service_accounts: tuple[str, ...] = ()
    # Prefixes spec.image must start with; empty = any.
    allowed_images: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        namespaces = _list(env, "DBMIGRATE_NAMESPACES")
        liveness = env.get("DBMIGRATE_LIVENESS_ENDPOINT")
        return cls(
            resync_seconds=_number(env, "DBMIGRATE_RESYNC_SECONDS", cls.resync_seconds, 5),
            workers=_count(env, "DBMIGRATE_WORKERS", cls.workers, 1),
            namespaces=namespaces,
            standalone=_bool(env.get("DBMIGRATE_STANDALONE"), cls.standalone),
            lease_name=(
                env.get("DBMIGRATE_LEASE_NAME", "").strip()
                or env.get("DBMIGRATE_PEERING_NAME", "").strip()  # what charts set before the Lease
                or cls.lease_name
            ),
            lease_namespace=env.get("DBMIGRATE_OPERATOR_NAMESPACE", "").strip(),
            lease_seconds=_number(env, "DBMIGRATE_LEASE_SECONDS", cls.lease_seconds, 3),
            liveness_endpoint=cls.liveness_endpoint if liveness is None else (liveness.strip() or None),
            metrics_port=_port(env, "DBMIGRATE_METRICS_PORT", cls.metrics_port),
            malloc_trim_seconds=_number(env, "DBMIGRATE_MALLOC_TRIM_SECONDS", cls.malloc_trim_seconds, 0),
            log_format=(env.get("DBMIGRATE_LOG_FORMAT", "").strip().lower() or cls.log_format),
            verbose=_bool(env.get("DBMIGRATE_VERBOSE"), False),
            unschedulable_grace_seconds=_number(
                env, "DBMIGRATE_UNSCHEDULABLE_GRACE_SECONDS", cls.unschedulable_grace_seconds, 0
            ),
            applied_versions_cap=int(
                _number(env, "DBMIGRATE_APPLIED_VERSIONS_CAP", cls.applied_versions_cap, 1)
            ),
            ancestry_cap=int(_number(env, "DBMIGRATE_ANCESTRY_CAP", cls.ancestry_cap, 1)),
            lock_watch_seconds=_number(env, "DBMIGRATE_LOCK_WATCH_SECONDS", cls.lock_watch_seconds, 0),
            allowed_service_accounts=_list(env, "DBMIGRATE_ALLOWED_SERVICE_ACCOUNTS"),
            allowed_images=_list(env, "DBMIGRATE_ALLOWED_IMAGES"),
        )
