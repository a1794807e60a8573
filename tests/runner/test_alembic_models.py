"""examples/alembic-shop as an app: its SQLAlchemy models are exactly what the revisions build.

The runner brings a real PostgreSQL database to head; then Alembic's own autogenerate comparison
(`alembic check`, through the example's env.py and its target_metadata) must find nothing to do. The
same comparison against a model edited to disagree with the revisions must fail, so the check is not
vacuous. The app's queries then run on the migrated schema, and deleting a user deletes their orders in
the database (the ON DELETE CASCADE revision), not in the ORM.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy.engine import make_url

from localcluster.postgres import PostgresServer
from tests.runner.conftest import REPO, Runner

pytestmark = pytest.mark.postgres

ALEMBIC_SHOP = REPO / "examples" / "alembic-shop"
ALEMBIC = Path(sys.executable).parent / "alembic"
VARIANTS = {"sync": ("alembic.ini", "psycopg"), "async": ("alembic-async.ini", "asyncpg")}
MODELS = "shop_sa/models.py"


def project_for(postgres: PostgresServer, database: str, dst: Path) -> Path:
    """A copy of the example whose alembic.ini files name the test database, as a developer's
    checkout would for `alembic check` (the runner sets the URL itself)."""
    project = shutil.copytree(ALEMBIC_SHOP, dst, ignore=shutil.ignore_patterns("__pycache__"))
    for ini, driver in VARIANTS.values():
        url = make_url(postgres.url(database)).set(drivername=f"postgresql+{driver}")
        path = project / ini
        lines = [
            f"sqlalchemy.url = {url.render_as_string(hide_password=False).replace('%', '%%')}"
            if line.startswith("sqlalchemy.url")
            else line
            for line in path.read_text().splitlines()
        ]
        path.write_text("\n".join(lines) + "\n")
    return project


def alembic_check(project: Path, ini: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ALEMBIC), "-c", ini, "check"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_head_matches_the_models(
    postgres: PostgresServer, database: str, tmp_path: Path, variant: str
) -> None:
    ini, _driver = VARIANTS[variant]
    project = project_for(postgres, database, tmp_path / "shop")
    upgraded = Runner(postgres, database, project, tmp_path, "alembic")("upgrade", "--config", ini)
    assert upgraded.rc == 0, upgraded.stdout + upgraded.stderr
    checked = alembic_check(project, ini)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr


# Each edit makes the models disagree with the revisions in one way autogenerate must notice.
DISAGREEMENTS = {
    "fk-without-cascade": ('ForeignKey("users.id", ondelete="CASCADE")', 'ForeignKey("users.id")', "add_fk"),
    "column-missing": ("    bio: Mapped[str | None] = mapped_column(Text)\n", "", "remove_column"),
    "column-type": ("String(200)", "String(250)", "modify_type"),
    "column-extra": (
        "    total_cents: Mapped[int]\n",
        "    total_cents: Mapped[int]\n    currency: Mapped[str] = mapped_column(String(3))\n",
        "add_column",
    ),
}


@pytest.mark.parametrize("edit", list(DISAGREEMENTS))
def test_the_check_fails_when_a_model_disagrees(
    postgres: PostgresServer, database: str, tmp_path: Path, edit: str
) -> None:
    old, new, operation = DISAGREEMENTS[edit]
    project = project_for(postgres, database, tmp_path / "shop")
    upgraded = Runner(postgres, database, project, tmp_path, "alembic")("upgrade")
    assert upgraded.rc == 0, upgraded.stdout + upgraded.stderr
    models = project / MODELS
    text = models.read_text()
    assert text.count(old) == 1, old
    models.write_text(text.replace(old, new))
    checked = alembic_check(project, "alembic.ini")
    output = checked.stdout + checked.stderr
    assert checked.returncode != 0, output
    assert "New upgrade operations detected" in output
    assert operation in output


@pytest.fixture
def shop_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """shop_sa.app imported from the example, as the app's own code would."""
    monkeypatch.syspath_prepend(str(ALEMBIC_SHOP))
    import shop_sa.app

    yield shop_sa.app
    for name in [m for m in sys.modules if m == "shop_sa" or m.startswith("shop_sa.")]:
        del sys.modules[name]  # not through monkeypatch: its undo would put them back


def test_the_app_runs_on_the_migrated_schema(
    postgres: PostgresServer, database: str, tmp_path: Path, shop_app: ModuleType
) -> None:
    from sqlalchemy.orm import Session

    upgraded = Runner(postgres, database, ALEMBIC_SHOP, tmp_path, "alembic")("upgrade")
    assert upgraded.rc == 0, upgraded.stdout + upgraded.stderr
    engine = shop_app.engine(postgres.url(database))
    try:
        with Session(engine) as session, session.begin():
            ada = shop_app.register(session, "ada@example.com", bio="first programmer")
            bob = shop_app.register(session, "bob@example.com")
            shop_app.place_order(session, ada, 1250)
            shop_app.place_order(session, ada, 750)
            shop_app.place_order(session, bob, 300)
        with Session(engine) as session:
            assert shop_app.spend_by_email(session) == {"ada@example.com": 2000, "bob@example.com": 300}
        with Session(engine) as session, session.begin():
            assert shop_app.forget(session, "ada@example.com") == 1  # a bulk DELETE: no ORM cascade
        with Session(engine) as session:
            assert shop_app.spend_by_email(session) == {"bob@example.com": 300}
    finally:
        engine.dispose()
    # The database itself cascades: a plain SQL delete takes the orders with the user.
    assert postgres.psql(database, "SELECT count(*) FROM orders") == "1"
    postgres.psql(database, "DELETE FROM users WHERE email = 'bob@example.com'")
    assert postgres.psql(database, "SELECT count(*) FROM orders") == "0"
