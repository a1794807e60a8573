"""Test-only: ``dbmigrate-runner`` with a fault injected. Never part of the migrations image.

Run as a script (``python runner_with_faults.py upgrade ...``); the fault is chosen by environment:

``FAULT_KILL_BEFORE_RECORD=app:version``
    SIGKILL the process the moment the tracking row of that migration is about to be written
    (``INSERT INTO "aerich"`` / ``INSERT INTO "tortoise_migrations"``), at the asyncpg level, so it
    holds whatever code path writes the row. If the row is written inside the migration's
    transaction, nothing of that migration may survive; if it is written after the commit (upstream
    ``tortoise migrate``), the schema change survives without its row.

``FAULT_PAUSE_BEFORE=app:version`` with ``FAULT_PAUSE_DIR=dir``
    Stop the whole process (event loop included) when the runner logs that it starts applying that
    migration, i.e. after the previous one committed: write ``dir/paused``, wait for ``dir/resume``.
    The test does something to the database meanwhile (restarts it).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg.connection

_INSERT = re.compile(r'INSERT\s+INTO\s+"?(aerich|tortoise_migrations)"?', re.IGNORECASE)
_METHODS = ("execute", "executemany", "fetch", "fetchrow", "fetchval")


def _is_record_of(query: object, args: tuple[Any, ...], app: str, version: str) -> bool:
    if not isinstance(query, str) or not _INSERT.search(query):
        return False
    values = [str(v) for arg in args for v in (arg if isinstance(arg, list | tuple) else [arg])]
    return app in values and (version in values or f"{version}.py" in values)


def _wrap(method: Callable[..., Any], app: str, version: str) -> Callable[..., Any]:
    async def wrapper(self: Any, query: object = None, *args: Any, **kwargs: Any) -> Any:
        if _is_record_of(query, args, app, version):
            os.kill(os.getpid(), signal.SIGKILL)
        return await method(self, query, *args, **kwargs)

    return wrapper


def install_kill_before_record(spec: str) -> None:
    app, version = spec.split(":", 1)
    for name in _METHODS:
        original = getattr(asyncpg.connection.Connection, name)
        setattr(asyncpg.connection.Connection, name, _wrap(original, app, version))


def install_pause_before(label: str, folder: Path) -> None:
    from dbmigrate_runner.log import JsonLogger

    original = JsonLogger.info

    def info(self: JsonLogger, event: str, msg: str, **fields: Any) -> None:
        original(self, event, msg, **fields)
        if event == "migration.apply" and fields.get("migration") == label:
            (folder / "paused").write_text("")
            while not (folder / "resume").exists():
                time.sleep(0.05)

    JsonLogger.info = info  # type: ignore[method-assign]


def main() -> int:
    if spec := os.environ.get("FAULT_KILL_BEFORE_RECORD"):
        install_kill_before_record(spec)
    if label := os.environ.get("FAULT_PAUSE_BEFORE"):
        install_pause_before(label, Path(os.environ["FAULT_PAUSE_DIR"]))
    from dbmigrate_runner.cli import main as runner_main

    return runner_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
