"""Regenerate the example's migrations with the tools themselves (aerich and `tortoise makemigrations`).

Replays three model stages against a throwaway PostgreSQL in a temp copy of the app, then copies
the generated files into ``migrations/`` (aerich) and ``shop/migrations/`` (tortoise) and writes
the final ``shop/models.py``. Run from the repository root:

    .venv/bin/python examples/shop/regenerate_migrations.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from localcluster.postgres import running_postgres  # noqa: E402

HEADER = '''"""Models of the example shop (stage {stage} of 3 in regenerate_migrations.py)."""

from tortoise import fields
from tortoise.models import Model

'''
CUSTOMER = """
class Customer(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100)
    email = fields.CharField(max_length=255, unique=True)
{extra}
"""
PRODUCT = """
class Product(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200)
    price = fields.DecimalField(max_digits=10, decimal_places=2)
{extra}
"""
ORDER = """
class Order(Model):
    id = fields.IntField(primary_key=True)
    customer = fields.ForeignKeyField("models.Customer", related_name="orders")
    created_at = fields.DatetimeField(auto_now_add=True)
    total = fields.DecimalField(max_digits=12, decimal_places=2, default=0)
"""
REVIEW = """
class Review(Model):
    id = fields.IntField(primary_key=True)
    product = fields.ForeignKeyField("models.Product", related_name="reviews")
    customer = fields.ForeignKeyField("models.Customer", related_name="reviews")
    rating = fields.SmallIntField()
    body = fields.TextField(default="")
"""


def models(stage: int) -> str:
    text = HEADER.format(stage=stage)
    text += CUSTOMER.format(extra="    bio = fields.TextField(null=True)\n" if stage >= 3 else "")
    text += PRODUCT.format(extra="    description = fields.TextField(null=True)\n" if stage >= 2 else "")
    if stage >= 2:
        text += ORDER
    if stage >= 3:
        text += REVIEW
    return text.rstrip() + "\n"


STAGE_NAMES = {1: "init", 2: "add_description_and_orders", 3: "add_bio_and_reviews"}


def main() -> None:
    bindir = Path(sys.executable).parent
    with running_postgres() as pg, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "shop").mkdir()
        for name in ("shop/__init__.py", "shop/config.py", "pyproject.toml"):
            shutil.copy(HERE / name, work / name)
        dbs = {"aerich": pg.create_database(), "tortoise": pg.create_database()}

        def run(tool: str, *args: str) -> None:
            env = {
                **os.environ,
                "PYTHONPATH": str(work),
                "DATABASE_URL": pg.url(dbs[tool]),
                "AERICH_NO_TORTOISE_V1_WARNING": "1",
            }
            subprocess.run([str(bindir / tool), *args], cwd=work, env=env, check=True)

        for stage in (1, 2, 3):
            (work / "shop" / "models.py").write_text(models(stage))
            if stage == 1:
                run("aerich", "init-db")
            else:
                run("aerich", "migrate", "--name", STAGE_NAMES[stage])
                run("aerich", "upgrade")
            run("tortoise", "makemigrations", "--name", STAGE_NAMES[stage])
            run("tortoise", "migrate")

        for src, dst in (
            (work / "migrations", HERE / "migrations"),
            (work / "shop" / "migrations", HERE / "shop" / "migrations"),
        ):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        (HERE / "shop" / "models.py").write_text(models(3))
        print(f"wrote {HERE / 'migrations'} and {HERE / 'shop' / 'migrations'}")


if __name__ == "__main__":
    main()
