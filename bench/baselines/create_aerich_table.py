"""Baseline helper (init_container.sh): create aerich's tracking table the way the seeds do.

Initialises Tortoise with the app's config (which imports the models) and creates the ``aerich``
table if it is missing, so a following ``aerich upgrade`` works on a fresh database.
"""

from __future__ import annotations

import importlib
import sys

from tortoise import Tortoise, run_async

DDL = (
    'CREATE TABLE IF NOT EXISTS "aerich" ("id" SERIAL NOT NULL PRIMARY KEY, '
    '"version" VARCHAR(255) NOT NULL, "app" VARCHAR(100) NOT NULL, "content" JSONB NOT NULL)'
)


async def main(config_path: str) -> None:
    module, _, attr = config_path.rpartition(".")
    config = getattr(importlib.import_module(module), attr)
    await Tortoise.init(config=config)
    await Tortoise.get_connection("default").execute_script(DDL)


if __name__ == "__main__":
    run_async(main(sys.argv[1]))
