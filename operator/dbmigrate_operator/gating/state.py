"""Gating's per-run state, kept in kopf's operator memo rather than in module globals.

Every operator run (and every in-process test run) then starts clean, and the handlers of all
gating modules reach the same API client and releaser.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import kubernetes.client

    from dbmigrate_operator.gating.kube import GatingApi
    from dbmigrate_operator.gating.release import Releaser
    from dbmigrate_operator.gating.server import WebhookSettings

MEMO_KEY = "dbmigrate_gating"


@dataclasses.dataclass
class Runtime:
    api: GatingApi
    releaser: Releaser
    settings: WebhookSettings
    api_client: kubernetes.client.ApiClient | None = None
    sweep_task: asyncio.Task[None] | None = None


def runtime_of(memo: Mapping[str, Any] | None) -> Runtime | None:
    value = (memo or {}).get(MEMO_KEY)
    return value if isinstance(value, Runtime) else None
