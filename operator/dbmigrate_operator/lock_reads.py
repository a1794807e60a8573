"""The I/O half of showing a lock wait live: reading the running migration Pods' log tails.

Why apart from the controller: which Pods to read and when is pure (lockwatch.py); what remains is
the read itself and the memory of the last answer per Pod, so that a read happens at most once per
point of lockwatch's grid (the first after the first lock timeout could have been logged, then every
``lock_watch_seconds``) however many passes run in between. A failed read (no kubelet route, no RBAC)
leaves the last answer standing. Only the runner's masked log is ever read.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from dbmigrate_operator import constants as c
from dbmigrate_operator import lockwatch
from dbmigrate_operator.kube import Kube
from dbmigrate_operator.rawapi import describe
from dbmigrate_runner.lockwait_line import LockWait, latest_lock_wait

logger = logging.getLogger("dbmigrate_operator")
Key = tuple[str, str]


class LockReads:
    def __init__(self, every_seconds: float) -> None:
        self.every_seconds = every_seconds
        # Per CR: pod uid → (Job uid, the grid point read, the lock wait the log showed then).
        self._last: dict[Key, dict[str, tuple[str, datetime, LockWait | None]]] = {}

    async def waits(
        self, kube: Kube, key: Key, jobs: list[dict[str, Any]], pods: list[dict[str, Any]], now: datetime
    ) -> dict[str, LockWait]:
        """The lock wait each running Job's runner is in, by Job uid."""
        if self.every_seconds <= 0:
            return {}
        known = self._last.get(key, {})
        done = {uid: due for uid, (_, due, _) in known.items()}
        fresh: dict[str, tuple[str, datetime, LockWait | None]] = {}
        for job_uid, read in lockwatch.reads(jobs, pods, now, self.every_seconds, done):
            wait = known[read.uid][2] if read.uid in known else None
            try:
                text = await asyncio.to_thread(
                    kube.read_pod_log,
                    read.namespace,
                    read.pod,
                    c.CONTAINER_NAME,
                    lockwatch.TAIL_LINES,
                    lockwatch.LIMIT_BYTES,
                )
                wait = latest_lock_wait(text)
            except ApiException as exc:
                logger.info("cannot read the log of pod %s/%s: %s", read.namespace, read.pod, describe(exc))
            fresh[read.uid] = (job_uid, read.due, wait)
        running = {
            str((pod.get("metadata") or {}).get("uid"))
            for pod in pods
            if lockwatch.running_since(pod) is not None
        }
        kept = {uid: entry for uid, entry in {**known, **fresh}.items() if uid in running}
        if kept:
            self._last[key] = kept
        else:
            self._last.pop(key, None)
        return {job_uid: wait for job_uid, _, wait in kept.values() if wait is not None}

    def forget(self, key: Key) -> None:
        self._last.pop(key, None)
