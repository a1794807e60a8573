"""Server-side label selectors for every Job and Pod watch the operator opens.

kopf's handler filters (``labels=``) are applied inside the operator, after the API server has sent
the event: with them alone the operator would list and stream every Job and Pod of the cluster, and
keep each in kopf's per-object memory. ``settings.watching.label_selectors`` puts a ``labelSelector``
on kopf's list and watch requests instead, so the API server sends only the operator's own Jobs and
their Pods (the Job template carries the same labels). The operator's cost then grows with the number
of DatabaseMigrations, never with the rest of the cluster.

App pods held by the gate are never watched: the operator learns of them from the admission webhook
and by label- and field-selected lists when a DatabaseMigration changes (and on the periodic sweep).
"""

from __future__ import annotations

from collections.abc import Mapping

import kopf

from dbmigrate_operator import constants as c

# Equality on the managed-by label, existence of the migration label (its value is the CR's name).
OWN_SELECTOR = f"{c.MANAGED_BY_LABEL}={c.MANAGED_BY},{c.MIGRATION_LABEL}"
# (group, version, plural) of every watched resource that is not a DatabaseMigration.
FILTERED_RESOURCES: tuple[tuple[str, str, str], ...] = (("batch", "v1", "jobs"), ("", "v1", "pods"))


def configure(settings: kopf.OperatorSettings) -> None:
    """Make kopf's lists and watches of Jobs and Pods carry :data:`OWN_SELECTOR` (before any watch)."""
    for group, version, plural in FILTERED_RESOURCES:
        settings.watching.label_selectors[group, version, plural] = OWN_SELECTOR


def migration_of(labels: Mapping[str, str]) -> str | None:
    """The DatabaseMigration an event's Job or Pod belongs to; None for anything that is not ours.

    The API server already selected on these labels; this guards the handlers all the same (an API
    that ignores selectors, a label removed by hand).
    """
    if labels.get(c.MANAGED_BY_LABEL) != c.MANAGED_BY:
        return None
    return labels.get(c.MIGRATION_LABEL) or None
