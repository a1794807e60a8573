"""Generate a throwaway Tortoise project with N trivial migrations, for either tool.

Used by the runner's 500-migration report test and by the benchmarks (N = 1, 20, 200). Each
migration creates one small table, so applying and reverting is real DDL. Layout under ``root``
(run the runner with ``cwd=root``; it reads ``pyproject.toml`` there)::

    pyproject.toml                 [tool.aerich] and [tool.tortoise] sections
    genapp/config.py               TORTOISE_ORM (aerich) / TORTOISE_ORM_BUILTIN (tortoise), URL from env
    genapp/models.py               one model
    migrations/models/<i>_<ts>_step_<i>.py      aerich
    genapp/migrations/<i+1:04d>_step_<i>.py     tortoise
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PYPROJECT = """\
[tool.aerich]
tortoise_orm = "genapp.config.TORTOISE_ORM"
location = "./migrations"

[tool.tortoise]
tortoise_orm = "genapp.config.TORTOISE_ORM_BUILTIN"
"""
CONFIG = """\
import os

URL = os.environ.get("DATABASE_URL", "postgres://localhost/gen")
TORTOISE_ORM = {
    "connections": {"default": URL},
    "apps": {"models": {"models": ["genapp.models", "aerich.models"], "default_connection": "default"}},
}
TORTOISE_ORM_BUILTIN = {
    "connections": {"default": URL},
    "apps": {"models": {"models": ["genapp.models"], "default_connection": "default",
                        "migrations": "genapp.migrations"}},
}
"""
MODELS = """\
from tortoise import fields
from tortoise.models import Model


class Item(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100)
"""
AERICH_FILE = '''\
from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """{up}"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """{down}"""
'''
TORTOISE_FILE = """\
from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = {deps!r}
    initial = {initial!r}
    operations = [ops.RunSQL({up!r}, reverse_sql={down!r})]
"""


@dataclass(frozen=True)
class GeneratedProject:
    root: Path
    tool: str
    versions: list[str]  # oldest first, names as the runner reports them


def _sql(i: int) -> tuple[str, str]:
    table = "item" if i == 0 else f"gen_{i}"
    cols = (
        '"id" SERIAL NOT NULL PRIMARY KEY, "name" VARCHAR(100) NOT NULL'
        if i == 0
        else '"id" SERIAL PRIMARY KEY'
    )
    return f'CREATE TABLE "{table}" ({cols});', f'DROP TABLE "{table}";'


def version_name(tool: str, i: int) -> str:
    return f"{i}_{20260101000000 + i}_step_{i}" if tool == "aerich" else f"{i + 1:04d}_step_{i}"


def generate(root: Path, n: int, tool: str, *, start: int = 0) -> GeneratedProject:
    """Write (or extend, with ``start``) the project; returns every version now on disk."""
    if tool not in ("aerich", "tortoise"):
        raise ValueError(tool)
    pkg = root / "genapp"
    pkg.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text(CONFIG)
    (pkg / "models.py").write_text(MODELS)
    directory = root / "migrations" / "models" if tool == "aerich" else pkg / "migrations"
    directory.mkdir(parents=True, exist_ok=True)
    if tool == "tortoise":
        (directory / "__init__.py").write_text("")
    for i in range(start, start + n):
        up, down = _sql(i)
        name = version_name(tool, i)
        if tool == "aerich":
            text = AERICH_FILE.format(up=up, down=down)
        else:
            deps = [("models", version_name(tool, i - 1))] if i else []
            text = TORTOISE_FILE.format(deps=deps, initial=i == 0, up=up, down=down)
        (directory / f"{name}.py").write_text(text)
    return GeneratedProject(root=root, tool=tool, versions=[version_name(tool, i) for i in range(start + n)])
