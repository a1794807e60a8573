"""kopf wiring: any event about a DatabaseMigration, its Jobs or their Pods -> reconcile that one CR.

Thin on purpose: kopf's index handlers feed the watched view (:mod:`view`), its event handlers put
the CR's key in the :class:`controller.Controller`'s work queue; the passes run there, never inside
kopf's handlers. No kopf change-detecting handlers (no progress annotations) and no kopf timers or
finalizers: the one finalizer is the operator's own, ``dbmigrate.dev/run-in-progress``, present only
while a migration Job runs (:func:`deletion.holds_deletion`): deleting the CR then waits for the run
to end.

Importing this module registers the handlers in kopf's default registry (``kopf run -m`` works).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf
import kubernetes.client

from dbmigrate_operator import check_requests, metrics, watching
from dbmigrate_operator import constants as c
from dbmigrate_operator.controller import Controller
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.view import Kind

logger = logging.getLogger("dbmigrate_operator")


def _owned_event(
    controller: Controller,
    kind: Kind,
    type_: str | None,
    body: Mapping[str, Any],
    name: str,
    namespace: str | None,
) -> None:
    """A watch event about one of our Jobs or Pods: reconcile its DatabaseMigration.

    The index handler already put the body into the view; a deletion is taken out here (kopf calls
    index handlers for every event but DELETED). An event from a (re)listing (``type`` None) means the
    watch restarted and deletions may have been missed: every CR's next pass reads the API.
    """
    metrics.watch_event(kind.value)
    labels = (body.get("metadata") or {}).get("labels") or {}
    migration = watching.migration_of(labels)
    logger.debug("watch event %s=%s/%s migration=%s", kind.name.lower(), namespace, name, migration)
    if type_ == "DELETED":
        controller.view.delete(kind, body)
    if type_ is None:
        controller.relisted()
    if namespace is None or migration is None:
        return
    controller.enqueue(namespace, migration)


def register(
    registry: kopf.OperatorRegistry,
    settings: Settings,
    api_config: kubernetes.client.Configuration | None = None,
) -> Controller:
    """Attach the controller's handlers to ``registry``; tests use a fresh registry each."""
    controller = Controller(settings, api_config)

    @kopf.on.startup(registry=registry, id="dbmigrate-start")
    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # Our own Events are explicit; kopf's log lines become Events only when they are warnings.
        settings.posting.level = logging.WARNING
        watching.configure(settings)  # server-side selectors on every Job/Pod list and watch
        check_requests.offer(memo, controller.wanted.say)  # gating's release passes tell the controller
        await controller.start()

    @kopf.on.cleanup(registry=registry, id="dbmigrate-stop")
    async def stop(**_: Any) -> None:
        await controller.stop()

    # The view's feed. kopf calls index handlers for every listed or changed object, before any other
    # handler, and runs no other handler until the first listing of every indexed resource is done:
    # so a CR is never decided on before its Jobs and Pods are in the view (a cold start converges).
    # They return None, so kopf's own index stays empty: the bodies live once, in the view. They are
    # coroutines although they never wait: kopf runs a plain function in a thread of its executor,
    # and the view is the event loop's alone (the passes write their own answers into it too).
    @kopf.index(c.GROUP, c.VERSION, c.PLURAL, registry=registry, id="dbmigrate-view-migrations")
    async def view_migration(body: kopf.Body, **_: Any) -> None:
        controller.view.put(Kind.MIGRATION, body)

    @kopf.index("batch", "v1", "jobs", registry=registry, id="dbmigrate-view-jobs")
    async def view_job(body: kopf.Body, **_: Any) -> None:
        controller.view.put(Kind.JOB, body)

    @kopf.index("", "v1", "pods", registry=registry, id="dbmigrate-view-pods")
    async def view_pod(body: kopf.Body, **_: Any) -> None:
        controller.view.put(Kind.POD, body)

    @kopf.on.event(c.GROUP, c.VERSION, c.PLURAL, registry=registry, id="dbmigrate-migration")
    async def on_migration(
        type: str | None, body: kopf.Body, name: str, namespace: str | None, **_: Any
    ) -> None:
        metrics.watch_event(c.PLURAL)
        if namespace is None:
            return
        if type == "DELETED":
            controller.view.delete(Kind.MIGRATION, body)
            if controller.view.migration(namespace, name) is None:  # not a namesake re-created since
                controller.forget(namespace, name)
            return
        controller.remember(namespace, name, listed=type is None)
        controller.enqueue(namespace, name)

    # No client-side ``labels=`` filter: the API server selects (watching.configure), so every event
    # kopf receives is one of ours; an event that is not is logged, never reconciled.
    @kopf.on.event("batch", "v1", "jobs", registry=registry, id="dbmigrate-job")
    async def on_job(type: str | None, body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
        _owned_event(controller, Kind.JOB, type, body, name, namespace)

    @kopf.on.event("", "v1", "pods", registry=registry, id="dbmigrate-pod")
    async def on_pod(type: str | None, body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
        _owned_event(controller, Kind.POD, type, body, name, namespace)

    return controller


CONTROLLER = register(kopf.get_default_registry(), Settings.from_env())
