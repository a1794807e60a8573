"""The plan's lint end to end: the real ``dbmigrate-runner plan`` on real PostgreSQL.

Alembic histories shaped like the real ones: a revision calling ``sa.inspect(op.get_bind())`` (only
that one is not SQL), an autogenerate accident (the report keeps the dropped tables), statements an
attacker would slip into a list nobody reads, silenced rules (part of the hash), and the examples on
a fresh database (everything they touch is created in the plan: nothing to review)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dbmigrate_runner.report import MAX_BYTES, Outcome
from localcluster.postgres import PostgresServer
from tests.runner.conftest import Runner
from tests.runner.test_alembic import ALEMBIC_SHOP
from tests.runner.test_plan import plan_of

pytestmark = pytest.mark.postgres


def revision(rev: str, down: str | None, body: str) -> str:
    lines = [f"    {line}" for line in body.strip().splitlines()] or ["    pass"]
    return "\n".join(
        [
            f'"""{rev}"""',
            "import sqlalchemy as sa",
            "from alembic import op",
            "",
            f"revision = {rev!r}",
            f"down_revision = {down!r}",
            "branch_labels = None",
            "depends_on = None",
            "",
            "",
            "def upgrade() -> None:",
            *lines,
            "",
            "",
            "def downgrade() -> None:",
            "    pass",
            "",
        ]
    )


def history(tmp: Path, postgres: PostgresServer, database: str, revisions: list[tuple[str, str]]) -> Runner:
    """The alembic example's env.py and ini with these revisions (id, upgrade body), in a line."""
    project = tmp / "project"
    shutil.copytree(ALEMBIC_SHOP, project, ignore=shutil.ignore_patterns("__pycache__"))
    versions = project / "migrations" / "versions"
    shutil.rmtree(versions)
    versions.mkdir()
    down = None
    for rev, body in revisions:
        (versions / f"{rev}.py").write_text(revision(rev, down, body))
        down = rev
    return Runner(postgres, database, project, tmp, "alembic")


def test_a_revision_that_cannot_render_offline_is_the_only_one_not_sql(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    runner = history(
        tmp_path,
        postgres,
        database,
        [
            ("r1", "op.create_table('accounts', sa.Column('id', sa.Integer, primary_key=True))"),
            (
                "r2",
                """
if "legacy" in sa.inspect(op.get_bind()).get_table_names():
    op.drop_table("legacy")
""",
            ),
            ("r3", "op.add_column('accounts', sa.Column('note', sa.Text()))\nop.drop_table('old_stuff')"),
        ],
    )
    postgres.psql(database, "CREATE TABLE old_stuff (id int)")
    result = runner("plan")
    plan = plan_of(result)
    assert plan.pending == ["alembic:r1", "alembic:r2", "alembic:r3"]
    first, middle, last = plan.steps
    assert first.opaque == []
    assert any("CREATE TABLE accounts" in s for s in first.statements)
    assert middle.statements == []
    (reason,) = middle.opaque
    assert "offline rendering failed" in reason
    assert "Inspect" in reason  # names its error
    assert last.opaque == []
    assert any("ADD COLUMN note" in s for s in last.statements)
    assert [(f.migration, f.rule, f.target, f.severity) for f in plan.findings] == [
        ("alembic:r3", "ban-drop-table", "old_stuff", "destructive")
    ]
    summary = result.report.plan
    assert summary is not None
    assert summary.opaque == ["alembic:r2"]
    assert summary.findings_count == 1
    # The approved run re-makes the plan the same way: same hash, it applies.
    ok = runner("upgrade", "--expect-plan", plan.hash)
    assert ok.rc == 0, ok.stdout
    assert ok.report.applied == plan.pending


def test_autogenerate_accident_report_keeps_the_dropped_tables(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    existing = [f"customer_data_{i:02d}" for i in range(22)]
    fresh = [f"new_table_{i:02d}" for i in range(14)]
    creates = "\n".join(
        f"op.create_table('{t}', sa.Column('id', sa.Integer, primary_key=True), sa.Column('v', sa.Integer))\n"
        f"op.create_index('ix_{t}_v', '{t}', ['v'])"
        for t in fresh
    )
    # The accident: models imported from the wrong place, autogenerate drops what it does not see.
    accident = "\n".join(
        [
            *(f"op.drop_index('ix_{t}_v', table_name='{t}')" for t in fresh),
            *(f"op.drop_table('{t}')" for t in existing),
        ]
    )
    runner = history(tmp_path, postgres, database, [("a1", creates), ("a2", accident)])
    for t in existing:
        postgres.psql(database, f"CREATE TABLE {t} (id int); INSERT INTO {t} VALUES (1)")
    result = runner("plan")
    plan = plan_of(result)
    drops = [f for f in plan.findings if f.rule == "ban-drop-table"]
    assert len(drops) == 22
    assert {f.severity for f in drops} == {"destructive"}
    in_plan = [f for f in plan.findings if f.target.startswith("ix_new_table")]
    assert in_plan
    assert {f.severity for f in in_plan} == {"in-plan"}  # indexes of tables made in the plan
    # The report had to be trimmed, and kept every DropTable first; the count is exact.
    raw = result.report_text
    assert len(raw.encode()) <= MAX_BYTES
    summary = result.report.plan
    assert summary is not None
    assert summary.findings_omitted > 0
    assert summary.findings_count == len(plan.findings)
    assert len(summary.findings) + summary.findings_omitted == summary.findings_count
    kept = [(f.rule, f.target) for f in summary.findings]
    assert kept[:22] == [("ban-drop-table", t) for t in existing]
    order = ["destructive", "unclassified", "hazard", "in-plan"]
    ranks = [order.index(f.severity) for f in summary.findings]
    assert ranks == sorted(ranks)  # most severe first; the in-plan ones only in the room left
    assert summary.review_count == len([f for f in plan.findings if f.severity != "in-plan"])


ATTACKER = [
    "WITH d AS (DELETE FROM ledger RETURNING id) SELECT count(*) FROM d",
    "CALL purge()",
    "DROP OWNED BY nobody_in_particular",
    "ALTER TABLE events DETACH PARTITION events_2025",
    "REVOKE SELECT ON ledger FROM PUBLIC",
    "COPY ledger FROM PROGRAM 'true'",
    "ALTER TYPE state RENAME VALUE 'open' TO 'opened'",
    "TRUNCATE ledger",
    "UPDATE ledger SET amount = 0",
    "DELETE FROM ledger",
    "DO $$ BEGIN PERFORM 1; END $$",
    "SELECT purge()",
    "SET search_path = somewhere_else, public",
    "CREATE INDEX ix_ledger_amount ON ledger (amount)",
    "ALTER TABLE ledger ADD CONSTRAINT amount_positive CHECK (amount >= 0)",
]


def test_statements_an_attacker_would_slip_in_are_all_findings_and_silencing_is_hashed(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    body = "\n".join(f"op.execute({sql!r})" for sql in ATTACKER)
    runner = history(tmp_path, postgres, database, [("x1", body)])
    result = runner("plan")
    plan = plan_of(result)
    flagged = {f.statement for f in plan.findings}
    assert flagged == set(range(len(ATTACKER))), [ATTACKER[i] for i in set(range(len(ATTACKER))) - flagged]
    assert all(f.severity in ("destructive", "unclassified", "hazard") for f in plan.findings)
    rules = {f.rule for f in plan.findings}
    assert {"require-concurrent-index-creation", "constraint-missing-not-valid"} <= rules  # squawk's
    summary = result.report.plan
    assert summary is not None
    assert summary.review_count == len(plan.findings)

    # Silence two rules: they are left out, and the plan has another hash (what was silenced is
    # part of what is approved).
    quiet = runner(
        "plan", DBMIGRATE_LINT_IGNORE="require-concurrent-index-creation, constraint-missing-not-valid"
    )
    silenced = plan_of(quiet)
    assert silenced.lint_ignore == ["constraint-missing-not-valid", "require-concurrent-index-creation"]
    assert not {f.rule for f in silenced.findings} & {
        "require-concurrent-index-creation",
        "constraint-missing-not-valid",
    }
    assert silenced.hash != plan.hash
    assert quiet.report.plan is not None
    assert quiet.report.plan.lint_ignore == silenced.lint_ignore
    # An approval of the silenced plan does not cover a run without the silence, and the other way round.
    stale = runner("upgrade", "--expect-plan", silenced.hash)
    assert stale.rc == Outcome.CONFIG_ERROR.exit_code
    assert stale.report.error is not None
    assert stale.report.error.kind == "PlanChanged"


def test_a_bad_rule_id_is_a_config_error(postgres: PostgresServer, database: str, tmp_path: Path) -> None:
    runner = history(tmp_path, postgres, database, [("y1", "op.execute('SELECT 1')")])
    result = runner("plan", DBMIGRATE_LINT_IGNORE="ban-drop-table; DROP TABLE x")
    assert result.rc == Outcome.CONFIG_ERROR.exit_code
    assert "not a rule id" in (result.report.error.message if result.report.error else "")


def test_the_examples_on_a_fresh_database_have_nothing_to_review(
    shop: Runner, alembic_example: Runner
) -> None:
    for runner in (shop, alembic_example):
        result = runner("plan")
        plan = plan_of(result)
        summary = result.report.plan
        assert summary is not None
        assert summary.review_count == 0, [(f.migration, f.rule, f.target, f.severity) for f in plan.findings]
        assert {f.severity for f in plan.findings} <= {"in-plan"}
    # The alembic example's ON DELETE CASCADE change is on a table made earlier in the same plan.
    cascade = [f for f in plan_of(alembic_example("plan")).findings if f.rule == "ban-drop-constraint"]
    assert cascade
    assert {f.severity for f in cascade} == {"in-plan"}


@pytest.fixture
def alembic_example(postgres: PostgresServer, tmp_path: Path) -> Runner:
    (tmp_path / "alembic").mkdir()
    return Runner(postgres, postgres.create_database(), ALEMBIC_SHOP, tmp_path / "alembic", "alembic")
