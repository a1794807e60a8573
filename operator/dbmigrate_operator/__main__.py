"""``dbmigrate-operator``: run kopf with the controller and pod gating handlers.

Configured by environment variables (see :mod:`dbmigrate_operator.settings` and docs/operator.md);
the command line only offers ``--help`` and ``--version``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import kopf

from dbmigrate_operator.settings import Settings

LOG_FORMATS = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}
ENVIRONMENT = """\
environment:
  DBMIGRATE_NAMESPACES          namespaces to watch, comma-separated (default: the whole cluster)
  DBMIGRATE_RESYNC_SECONDS      re-check every DatabaseMigration this often (default 300)
  DBMIGRATE_WORKERS             reconcile passes run at once (default 4)
  DBMIGRATE_STANDALONE          true (default): one replica; false: replicas elect the active one (Lease)
  DBMIGRATE_LEASE_NAME          the coordination.k8s.io Lease (default dbmigrate-operator)
  DBMIGRATE_OPERATOR_NAMESPACE  the Lease's namespace (default: the ServiceAccount's)
  DBMIGRATE_LEASE_SECONDS       leaseDurationSeconds: a killed active replica is replaced after it (15)
  DBMIGRATE_LIVENESS_ENDPOINT   kopf liveness URL (default http://0.0.0.0:8080/healthz; empty: off)
  DBMIGRATE_METRICS_PORT        Prometheus /metrics port (default 8000; 0: off)
  DBMIGRATE_MALLOC_TRIM_SECONDS return freed memory to the OS this often (default 30; 0: never)
  DBMIGRATE_LOG_FORMAT          plain | full | json (default full)
  DBMIGRATE_VERBOSE             true: debug logging
  pod gating (webhook) settings: see docs
"""


def _version() -> str:
    try:
        return version("dbmigrate-operator")
    except PackageNotFoundError:
        return "unknown"


def parse_args(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(
        prog="dbmigrate-operator",
        description="Kubernetes operator that applies Tortoise ORM migrations (DatabaseMigration resources) "
        "and gates opted-in pods until their schema is there.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _, unknown = parser.parse_known_args(argv)
    if unknown:  # configuration is environment-only; say so instead of failing a Pod on a stray arg
        logging.getLogger("dbmigrate_operator").warning("ignoring command-line arguments %s", unknown)


def main(argv: Sequence[str] | None = None) -> None:
    parse_args(argv)
    settings = Settings.from_env()
    kopf.configure(
        verbose=settings.verbose, log_format=LOG_FORMATS.get(settings.log_format, kopf.LogFormat.FULL)
    )
    # Importing registers the handlers in kopf's default registry.
    import dbmigrate_operator.gating
    import dbmigrate_operator.handlers  # noqa: F401
    from dbmigrate_operator import memory, metrics

    metrics.serve(settings.metrics_port)
    memory.start_trimming(settings.malloc_trim_seconds)
    kopf.run(**kopf_run_kwargs(settings))


def kopf_run_kwargs(settings: Settings) -> dict[str, Any]:
    """The arguments for ``kopf.run``: always without kopf peering.

    Every replica runs kopf's watches and the admission webhook (reads only); which replica writes
    is decided by our own Lease (:mod:`dbmigrate_operator.leadership`), not by kopf's peering, which
    pauses only kopf's handlers, never our own tasks. kopf treats any ``peering_name`` as "peering
    is mandatory" and would wait for its peering resources: none is passed.
    """
    return {
        "standalone": True,
        "clusterwide": not settings.namespaces,
        "namespaces": settings.namespaces,
        "liveness_endpoint": settings.liveness_endpoint,
    }


if __name__ == "__main__":
    main()
