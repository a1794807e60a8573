"""database.identity: the fingerprint contract (shared with the operator) and the same-database rule."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest

from dbmigrate_runner import database
from dbmigrate_runner.database import Identity, same_database, undecided
from localcluster.postgres import PostgresServer
from tests.runner.conftest import finish, runner_env, start


def test_fingerprint_is_16_hex_of_sha256_of_system_slash_name() -> None:
    assert database.fingerprint("7301", "shop") == hashlib.sha256(b"7301/shop").hexdigest()[:16]
    assert Identity("ab" * 8, "shop").as_report() == {"fingerprint": "ab" * 8}  # the name is the Secret's


def test_same_database_rule() -> None:
    a = Identity("a" * 16, "shop")
    assert same_database(a, Identity("a" * 16, "shop"))
    assert not same_database(a, Identity("b" * 16, "shop"))  # exact on both sides: decided
    assert not undecided(a, Identity("b" * 16, "shop"))
    by_address = Identity("c" * 16, "shop", exact=False)  # another route to the server, maybe
    assert undecided(a, by_address)
    assert same_database(a, by_address, sees_lock=True)
    assert not same_database(a, by_address, sees_lock=False)
    assert not same_database(a, Identity("c" * 16, "other", exact=False), sees_lock=True)


async def _identity(url: str) -> Identity:
    conn = await asyncpg.connect(url)
    try:
        return await database.identity(conn)
    finally:
        await conn.close()


@pytest.mark.postgres
def test_identity_on_real_postgres_and_its_fallback(postgres: PostgresServer, database: str) -> None:
    other = postgres.create_database()
    mine = asyncio.run(_identity(postgres.url(database)))
    system = postgres.psql(database, "SELECT system_identifier FROM pg_control_system()")
    assert mine == Identity(database_fingerprint(system, database), database, exact=True)
    assert asyncio.run(_identity(postgres.url(other))).fingerprint != mine.fingerprint  # one server
    # A user without pg_control_system() (revoked in this database): the address stands in.
    postgres.psql(database, "CREATE ROLE plain LOGIN PASSWORD 'plain-pw'")
    postgres.psql(database, "REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
    plain = asyncio.run(_identity(postgres.url(database, user="plain", password="plain-pw")))
    assert plain.exact is False
    # inet_server_addr() || ':' || inet_server_port(), as PostgreSQL writes it (inet's text form)
    assert plain.fingerprint == database_fingerprint(f"{postgres.host}/32:{postgres.port}", database)
    assert undecided(mine, plain)


def database_fingerprint(system: str, name: str) -> str:
    return hashlib.sha256(f"{system}/{name}".encode()).hexdigest()[:16]


def test_report_carries_the_database_and_leaves_it_out_when_unknown() -> None:
    from dbmigrate_runner.report import AppState, Outcome, Report, decode, encode

    named = {"fingerprint": "0123456789abcdef"}
    report = Report(outcome=Outcome.SUCCEEDED, tool="aerich", command="upgrade", database=named)
    assert '"database":{"fingerprint":"0123456789abcdef"}' in encode(report)
    assert decode(encode(report)).database == named
    unknown = Report(outcome=Outcome.DATABASE_UNREACHABLE, tool="aerich", command="upgrade")
    assert '"database"' not in encode(unknown)
    assert decode(encode(unknown)).database is None
    # Kept even when the report must shrink to its verdict.
    huge = Report(
        outcome=Outcome.SUCCEEDED,
        apps={f"app{'x' * 200}{i}": AppState(current="v", count=1, versions=["v"]) for i in range(40)},
        database=named,
    )
    assert decode(encode(huge)).database == named


MULTIDB_INI = """[alembic]
script_location = migrations
databases = {names}

[first]
sqlalchemy.url = {first}

[second]
sqlalchemy.url = {second}
"""

MULTIDB_REVISION = '''"""one table per engine"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(engine_name: str) -> None:
    op.create_table(f"made_by_{engine_name}", sa.Column("id", sa.Integer, primary_key=True))


def downgrade(engine_name: str) -> None:
    op.drop_table(f"made_by_{engine_name}")
'''


@pytest.mark.postgres
@pytest.mark.parametrize("runners_first", [True, False])
def test_a_multidb_env_py_with_an_engine_elsewhere_applies_nothing_anywhere(
    postgres: PostgresServer, database: str, tmp_path: Path, runners_first: bool
) -> None:
    """docs/runner.md: a multi-database env.py (Alembic's ``multidb`` template, as shipped) is
    refused unless all its engines are on the runner's database. Whichever engine comes first, neither
    database gets a table (nor a version table)."""
    import alembic

    other = postgres.create_database(f"{database}_other")
    try:
        project = tmp_path / "multidb"
        (project / "migrations" / "versions").mkdir(parents=True)
        template = Path(alembic.__file__).parent / "templates" / "multidb" / "env.py"
        (project / "migrations" / "env.py").write_text(template.read_text())
        (project / "migrations" / "versions" / "0001_tables.py").write_text(MULTIDB_REVISION)
        ours, theirs = (f"postgresql+psycopg://{postgres.user}:{quote(postgres.password, safe='')}"
                        f"@{postgres.host}:{postgres.port}/{name}" for name in (database, other))  # fmt: skip
        names = "first, second" if runners_first else "second, first"
        (project / "alembic.ini").write_text(
            MULTIDB_INI.format(names=names, first=ours.replace("%", "%%"), second=theirs.replace("%", "%%"))
        )
        report = tmp_path / "r.json"
        env = runner_env(postgres.url(database), report, DBMIGRATE_TOOL="alembic")
        result = finish(
            start(["upgrade", "--config", "alembic.ini"], env, project), report, postgres.password
        )
        assert result.rc == 2, result.stdout + result.stderr
        assert result.report.error is not None
        assert result.report.error.kind == "DatabaseMismatch", result.report.error
        assert not result.report.applied
        for name in (database, other):
            assert postgres.psql(name, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0", (
                name
            )
    finally:
        postgres.psql("postgres", f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')
