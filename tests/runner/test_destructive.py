"""Destructive-change detection: a table of SQL statements and what each must (and must not) report."""

from __future__ import annotations

import pytest

from dbmigrate_runner.destructive import analyse, classify, is_framing, split_statements, touches_only
from dbmigrate_runner.sqlplan import Finding, Step

CASES: list[tuple[str, list[tuple[str, str]]]] = [
    # drops
    ('DROP TABLE "order"', [("DropTable", "order")]),
    ("DROP TABLE IF EXISTS shop.a, b CASCADE", [("DropTable", "shop.a"), ("DropTable", "b")]),
    ("DROP SCHEMA legacy CASCADE", [("DropSchema", "legacy")]),
    ('ALTER TABLE "product" DROP COLUMN "description"', [("DropColumn", "product.description")]),
    ("ALTER TABLE shop.product DROP COLUMN IF EXISTS x", [("DropColumn", "shop.product.x")]),
    ("ALTER TABLE t DROP CONSTRAINT t_fk", [("DropConstraint", "t.t_fk")]),
    ("DROP INDEX CONCURRENTLY idx_email", [("DropIndex", "idx_email")]),
    ("DROP VIEW v", [("DropView", "v")]),
    ("DROP SEQUENCE s", [("DropSequence", "s")]),
    # type changes
    ("ALTER TABLE t ALTER COLUMN c TYPE INT USING c::int", [("AlterColumnType", "t.c")]),
    ('ALTER TABLE "customer" ALTER COLUMN "name" TYPE VARCHAR(20)', [("AlterColumnType", "customer.name")]),
    # NOT NULL without a default
    ('ALTER TABLE "t" ADD "x" INT NOT NULL', [("AddNotNull", "t.x")]),
    ("ALTER TABLE t ADD COLUMN x INT NOT NULL DEFAULT 0", []),
    ("ALTER TABLE t ADD COLUMN x INT GENERATED ALWAYS AS IDENTITY", []),
    ("ALTER TABLE t ADD COLUMN x INT", []),
    ("ALTER TABLE t ALTER COLUMN c SET NOT NULL", [("AddNotNull", "t.c")]),
    ("ALTER TABLE t ALTER COLUMN c DROP NOT NULL", []),
    # data
    ("TRUNCATE a, b", [("Truncate", "a"), ("Truncate", "b")]),
    ('DELETE FROM "order"', [("DeleteAll", "order")]),
    ("DELETE FROM o WHERE id = 1", []),
    ("UPDATE users SET bio = ''", [("UpdateAll", "users")]),
    ("UPDATE users SET bio = '' WHERE bio IS NULL", []),
    # renames break the running app
    ("ALTER TABLE t RENAME COLUMN a TO b", [("Rename", "t.a")]),
    ("ALTER TABLE t RENAME TO u", [("Rename", "t")]),
    # what cannot be checked is not declared safe
    ("DO $$ BEGIN EXECUTE 'DROP TABLE x'; END $$", [("Opaque", "DO")]),
    ("THIS IS NOT SQL", [("Unparsed", "?")]),
    # harmless
    ('CREATE TABLE "r" ("id" SERIAL NOT NULL PRIMARY KEY, "body" TEXT NOT NULL)', []),
    ('CREATE INDEX "idx" ON "t" ("c")', []),
    ("ALTER TABLE t ADD CONSTRAINT u UNIQUE (c)", []),
    ("INSERT INTO t (a) VALUES (1)", []),
    ("COMMENT ON TABLE t IS 'drop table t'", []),  # the words are not the statement
    ("SELECT 'DROP TABLE users'", []),
]


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[c[0][:40] for c in CASES])
def test_classify(sql: str, expected: list[tuple[str, str]]) -> None:
    assert [(kind, target) for kind, target, _ in classify(sql)] == expected


def test_several_commands_in_one_alter_each_count() -> None:
    found = classify('ALTER TABLE "t" DROP COLUMN "a", ALTER COLUMN "b" TYPE TEXT, ADD "c" INT')
    assert [(k, t) for k, t, _ in found] == [("DropColumn", "t.a"), ("AlterColumnType", "t.b")]


def test_findings_name_the_migration_and_statement() -> None:
    steps = [
        Step("models:1_x", ['CREATE TABLE "a" (id INT)', 'ALTER TABLE "b" DROP COLUMN "c"']),
        Step("models:2_y", ["TRUNCATE a"], opaque=["runs Python"]),
    ]
    findings = analyse(steps)
    assert [(f.migration, f.statement, f.kind) for f in findings] == [
        ("models:1_x", 1, "DropColumn"),
        ("models:2_y", 0, "Truncate"),
    ]
    assert isinstance(findings[0], Finding)
    assert "drops column c of b" in findings[0].message


def test_split_statements_like_the_server() -> None:
    script = """
        -- a comment; with a semicolon
        CREATE TABLE "a" (id INT);
        ALTER TABLE "a" ADD "note" TEXT DEFAULT 'x;y';
        DO $$ BEGIN PERFORM 1; END $$;
    """
    assert split_statements(script) == [
        'CREATE TABLE "a" (id INT)',
        'ALTER TABLE "a" ADD "note" TEXT DEFAULT \'x;y\'',
        "DO $$ BEGIN PERFORM 1; END $$",
    ]
    assert split_statements("  \n ") == []
    assert split_statements("NOT SQL; AT ALL") == ["NOT SQL; AT ALL"]  # kept whole, flagged later


def test_framing_and_version_table() -> None:
    assert is_framing("BEGIN")
    assert is_framing("COMMIT")
    assert not is_framing("CREATE TABLE a (id INT)")
    assert touches_only("INSERT INTO alembic_version (version_num) VALUES ('a')", "alembic_version")
    assert touches_only(
        "UPDATE alembic_version SET version_num='b' WHERE version_num = 'a'", "alembic_version"
    )
    assert touches_only("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)", "alembic_version")
    assert not touches_only("DROP TABLE alembic_version", "alembic_version")
    assert not touches_only("INSERT INTO users (id) VALUES (1)", "alembic_version")
