"""tool: alembic against a real PostgreSQL, with examples/alembic-shop (sync env.py with the shared-connection
recipe and a custom version table; async env.py from Alembic's asyncio template)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from dbmigrate_runner.report import MAX_BYTES, Outcome
from localcluster.postgres import PostgresServer, lock_held_elsewhere
from tests.runner.conftest import REPO, Runner, finish, start

pytestmark = pytest.mark.postgres

ALEMBIC_SHOP = REPO / "examples" / "alembic-shop"
# create users; add orders, then their FK ON DELETE CASCADE; add user bio (a branch); the merge
BASE, ORDERS, CASCADE, BIO, MERGE = (
    "a1b2c3d4e5f6",
    "b7e1f0c2a9d3",
    "9a2d1282dd17",
    "c4d5e6f7a8b9",
    "d0e1f2a3b4c5",
)
ALL = (BASE, ORDERS, CASCADE, BIO, MERGE)
VARIANTS = {
    "sync": ("alembic.ini", "shop_alembic_version"),
    "async": ("alembic-async.ini", "alembic_version"),
}


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def alembic_shop(postgres: PostgresServer, database: str, tmp_path: Path) -> Runner:
    return Runner(postgres, database, ALEMBIC_SHOP, tmp_path, "alembic")


def heads(runner: Runner, table: str) -> list[str]:
    if runner.postgres.psql(runner.database, f"SELECT to_regclass('{table}') IS NULL") == "t":
        return []
    return sorted(runner.postgres.psql(runner.database, f"SELECT version_num FROM {table}").split())


def test_fresh_then_noop(alembic_shop: Runner, variant: str) -> None:
    ini, table = VARIANTS[variant]
    first = alembic_shop("upgrade", "--config", ini)
    assert first.rc == 0, first.stdout + first.stderr
    report = first.report
    state = report.apps["alembic"]
    assert state.versions[0] == BASE
    assert state.versions[-1] == MERGE
    assert sorted(state.versions) == sorted(ALL)
    assert report.current_version() == f"alembic:{MERGE}"
    assert sorted(report.applied) == sorted(f"alembic:{r}" for r in ALL)
    assert heads(alembic_shop, table) == [MERGE]
    assert "orders" in alembic_shop.tables()
    assert "bio" in alembic_shop.columns("users")

    again = alembic_shop("upgrade", "--config", ini)
    assert again.rc == 0, again.stdout
    assert again.report.applied == []
    assert again.report.apps["alembic"].count == len(ALL)
    assert again.events("plan.noop")


def test_noop_reads_the_source_without_alembic_sqlalchemy_or_env_py(
    alembic_shop: Runner, variant: str
) -> None:
    ini, _table = VARIANTS[variant]
    first = alembic_shop("upgrade", "--config", ini)
    assert first.rc == 0, first.stdout + first.stderr
    assert first.events("plan")  # work to do: Alembic's own path
    report = alembic_shop.report_path()
    proc = start(
        ["upgrade", "--config", ini],
        alembic_shop.env(report),
        alembic_shop.cwd,
        python_flags=("-X", "importtime"),
    )
    again = finish(proc, report, alembic_shop.postgres.password)
    assert again.rc == 0, again.stdout + again.stderr
    (noop,) = again.events("plan.noop")
    assert noop["read"] == "source"
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in again.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "asyncpg" in imported
    assert not imported & {"alembic", "sqlalchemy", "psycopg"}
    assert again.report.apps == first.report.apps  # the same history, in the same order
    assert again.report.applied == []


def test_target_prefix_then_head(alembic_shop: Runner) -> None:
    result = alembic_shop("upgrade", "--target", f"alembic:{ORDERS[:4]}")  # as status writes it
    assert result.rc == 0, result.stdout + result.stderr
    assert result.report.apps["alembic"].versions == [BASE, ORDERS]
    assert heads(alembic_shop, "shop_alembic_version") == [ORDERS]
    below = alembic_shop("upgrade", "--target", BASE)
    assert below.rc == 6, below.stdout
    assert below.report.outcome.value == "DowngradeRefused"
    rest = alembic_shop("upgrade")
    assert rest.rc == 0
    assert sorted(rest.report.applied) == sorted(f"alembic:{r}" for r in (CASCADE, BIO, MERGE))


def test_downgrade(alembic_shop: Runner) -> None:
    assert alembic_shop("upgrade").rc == 0
    down = alembic_shop("downgrade", "--target", BASE)
    assert down.rc == 0, down.stdout + down.stderr
    assert down.report.apps["alembic"].versions == [BASE]
    assert sorted(down.report.applied) == sorted(f"alembic:{r}" for r in (ORDERS, CASCADE, BIO, MERGE))
    assert "orders" not in alembic_shop.tables()


def test_multiple_heads(postgres: PostgresServer, database: str, tmp_path: Path) -> None:
    project = shutil.copytree(ALEMBIC_SHOP, tmp_path / "shop", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "migrations" / "versions" / f"{MERGE}_merge_orders_and_bio.py").unlink()
    runner = Runner(postgres, database, project, tmp_path, "alembic")
    failed = runner("upgrade")
    assert failed.rc == 2, failed.stdout
    assert failed.report.error is not None
    assert failed.report.error.message.startswith("MultipleHeads: ")
    assert BIO in failed.report.error.message
    assert CASCADE in failed.report.error.message
    both = runner("upgrade", "--target", "heads")
    assert both.rc == 0, both.stdout + both.stderr
    assert heads(runner, "shop_alembic_version") == sorted([CASCADE, BIO])
    assert sorted(both.report.apps["alembic"].versions) == sorted([BASE, ORDERS, CASCADE, BIO])


def test_concurrent_runners_apply_once(alembic_shop: Runner, variant: str) -> None:
    ini, table = VARIANTS[variant]
    procs = [alembic_shop.start("upgrade", "--config", ini) for _ in range(4)]
    results = [finish(proc, report, alembic_shop.postgres.password) for proc, report in procs]
    assert all(r.rc == 0 for r in results), [r.stdout for r in results]
    applied = [label for r in results for label in r.report.applied]
    assert sorted(applied) == sorted(f"alembic:{r}" for r in ALL)
    assert heads(alembic_shop, table) == [MERGE]


def test_failing_migration_reports_database_error(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    project = shutil.copytree(ALEMBIC_SHOP, tmp_path / "shop", ignore=shutil.ignore_patterns("__pycache__"))
    runner = Runner(postgres, database, project, tmp_path, "alembic")
    postgres.psql(database, "CREATE TABLE orders (id int)")
    failed = runner("upgrade")
    assert failed.rc == 5, failed.stdout + failed.stderr
    assert failed.report.error is not None
    assert failed.report.error.kind == "DuplicateTable"
    assert failed.report.error.migration == f"alembic:{ORDERS}"
    assert postgres.password not in failed.stdout


def test_baseline(alembic_shop: Runner, variant: str) -> None:
    ini, table = VARIANTS[variant]
    pg, db = alembic_shop.postgres, alembic_shop.database
    pg.psql(db, "CREATE TABLE users (id serial PRIMARY KEY, email varchar(200) NOT NULL UNIQUE)")
    plain = alembic_shop("upgrade", "--config", ini)
    assert plain.rc == 5
    assert plain.report.error is not None
    assert "already exists" in plain.report.error.message
    adopted = alembic_shop("upgrade", "--config", ini, "--baseline", BASE)
    assert adopted.rc == 0, adopted.stdout + adopted.stderr
    assert f"alembic:{BASE}" not in adopted.report.applied
    assert sorted(adopted.report.applied) == sorted(f"alembic:{r}" for r in (ORDERS, CASCADE, BIO, MERGE))
    # The same spec later: baseline already recorded, nothing to do.
    again = alembic_shop("upgrade", "--config", ini, "--baseline", BASE)
    assert again.rc == 0
    assert again.report.applied == []
    assert heads(alembic_shop, table) == [MERGE]


def test_baseline_refused_when_history_differs(alembic_shop: Runner) -> None:
    assert alembic_shop("upgrade", "--target", BASE).rc == 0
    refused = alembic_shop("upgrade", "--baseline", ORDERS)
    assert refused.rc == 2, refused.stdout
    assert refused.report.error is not None
    assert refused.report.error.message.startswith("baseline refused: shop_alembic_version already records 1")


def test_long_history_report_carries_an_exact_ancestry(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """600 revisions on top of the shop's merged branches: the report stays within the kubelet's
    bound, lists the newest revisions by their full ids and counts the rest, and what the operator
    makes of it releases listed ancestors only."""
    from dbmigrate_operator import ancestry, identity
    from dbmigrate_operator.gating.requirement import Requirement, evaluate

    project = shutil.copytree(ALEMBIC_SHOP, tmp_path / "shop", ignore=shutil.ignore_patterns("__pycache__"))
    rng = random.Random(13)
    chain = [f"{rng.getrandbits(48):012x}" for _ in range(601)]
    down = MERGE
    for i, rev in enumerate(chain):
        (project / "migrations" / "versions" / f"{rev}_step_{i}.py").write_text(
            f'"""step {i}"""\n\nrevision = "{rev}"\ndown_revision = "{down}"\n'
            "branch_labels = None\ndepends_on = None\n\n\n"
            "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n"
        )
        down = rev
    runner = Runner(postgres, database, project, tmp_path, "alembic")
    result = runner("upgrade", "--target", chain[599])  # the last one stays pending
    assert result.rc == 0, result.stdout + result.stderr
    assert len(result.report_text.encode()) <= MAX_BYTES
    state = result.report.apps["alembic"]
    assert state.heads == [chain[599]] == heads(runner, "shop_alembic_version")
    assert state.count == 605  # the shop's five, then 600
    assert len(state.versions) >= 450
    assert state.omitted == 605 - len(state.versions)
    assert state.versions == chain[600 - len(state.versions) : 600]  # newest kept, ids exact

    status = {
        "currentVersion": f"alembic:{chain[599]}",
        "appliedCount": state.count,
        "ancestry": ancestry.merge(None, state, 2000),
        "database": {"ref": identity.ref({}), "job": "shop-db-1"},  # the versions are this spec's database's
    }
    body = {"metadata": {"name": "shop-db", "generation": 1}, "spec": {}, "status": status}

    def released(rev: str) -> bool:
        return evaluate(Requirement("shop-db", version=rev), body).met

    assert released(chain[599])
    assert released(chain[600 - len(state.versions)])
    assert not released(chain[600])  # in the image, not applied
    assert not released(BASE)  # applied, but older than what one report holds: held, never guessed


def test_lock_timeout_applies_nothing_and_reports_what_is_applied(alembic_shop: Runner, variant: str) -> None:
    ini, table = VARIANTS[variant]
    assert alembic_shop("upgrade", "--config", ini, "--target", ORDERS).rc == 0
    with lock_held_elsewhere(alembic_shop.postgres, alembic_shop.database):
        blocked = alembic_shop("upgrade", "--config", ini, DBMIGRATE_LOCK_TIMEOUT="1")
    assert blocked.rc == Outcome.LOCK_TIMEOUT.exit_code == 4, blocked.stdout + blocked.stderr
    assert blocked.report.outcome is Outcome.LOCK_TIMEOUT
    assert blocked.events("lock.waiting")
    assert blocked.report.applied == []
    state = blocked.report.apps["alembic"]  # read without the lock
    assert (state.versions, state.heads) == ([BASE, ORDERS], [ORDERS])
    assert heads(alembic_shop, table) == [ORDERS]
    assert "bio" not in alembic_shop.columns("users")
    assert alembic_shop("upgrade", "--config", ini).rc == 0  # the lock is free again
    assert heads(alembic_shop, table) == [MERGE]


BROKEN = "e9f0a1b2c3d4"


def shop_with_broken_revision(tmp_path: Path, per_migration: bool) -> Path:
    """The shop plus a revision after the merge that fails; env.py with or without
    transaction_per_migration=True."""
    project = shutil.copytree(ALEMBIC_SHOP, tmp_path / "shop", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "migrations" / "versions" / f"{BROKEN}_broken.py").write_text(
        f'"""broken"""\n\nfrom alembic import op\n\nrevision = "{BROKEN}"\ndown_revision = "{MERGE}"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        'def upgrade() -> None:\n    op.execute("SELECT * FROM no_such_table")\n\n\n'
        "def downgrade() -> None:\n    pass\n"
    )
    if per_migration:
        env_py = project / "migrations" / "env.py"
        text = env_py.read_text()
        old = 'version_table="shop_alembic_version"\n        )'
        assert text.count(old) == 1
        env_py.write_text(
            text.replace(
                old, 'version_table="shop_alembic_version", transaction_per_migration=True\n        )'
            )
        )
    return project


@pytest.mark.parametrize("per_migration", [False, True], ids=["one-transaction", "transaction-per-migration"])
def test_failing_revision_with_and_without_transaction_per_migration(
    postgres: PostgresServer, database: str, tmp_path: Path, per_migration: bool
) -> None:
    runner = Runner(
        postgres, database, shop_with_broken_revision(tmp_path, per_migration), tmp_path, "alembic"
    )
    failed = runner("upgrade")
    assert failed.rc == Outcome.MIGRATION_FAILED.exit_code, failed.stdout + failed.stderr
    assert failed.report.error is not None
    assert failed.report.error.kind == "UndefinedTable"
    assert failed.report.error.migration == f"alembic:{BROKEN}"
    state = failed.report.apps["alembic"]  # read back after the failure
    if per_migration:  # every revision before the broken one committed on its own
        assert sorted(failed.report.applied) == sorted(f"alembic:{r}" for r in ALL)
        assert heads(runner, "shop_alembic_version") == [MERGE] == state.heads
        assert sorted(state.versions) == sorted(ALL)
        assert "orders" in runner.tables()
    else:  # one transaction: the failure rolled everything back, and the report says nothing applied
        assert failed.report.applied == []
        assert heads(runner, "shop_alembic_version") == [] == state.heads
        assert state.versions == []
        assert "users" not in runner.tables()


@pytest.mark.parametrize("command", ["upgrade", "status"])
def test_an_env_py_that_never_calls_run_migrations_is_not_a_success(
    postgres: PostgresServer, database: str, tmp_path: Path, command: str
) -> None:
    """docs/runner.md "What the plan lists is what gets applied": an env.py whose condition skips
    ``context.run_migrations()`` used to end in Succeeded with nothing applied and ``apps`` empty
    (the operator would go Ready and release label-gated pods onto the old schema)."""
    project = shutil.copytree(ALEMBIC_SHOP, tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    env_py = project / "migrations" / "env.py"
    source = env_py.read_text()
    skipped = source.replace(
        "context.run_migrations()", 'os.environ.get("RUN_MIGRATIONS") and context.run_migrations()'
    )
    assert skipped != source
    env_py.write_text("import os\n" + skipped)
    runner = Runner(postgres, database, project, tmp_path, "alembic")
    result = runner(command, "--config", "alembic.ini", DBMIGRATE_FAST_NOOP="false")
    assert result.rc == Outcome.CONFIG_ERROR.exit_code, result.stdout + result.report_text
    assert result.report.error is not None
    assert "run_migrations" in result.report.error.message
    assert postgres.psql(database, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0"
