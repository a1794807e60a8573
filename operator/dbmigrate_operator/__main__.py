"""``dbmigrate-operator``: run kopf with the controller and pod gating handlers.

Settings come from the environment (see :mod:`dbmigrate_operator.settings` and docs/operator.md).
"""

from __future__ import annotations

import kopf

from dbmigrate_operator.settings import Settings

LOG_FORMATS = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}


def main() -> None:
    settings = Settings.from_env()
    kopf.configure(
        verbose=settings.verbose, log_format=LOG_FORMATS.get(settings.log_format, kopf.LogFormat.FULL)
    )
    # Importing registers the handlers in kopf's default registry.
    import dbmigrate_operator.gating
    import dbmigrate_operator.handlers  # noqa: F401

    kopf.run(
        standalone=settings.standalone,
        peering_name=settings.peering_name,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint,
    )


if __name__ == "__main__":
    main()
