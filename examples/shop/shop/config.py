"""Tortoise configs for the example app; the database URL comes from the environment.

``TORTOISE_ORM`` is for aerich (it registers ``aerich.models``), ``TORTOISE_ORM_BUILTIN`` for
Tortoise's built-in migrations (package ``shop.migrations``). No tortoise import here: the
runner loads this module on its lean no-op path.
"""

import os

DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@localhost:5432/shop")

TORTOISE_ORM = {
    "connections": {"default": DATABASE_URL},
    "apps": {"models": {"models": ["shop.models", "aerich.models"], "default_connection": "default"}},
}

TORTOISE_ORM_BUILTIN = {
    "connections": {"default": DATABASE_URL},
    "apps": {
        "models": {
            "models": ["shop.models"],
            "default_connection": "default",
            "migrations": "shop.migrations",
        }
    },
}
