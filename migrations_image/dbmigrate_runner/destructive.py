"""Destructive-change detection on a plan's SQL, with PostgreSQL's own parser (pglast).

Why pglast and not sqlglot: pglast wraps libpg_query, the parser of the PostgreSQL server itself,
so every statement the migration tools emit for PostgreSQL parses exactly as the server will parse
it (``ALTER TABLE … ALTER COLUMN … TYPE … USING``, ``DROP … CASCADE``, dollar quoting), and an AST
node names the exact sub-command (``AT_DropColumn``, ``AT_AlterColumnType``). sqlglot is a
multi-dialect transpiler that approximates PostgreSQL's grammar and falls back to opaque
"Command" nodes for DDL it does not model, which is where destructive changes live.

A statement the parser rejects or cannot see into (``DO`` blocks) is reported too: what cannot be
checked is not declared safe.
"""

from __future__ import annotations

from collections.abc import Iterable

import pglast
from pglast import ast
from pglast.enums import AlterTableType, ConstrType, DropBehavior, ObjectType

from dbmigrate_runner.sqlplan import Finding, Step

# Statements that only frame a script; not worth a step of their own.
_FRAMING = (ast.TransactionStmt,)


def split_statements(sql: str) -> list[str]:
    """The statements of a script, as the server would split them (comments and blanks dropped).
    A script the parser rejects stays one statement, so nothing is lost; detection flags it."""
    if not sql.strip():
        return []
    try:
        parts = pglast.split(sql, with_parser=True)
    except pglast.parser.ParseError:
        return [sql.strip()]
    return [p.strip() for p in parts if p.strip()]


def _name(parts: Iterable[object]) -> str:
    return ".".join(str(getattr(p, "sval", p)) for p in parts)


def _relation(rv: ast.RangeVar | None) -> str:
    if rv is None:
        return "?"
    return ".".join(x for x in (rv.schemaname, rv.relname) if x)


def _drop_objects(stmt: ast.DropStmt) -> list[str]:
    names = []
    for obj in stmt.objects or ():
        if isinstance(obj, tuple | list):
            names.append(_name(obj))
        elif isinstance(obj, ast.String):
            names.append(str(obj.sval))
        elif isinstance(obj, ast.TypeName):
            names.append(_name(obj.names or ()))
        else:
            names.append(type(obj).__name__)
    return names


def _kind_of(object_type: ObjectType | None) -> str:
    """``OBJECT_MATVIEW`` → ``Matview``: the object word of a finding's kind."""
    if object_type is None:
        return "Object"
    return object_type.name.removeprefix("OBJECT_").title().replace("_", "")


def _not_null_without_default(column: ast.ColumnDef) -> bool:
    constraints = column.constraints or ()
    kinds = {c.contype for c in constraints if isinstance(c, ast.Constraint)}
    not_null = ConstrType.CONSTR_NOTNULL in kinds or column.is_not_null
    has_default = ConstrType.CONSTR_DEFAULT in kinds or ConstrType.CONSTR_IDENTITY in kinds
    has_default = has_default or ConstrType.CONSTR_GENERATED in kinds or column.raw_default is not None
    return bool(not_null) and not has_default


def _alter_table(stmt: ast.AlterTableStmt) -> list[tuple[str, str, str]]:
    table = _relation(stmt.relation)
    found: list[tuple[str, str, str]] = []
    for cmd in stmt.cmds or ():
        if not isinstance(cmd, ast.AlterTableCmd):
            continue
        sub = cmd.subtype
        if sub == AlterTableType.AT_DropColumn:
            found.append(
                ("DropColumn", f"{table}.{cmd.name}", f"drops column {cmd.name} of {table} and its data")
            )
        elif sub == AlterTableType.AT_AlterColumnType:
            found.append(
                (
                    "AlterColumnType",
                    f"{table}.{cmd.name}",
                    f"changes the type of {table}.{cmd.name}: may rewrite the table under an exclusive "
                    "lock, and a narrowing cast fails or loses data",
                )
            )
        elif sub == AlterTableType.AT_SetNotNull:
            found.append(
                (
                    "AddNotNull",
                    f"{table}.{cmd.name}",
                    f"sets NOT NULL on {table}.{cmd.name}: fails if a row holds NULL there",
                )
            )
        elif sub == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            if _not_null_without_default(cmd.def_):
                col = cmd.def_.colname
                found.append(
                    (
                        "AddNotNull",
                        f"{table}.{col}",
                        f"adds NOT NULL column {col} without a default to {table}: "
                        "fails on a non-empty table",
                    )
                )
        elif sub == AlterTableType.AT_DropConstraint:
            found.append(("DropConstraint", f"{table}.{cmd.name}", f"drops constraint {cmd.name} of {table}"))
    return found


def classify(statement: str) -> list[tuple[str, str, str]]:
    """``(kind, target, message)`` for each destructive change in one statement (usually zero or one)."""
    try:
        parsed = pglast.parse_sql(statement)
    except pglast.parser.ParseError as exc:
        return [("Unparsed", "?", f"PostgreSQL's parser rejects this statement ({exc}); it was not checked")]
    found: list[tuple[str, str, str]] = []
    for raw in parsed:
        stmt = raw.stmt
        if isinstance(stmt, ast.DropStmt):
            kind = _kind_of(stmt.removeType)
            cascade = (
                " with CASCADE (dependent objects go too)"
                if stmt.behavior == DropBehavior.DROP_CASCADE
                else ""
            )
            for name in _drop_objects(stmt):
                found.append((f"Drop{kind}", name, f"drops {kind.lower()} {name}{cascade}"))
        elif isinstance(stmt, ast.DropdbStmt):
            found.append(("DropDatabase", str(stmt.dbname), f"drops database {stmt.dbname}"))
        elif isinstance(stmt, ast.AlterTableStmt):
            found += _alter_table(stmt)
        elif isinstance(stmt, ast.TruncateStmt):
            for rel in stmt.relations or ():
                found.append(("Truncate", _relation(rel), f"empties table {_relation(rel)}"))
        elif isinstance(stmt, ast.DeleteStmt) and stmt.whereClause is None:
            table = _relation(stmt.relation)
            found.append(("DeleteAll", table, f"deletes every row of {table} (no WHERE)"))
        elif isinstance(stmt, ast.UpdateStmt) and stmt.whereClause is None:
            table = _relation(stmt.relation)
            found.append(("UpdateAll", table, f"updates every row of {table} (no WHERE)"))
        elif isinstance(stmt, ast.RenameStmt) and stmt.renameType in (
            ObjectType.OBJECT_TABLE,
            ObjectType.OBJECT_COLUMN,
        ):
            table = _relation(stmt.relation)
            old = f"{table}.{stmt.subname}" if stmt.renameType == ObjectType.OBJECT_COLUMN else table
            found.append(("Rename", old, f"renames {old} to {stmt.newname}: the running app's queries break"))
        elif isinstance(stmt, ast.DoStmt):
            found.append(("Opaque", "DO", "a DO block runs procedural code that was not checked"))
    return found


def analyse(steps: Iterable[Step]) -> list[Finding]:
    """Findings for every statement of every step, in plan order."""
    findings: list[Finding] = []
    for step in steps:
        for index, statement in enumerate(step.statements):
            for kind, target, message in classify(statement):
                findings.append(Finding(step.migration, index, kind, target, message))
    return findings


def is_framing(statement: str) -> bool:
    """``BEGIN;``/``COMMIT;`` of an offline script: the run's transactions are the tool's business."""
    try:
        parsed = pglast.parse_sql(statement)
    except pglast.parser.ParseError:
        return False
    return bool(parsed) and all(isinstance(raw.stmt, _FRAMING) for raw in parsed)


def touches_only(statement: str, table: str) -> bool:
    """Whether ``statement`` only creates or writes the table named ``table`` (a version table)."""
    try:
        parsed = pglast.parse_sql(statement)
    except pglast.parser.ParseError:
        return False
    for raw in parsed:
        stmt = raw.stmt
        relation = getattr(stmt, "relation", None)
        if isinstance(stmt, ast.CreateStmt | ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
            if not isinstance(relation, ast.RangeVar) or relation.relname != table:
                return False
        else:
            return False
    return bool(parsed)
