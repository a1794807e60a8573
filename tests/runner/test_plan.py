"""``dbmigrate-runner plan`` against real PostgreSQL: the SQL each pending migration would run,
compared with what the tools' own CLIs print, read-only, without the lock, hashed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pglast
import pytest

from dbmigrate_runner.report import Outcome
from dbmigrate_runner.sqlplan import SqlPlan, from_dict, render_sql
from localcluster.postgres import PostgresServer, lock_held_elsewhere
from tests.runner.conftest import SHOP, SHOP_VERSIONS, Result, Runner
from tests.runner.test_alembic import ALEMBIC_SHOP, BASE, BIO, CASCADE, MERGE, ORDERS

pytestmark = pytest.mark.postgres

BIN = Path(sys.executable).parent


def plan_of(result: Result) -> SqlPlan:
    """The plan document from the ``plan.document`` log line, checked against its own hash."""
    assert result.rc == 0, result.stdout + result.stderr
    docs = result.events("plan.document")
    assert len(docs) == 1
    return from_dict(docs[0]["plan"])


def statements_of(script: str, version_table: str | None = None) -> list[str]:
    """A tool's printed script as statements: without its BEGIN/COMMIT framing, comments and the
    version table's own rows (the plan leaves the tracking table to the tool)."""
    out = []
    for raw in pglast.parse_sql(script):
        stmt = raw.stmt
        if isinstance(stmt, pglast.ast.TransactionStmt):
            continue
        relation = getattr(stmt, "relation", None)
        if version_table and relation is not None and relation.relname == version_table:
            continue
        out.append(
            pglast.prettify(script[raw.stmt_location : raw.stmt_location + (raw.stmt_len or len(script))])
        )
    return out


def normalized(statements: list[str]) -> list[str]:
    return [pglast.prettify(s) for s in statements]


def test_fresh_database_plan_lists_every_migration_and_writes_nothing(shop: Runner, tool: str) -> None:
    result = shop("plan")
    plan = plan_of(result)
    assert plan.pending == [f"models:{v}" for v in SHOP_VERSIONS[tool]]
    assert plan.target == f"models:{SHOP_VERSIONS[tool][-1]}"
    assert all(step.statements and not step.opaque for step in plan.steps)
    assert plan.findings == []
    # The report (termination message) carries the summary with the same hash.
    summary = result.report.plan
    assert summary is not None
    assert summary.hash == plan.hash
    assert len(plan.hash) == 64
    assert summary.pending == plan.pending
    assert summary.pending_count == 3
    assert summary.statements == plan.statement_count
    # Read-only: not even the tracking table exists afterwards.
    assert shop.tables() == []


def test_plan_follows_the_database_and_is_stable(shop: Runner, tool: str) -> None:
    versions = SHOP_VERSIONS[tool]
    first = plan_of(shop("plan"))
    assert plan_of(shop("plan")).hash == first.hash  # same image, same database: same hash
    assert shop("upgrade", "--target", f"models:{versions[1]}").rc == 0
    rest = plan_of(shop("plan"))
    assert rest.pending == [f"models:{versions[2]}"]
    assert rest.hash != first.hash
    assert rest.steps[0].statements == first.steps[2].statements
    assert shop("upgrade").rc == 0
    done = shop("plan")
    assert plan_of(done).steps == []
    assert plan_of(done).target is None
    assert done.report.plan is not None
    assert done.report.plan.pending_count == 0


def test_plan_target_stops_there(shop: Runner, tool: str) -> None:
    versions = SHOP_VERSIONS[tool]
    plan = plan_of(shop("plan", "--target", f"models:{versions[1]}"))
    assert plan.pending == [f"models:{v}" for v in versions[:2]]


def test_plan_needs_no_lock(shop: Runner) -> None:
    with lock_held_elsewhere(shop.postgres, shop.database):
        result = shop("plan", DBMIGRATE_LOCK_TIMEOUT="1")
    assert plan_of(result).pending


def test_tortoise_sql_matches_tortoise_sqlmigrate(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    shop = Runner(postgres, database, SHOP, tmp_path, "tortoise")
    plan = plan_of(shop("plan"))
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": shop.postgres.url(shop.database)}
    for step in plan.steps:
        app, name = step.migration.split(":")
        printed = subprocess.run(
            [str(BIN / "tortoise"), "sqlmigrate", app, name],
            cwd=shop.cwd,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert statements_of(printed) == normalized(step.statements), step.migration


def test_aerich_sql_is_what_upgrade_returns(postgres: PostgresServer, database: str, tmp_path: Path) -> None:
    """aerich's CLI prints no SQL; its ``upgrade()`` is the source ``aerich upgrade`` executes."""
    shop = Runner(postgres, database, SHOP, tmp_path, "aerich")
    plan = plan_of(shop("plan"))
    code = (
        "import asyncio, sys\n"
        "from aerich.utils import import_py_file\n"
        "print(asyncio.run(import_py_file(sys.argv[1]).upgrade(None)))\n"
    )
    for step in plan.steps:
        path = shop.cwd / "migrations" / "models" / f"{step.migration.split(':')[1]}.py"
        printed = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
        ).stdout
        assert statements_of(printed) == normalized(step.statements), step.migration


def test_plan_sql_builds_the_same_schema_as_the_upgrade(
    postgres: PostgresServer, shop: Runner, tmp_path: Path
) -> None:
    """The plan's SQL, run by psql on another database, gives the schema the tool's upgrade gives."""
    plan = plan_of(shop("plan"))
    other = postgres.create_database()
    postgres.psql(other, "\n".join(s + ";" for step in plan.steps for s in step.statements))
    assert shop("upgrade").rc == 0
    columns = (
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name NOT IN ('aerich', 'tortoise_migrations') ORDER BY 1, 2"
    )
    assert postgres.psql(other, columns) == postgres.psql(shop.database, columns)


AERICH_DESTRUCTIVE = '''
from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "product" DROP COLUMN "description";
        ALTER TABLE "customer" ALTER COLUMN "name" TYPE VARCHAR(20);
        ALTER TABLE "customer" ADD "age" INT NOT NULL;
        ALTER TABLE "review" ADD "score" INT NOT NULL;
        DELETE FROM "order";"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return ""
'''

AERICH_DATA = """
from tortoise import BaseDBAsyncClient


async def upgrade(db: BaseDBAsyncClient) -> str:
    await db.execute_query("SELECT count(*) FROM customer")
    return ""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return ""
"""

AERICH_WRITES = """
from tortoise import BaseDBAsyncClient


async def upgrade(db: BaseDBAsyncClient) -> str:
    await db.execute_query("INSERT INTO customer (name, email) VALUES ('x', 'x@example.com')")
    return ""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return ""
"""

TORTOISE_DESTRUCTIVE = """
from tortoise import migrations
from tortoise.migrations import operations as ops


async def fill(apps, schema_editor):
    pass


class Migration(migrations.Migration):
    dependencies = [('models', '0003_add_bio_and_reviews')]

    operations = [
        ops.RemoveField(model_name='Product', name='description'),
        ops.RunPython(fill),
    ]
"""


def test_destructive_changes_are_found_and_python_is_marked(shop_copy: Runner, tool: str) -> None:
    assert shop_copy("upgrade").rc == 0
    shop_copy.postgres.psql(shop_copy.database, "INSERT INTO customer (name, email) VALUES ('a', 'a@x')")
    if tool == "aerich":
        where = shop_copy.cwd / "migrations" / "models"
        (where / "3_20261201000000_destructive.py").write_text(AERICH_DESTRUCTIVE)
        (where / "4_20261201000001_data.py").write_text(AERICH_DATA)
        (where / "5_20261201000002_writes.py").write_text(AERICH_WRITES)
    else:
        (shop_copy.cwd / "shop" / "migrations" / "0004_destructive.py").write_text(TORTOISE_DESTRUCTIVE)
    result = shop_copy("plan")
    plan = plan_of(result)
    found = {(f.migration.split(":")[1], f.statement, f.kind, f.target) for f in plan.findings}
    if tool == "aerich":
        name = "3_20261201000000_destructive"
        assert found == {
            (name, 0, "DropColumn", "product.description"),
            (name, 1, "AlterColumnType", "customer.name"),
            (name, 2, "AddNotNull", "customer.age"),  # customer holds a row; review is empty: no finding
            (name, 4, "DeleteAll", "order"),
        }
        data = plan.steps[1]
        assert data.migration == "models:4_20261201000001_data"
        assert data.statements == []
        assert "execute_query" in data.opaque[0]
        writes = plan.steps[2]
        assert writes.statements == []
        assert "read-only transaction" in writes.opaque[0]
    else:
        assert found == {("0004_destructive", 0, "DropColumn", "product.description")}
        assert plan.steps[0].opaque
        assert "Run Python code" in plan.steps[0].opaque[0]
    summary = result.report.plan
    assert summary is not None
    assert summary.findings_count == len(plan.findings)
    assert {(f.migration, f.statement, f.kind) for f in summary.findings} == {
        (f.migration, f.statement, f.kind) for f in plan.findings
    }
    assert summary.opaque == [s.migration for s in plan.steps if s.opaque]
    # Nothing was run or written: the data migration's insert did not land, the column is still there.
    assert shop_copy.postgres.psql(shop_copy.database, "SELECT count(*) FROM customer") == "1"
    assert "description" in shop_copy.columns("product")


def test_plan_files_for_people(shop: Runner, tmp_path: Path) -> None:
    result = shop(
        "plan", "--plan-file", str(tmp_path / "plan.json"), "--sql-file", str(tmp_path / "plan.sql")
    )
    plan = plan_of(result)
    assert from_dict(json.loads((tmp_path / "plan.json").read_text())).hash == plan.hash
    sql = (tmp_path / "plan.sql").read_text()
    assert sql.startswith(f"-- dbmigrate plan {plan.hash}")
    assert all(f"-- migration {m}" in sql for m in plan.pending)


# --- Alembic ---------------------------------------------------------------------------------


@pytest.fixture
def alembic_shop(postgres: PostgresServer, database: str, tmp_path: Path) -> Runner:
    return Runner(postgres, database, ALEMBIC_SHOP, tmp_path, "alembic")


def alembic_sql(runner: Runner, ini: str, revisions: str) -> str:
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": runner.postgres.url(runner.database)}
    return subprocess.run(
        [str(BIN / "alembic"), "-c", ini, "upgrade", revisions, "--sql"],
        cwd=runner.cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.parametrize(
    ("ini", "table"), [("alembic.ini", "shop_alembic_version"), ("alembic-async.ini", "alembic_version")]
)
def test_alembic_plan_matches_offline_sql(alembic_shop: Runner, ini: str, table: str) -> None:
    result = alembic_shop("plan", "--config", ini)
    plan = plan_of(result)
    assert sorted(plan.pending) == sorted(f"alembic:{r}" for r in (BASE, ORDERS, CASCADE, BIO, MERGE))
    assert plan.target == f"alembic:{MERGE}"
    ours = [s for step in plan.steps for s in step.statements]
    assert normalized(ours) == statements_of(alembic_sql(alembic_shop, ini, "head"), table)
    assert alembic_shop.tables() == []  # read-only

    assert alembic_shop("upgrade", "--config", ini, "--target", ORDERS).rc == 0
    rest = plan_of(alembic_shop("plan", "--config", ini))
    assert sorted(rest.pending) == sorted(f"alembic:{r}" for r in (CASCADE, BIO, MERGE))
    ours = [s for step in rest.steps for s in step.statements]
    assert normalized(ours) == statements_of(alembic_sql(alembic_shop, ini, f"{ORDERS}:head"), table)


def test_alembic_destructive_revision(alembic_shop: Runner, tmp_path: Path) -> None:
    import shutil

    project = tmp_path / "alembic-shop"
    shutil.copytree(ALEMBIC_SHOP, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "migrations" / "versions" / "e1_drop_bio.py").write_text(
        f'''"""drop bio"""
from alembic import op

revision = "e1f2a3b4c5d6"
down_revision = "{MERGE}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("users", "bio")
    op.execute("TRUNCATE orders")


def downgrade() -> None:
    pass
'''
    )
    runner = Runner(alembic_shop.postgres, alembic_shop.database, project, tmp_path, "alembic")
    assert runner("upgrade", "--target", MERGE).rc == 0
    plan = plan_of(runner("plan"))
    assert plan.pending == ["alembic:e1f2a3b4c5d6"]
    assert [(f.statement, f.kind, f.target) for f in plan.findings] == [
        (0, "DropColumn", "users.bio"),
        (1, "Truncate", "orders"),
    ]


# --- an approved run applies exactly the approved plan -----------------------------------------


def test_expect_plan_applies_exactly_the_approved_plan(shop: Runner, tool: str) -> None:
    versions = SHOP_VERSIONS[tool]
    approved = plan_of(shop("plan"))
    # Someone else moves the database on after the review: the approval is stale, nothing runs.
    assert shop("upgrade", "--target", f"models:{versions[0]}").rc == 0
    stale = shop("upgrade", "--expect-plan", approved.hash)
    assert stale.rc == Outcome.CONFIG_ERROR.exit_code
    assert stale.report.error is not None
    assert stale.report.error.kind == "PlanChanged"
    assert approved.hash in stale.report.error.message
    assert shop.applied() == versions[:1]
    # The current plan, approved, runs.
    current = plan_of(shop("plan"))
    ok = shop("upgrade", "--expect-plan", current.hash)
    assert ok.rc == 0, ok.stdout
    assert ok.report.applied == current.pending
    assert ok.events("plan.approved")


def test_expect_plan_alembic(alembic_shop: Runner) -> None:
    approved = plan_of(alembic_shop("plan"))
    assert alembic_shop("upgrade", "--expect-plan", "0" * 64).rc == Outcome.CONFIG_ERROR.exit_code
    assert alembic_shop.tables() == []
    ok = alembic_shop("upgrade", "--expect-plan", approved.hash)
    assert ok.rc == 0, ok.stdout
    assert sorted(ok.report.applied) == sorted(approved.pending)


# --- the hash covers the code, not only the SQL ------------------------------------------------

AERICH_QUERIES = """
from tortoise import BaseDBAsyncClient


async def upgrade(db: BaseDBAsyncClient) -> str:
    await db.execute_query("SELECT count(*) FROM {table}")
    return 'CREATE INDEX "idx_customer_name" ON "customer" ("name")'


async def downgrade(db: BaseDBAsyncClient) -> str:
    return 'DROP INDEX "idx_customer_name"'
"""

TORTOISE_RUN_PYTHON = """
from tortoise import migrations
from tortoise.migrations import operations as ops


async def fill(apps, schema_editor):
    await schema_editor.client.execute_query("SELECT count(*) FROM {table}")


class Migration(migrations.Migration):
    dependencies = [('models', '0003_add_bio_and_reviews')]

    operations = [ops.RunPython(fill)]
"""

ALEMBIC_ONLINE_ONLY = '''"""nick, filled online only"""
import sqlalchemy as sa
from alembic import context, op

revision = "f1e2d3c4b5a6"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("nick", sa.String(20)))
    if not context.is_offline_mode():
        op.execute("UPDATE users SET nick = '{nick}'")


def downgrade() -> None:
    op.drop_column("users", "nick")
'''


def _changed_code_same_sql(runner: Runner, tool: str, variant: str) -> Path:
    """Write (or rewrite) one pending migration whose SQL stays the same while its code changes."""
    if tool == "aerich":
        path = runner.cwd / "migrations" / "models" / "3_20261201000000_queries.py"
        path.write_text(AERICH_QUERIES.format(table="customer" if variant == "a" else "product"))
    elif tool == "tortoise":
        path = runner.cwd / "shop" / "migrations" / "0004_run_python.py"
        path.write_text(TORTOISE_RUN_PYTHON.format(table="customer" if variant == "a" else "product"))
    else:
        path = runner.cwd / "migrations" / "versions" / "f1_nick.py"
        path.write_text(ALEMBIC_ONLINE_ONLY.format(down=MERGE, nick=variant))
    return path


@pytest.fixture(params=["aerich", "tortoise", "alembic"])
def any_shop(
    postgres: PostgresServer, database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Runner:
    """A private copy of the example app of each tool."""
    import shutil

    tool = str(request.param)
    source = ALEMBIC_SHOP if tool == "alembic" else SHOP
    project = tmp_path / "project"
    shutil.copytree(source, project, ignore=shutil.ignore_patterns("__pycache__"))
    return Runner(postgres, database, project, tmp_path, tool)


def test_same_sql_other_code_is_another_plan_and_the_old_approval_runs_nothing(any_shop: Runner) -> None:
    """A RunPython step, an aerich upgrade() that queries, an Alembic revision that does more online
    than its offline SQL shows: a new image with the same SQL but other Python code has another
    hash, and an approval of the old hash applies nothing."""
    runner, tool = any_shop, any_shop.tool
    assert runner("upgrade").rc == 0

    def state() -> list[str]:
        return runner.columns("users") if tool == "alembic" else runner.applied()

    before = state()
    path = _changed_code_same_sql(runner, tool, "a")
    reviewed = plan_of(runner("plan"))
    (step,) = reviewed.steps
    assert step.source == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"-- file {step.source}" in render_sql(reviewed)

    _changed_code_same_sql(runner, tool, "b")  # the next image: same SQL, other code
    changed = plan_of(runner("plan"))
    assert [(s.migration, s.statements, s.opaque) for s in changed.steps] == [
        (s.migration, s.statements, s.opaque) for s in reviewed.steps
    ]
    assert changed.hash != reviewed.hash

    stale = runner("upgrade", "--expect-plan", reviewed.hash)
    assert stale.rc == Outcome.CONFIG_ERROR.exit_code, stale.stdout
    assert stale.report.error is not None
    assert stale.report.error.kind == "PlanChanged"
    assert state() == before  # nothing of the unreviewed code ran
    ok = runner("upgrade", "--expect-plan", changed.hash)
    assert ok.rc == 0, ok.stdout
    assert ok.report.applied == changed.pending
