"""Which bytes of the image a plan covers besides its SQL: each pending migration's own file.

A plan's SQL says what a migration does only when all of it is SQL. A Tortoise ``RunPython``, an
aerich ``upgrade()`` that queries, an Alembic revision that behaves differently online than when
rendered offline: their effect is Python code, and the same SQL can come with other code. So every
pending migration's file is hashed into the plan (the file as it lies in the image, byte for byte),
and a new image whose migration files differ in one byte has another plan hash, even with the
same SQL. Code the migration file imports from elsewhere is not covered here; the operator binds
the approved run to the image digest the plan ran from for that (docs/reviewing-changes.md).

A migration whose file cannot be found fails the plan: a plan that cannot cover a migration's code
must not be approvable.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from dbmigrate_runner.errors import ConfigError


def of_file(path: str | Path, migration: str) -> str:
    """``sha256:<hex>`` of the file's bytes (``migration`` names it in the error)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the file of migration {migration} ({path}): {exc.strerror or exc}; "
            "a plan covers each pending migration's file"
        ) from exc
    return "sha256:" + hashlib.sha256(data).hexdigest()


def of_module(module: Any, migration: str) -> str:
    """The digest of the file a migration module was loaded from."""
    path = getattr(module, "__file__", None)
    if not path:
        raise ConfigError(
            f"migration {migration} was not loaded from a file; a plan covers each pending migration's file"
        )
    return of_file(path, migration)


def of_module_name(name: str, migration: str) -> str:
    """The digest of an imported module's file, by its dotted name."""
    module = sys.modules.get(name)
    if module is None:
        raise ConfigError(f"migration {migration}: module {name} is not loaded; cannot hash its file")
    return of_module(module, migration)
