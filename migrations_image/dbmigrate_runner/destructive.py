"""The plan's lint: which statements a reviewer must see, decided by an allow-list that fails closed.

A statement is safe only when it is of a kind known to be safe (CREATE TABLE/INDEX/SEQUENCE/VIEW/
TYPE/SCHEMA/EXTENSION, ADD COLUMN, ADD/VALIDATE CONSTRAINT, SET/DROP DEFAULT, DROP NOT NULL,
COMMENT, INSERT, a SELECT that calls no unknown function, transaction framing, a few harmless SETs).
Everything else is a finding: destructive when we know it loses data or breaks the running app
(drops, TRUNCATE, DELETE, UPDATE, type changes, renames, REVOKE, DETACH PARTITION…), and
``unclassified`` — naming the statement's kind — when we do not know what it does (CALL, DO, COPY,
CREATE FUNCTION/TRIGGER, GRANT, SET search_path, a call of a function not on a short list of
side-effect-free built-ins, anything new in PostgreSQL's grammar). Lock and downtime hazards come
from squawk (``squawk.py``), the field's own PostgreSQL migration linter, under its rule ids.

A finding on an object created earlier in the same plan (not ``IF NOT EXISTS``: that one may have
existed) is kept with severity ``in-plan``: nothing existing is lost, nobody uses it yet. Findings
that are not about an object (a function call, a CALL) never become ``in-plan``.

Why pglast and not sqlglot: pglast wraps libpg_query, the parser of the PostgreSQL server itself,
so every statement parses exactly as the server will parse it and an AST node names the exact
sub-command (``AT_DropColumn``); sqlglot approximates PostgreSQL's grammar and turns DDL it does
not model into opaque nodes. A statement the parser rejects is a finding (``unparsed-statement``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import pglast
from pglast import ast
from pglast.enums import AlterTableType, ConstrType, DropBehavior, ObjectType, TransactionStmtKind

from dbmigrate_runner.sqlplan import Finding, Step

# Severities, most severe first (the report keeps findings in this order when it must trim).
DESTRUCTIVE = "destructive"  # loses data or breaks the running app, on something that exists
UNCLASSIFIED = "unclassified"  # not known to be safe; not checked
HAZARD = "hazard"  # takes a lock or may fail on existing data (squawk's lock and downtime rules)
IN_PLAN = "in-plan"  # on an object created earlier in the same plan: nothing existing is touched
SEVERITIES = (DESTRUCTIVE, UNCLASSIFIED, HAZARD, IN_PLAN)
# Severities that make ``approval: OnDestructive`` wait for a person.
NEEDS_REVIEW = (DESTRUCTIVE, UNCLASSIFIED, HAZARD)

UNCLASSIFIED_RULE = "unclassified-statement"
UNPARSED_RULE = "unparsed-statement"
FUNCTION_RULE = "unclassified-function-call"

# Statements that only frame a script; not worth a step of their own.
_FRAMING = (ast.TransactionStmt,)
_SAFE_TRANSACTION = {
    TransactionStmtKind.TRANS_STMT_BEGIN,
    TransactionStmtKind.TRANS_STMT_START,
    TransactionStmtKind.TRANS_STMT_COMMIT,
    TransactionStmtKind.TRANS_STMT_ROLLBACK,
    TransactionStmtKind.TRANS_STMT_SAVEPOINT,
    TransactionStmtKind.TRANS_STMT_RELEASE,
    TransactionStmtKind.TRANS_STMT_ROLLBACK_TO,
}
# Settings a migration may change without changing what it does to data or which objects it sees.
_SAFE_SETTINGS = {
    "lock_timeout",
    "statement_timeout",
    "idle_in_transaction_session_timeout",
    "client_min_messages",
    "client_encoding",
    "standard_conforming_strings",
    "check_function_bodies",
    "xmloption",
    "maintenance_work_mem",
    "work_mem",
    "timezone",
    "datestyle",
    "intervalstyle",
}
# Built-in functions (pg_catalog; unqualified or ``pg_catalog.``) that change nothing but perhaps a
# sequence: a call of any other function is ``unclassified``, since a function may do anything.
_SAFE_FUNCTION_NAMES = """
    now statement_timestamp transaction_timestamp clock_timestamp timeofday timezone date_trunc
    date_part extract to_char to_date to_timestamp to_number age make_date make_time make_timestamp
    make_timestamptz make_interval justify_interval lower upper initcap length char_length
    octet_length btrim ltrim rtrim substring substr replace translate concat concat_ws left right
    lpad rpad split_part strpos position reverse repeat md5 sha256 encode decode format quote_ident
    quote_literal regexp_replace regexp_match regexp_matches starts_with abs round floor ceil
    ceiling trunc mod power sqrt sign gen_random_uuid uuid_generate_v4 uuid_generate_v1 random
    to_tsvector to_tsquery setweight jsonb_build_object json_build_object jsonb_build_array
    json_build_array to_jsonb to_json jsonb_set jsonb_strip_nulls array_length array_append
    array_remove array_to_string string_to_array cardinality unnest count sum min max avg
    string_agg array_agg jsonb_agg json_agg bool_and bool_or every row_number rank dense_rank
    nextval currval coalesce nullif greatest least int4 int8 text numeric float8 bool date
"""
_SAFE_FUNCTIONS = frozenset(_SAFE_FUNCTION_NAMES.split())


@dataclass(frozen=True)
class Hit:
    """One finding of one statement, before plan context (which migration, created in the plan)."""

    rule: str  # squawk's rule id where squawk has one, else ours (docs/reviewing-changes.md)
    kind: str  # a short CamelCase word: DropTable, DropColumn, Unclassified, …
    target: str  # the object it hits, or the statement's kind
    message: str
    severity: str
    # Objects the finding is about; when every one was created earlier in the plan it is ``in-plan``.
    objects: tuple[str, ...] = ()


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


# ---------------------------------------------------------------- names and object keys


def _name(parts: Iterable[object]) -> str:
    return ".".join(str(getattr(p, "sval", p)) for p in parts)


def _relation(rv: ast.RangeVar | None) -> str:
    if rv is None:
        return "?"
    return ".".join(x for x in (rv.schemaname, rv.relname) if x)


def _key(kind: str, name: str) -> str:
    """``rel:public.orders``: an unqualified name is taken as in ``public`` (the default path)."""
    return f"{kind}:{name if '.' in name else 'public.' + name}"


def _rel_key(rv: ast.RangeVar | None) -> str:
    return _key("rel", _relation(rv))


def _drop_objects(stmt: ast.DropStmt) -> list[str]:
    names = []
    for obj in stmt.objects or ():
        if isinstance(obj, tuple | list):
            names.append(_name(obj))
        elif isinstance(obj, ast.String):
            names.append(str(obj.sval))
        elif isinstance(obj, ast.TypeName):
            names.append(_name(obj.names or ()))
        elif isinstance(obj, ast.ObjectWithArgs):
            names.append(_name(obj.objname or ()))
        else:
            names.append(type(obj).__name__)
    return names


_RELATION_OBJECTS = {
    ObjectType.OBJECT_TABLE,
    ObjectType.OBJECT_INDEX,
    ObjectType.OBJECT_VIEW,
    ObjectType.OBJECT_MATVIEW,
    ObjectType.OBJECT_SEQUENCE,
    ObjectType.OBJECT_FOREIGN_TABLE,
}


def _object_key(object_type: ObjectType | None, name: str) -> str:
    if object_type in _RELATION_OBJECTS:
        return _key("rel", name)
    if object_type in (ObjectType.OBJECT_TYPE, ObjectType.OBJECT_DOMAIN):
        return _key("type", name)
    if object_type == ObjectType.OBJECT_SCHEMA:
        return f"schema:{name}"
    return f"other:{object_type}:{name}"


def _word(object_type: ObjectType | None) -> str:
    """``OBJECT_MATVIEW`` → ``Matview``: the object word of a finding's kind."""
    if object_type is None:
        return "Object"
    return object_type.name.removeprefix("OBJECT_").title().replace("_", "")


def _stmt_kind(node: object) -> str:
    return type(node).__name__.removesuffix("Stmt") or type(node).__name__


# ---------------------------------------------------------------- function calls


def _walk(node: object) -> Iterator[ast.Node]:
    """Every AST node under ``node`` (itself included)."""
    if isinstance(node, ast.Node):
        yield node
        for slot in getattr(type(node), "__slots__", ()):
            yield from _walk(getattr(node, slot, None))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from _walk(item)


def _unknown_calls(node: object) -> list[str]:
    """Functions called under ``node`` that are not side-effect-free built-ins, in order."""
    found: list[str] = []
    for sub in _walk(node):
        if isinstance(sub, ast.FuncCall):
            parts = [str(getattr(p, "sval", p)) for p in sub.funcname or ()]
            name = ".".join(parts)
            schema_ok = len(parts) == 1 or (len(parts) == 2 and parts[0] == "pg_catalog")
            if not (schema_ok and parts[-1] in _SAFE_FUNCTIONS) and name not in found:
                found.append(name)
    return found


def _calls(node: object, what: str) -> list[Hit]:
    return [
        Hit(
            FUNCTION_RULE,
            "Unclassified",
            f"{name}()",
            f"{what} calls {name}(), which is not known to be free of side effects; it was not checked",
            UNCLASSIFIED,
        )
        for name in _unknown_calls(node)
    ]


def _nested_dml(with_clause: ast.WithClause | None) -> list[Hit]:
    """A data-modifying statement inside WITH runs whatever the outer statement is."""
    hits: list[Hit] = []
    for cte in (with_clause.ctes if with_clause else None) or ():
        if isinstance(cte, ast.CommonTableExpr) and cte.ctequery is not None:
            hits += _statement(cte.ctequery)
    return hits


# ---------------------------------------------------------------- statements


def _unclassified(stmt: object, detail: str = "") -> Hit:
    kind = _stmt_kind(stmt)
    what = f"{kind}{' ' + detail if detail else ''}"
    return Hit(
        UNCLASSIFIED_RULE,
        "Unclassified",
        what,
        f"a statement of kind {what} is not known to be safe; it was not checked",
        UNCLASSIFIED,
    )


def _not_null_without_default(column: ast.ColumnDef) -> bool:
    constraints = column.constraints or ()
    kinds = {c.contype for c in constraints if isinstance(c, ast.Constraint)}
    not_null = ConstrType.CONSTR_NOTNULL in kinds or column.is_not_null
    has_default = ConstrType.CONSTR_DEFAULT in kinds or ConstrType.CONSTR_IDENTITY in kinds
    has_default = has_default or ConstrType.CONSTR_GENERATED in kinds or column.raw_default is not None
    return bool(not_null) and not has_default


_SERIAL_TYPES = {"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"}
_SAFE_ALTER = {
    AlterTableType.AT_AddColumn,
    AlterTableType.AT_ColumnDefault,
    AlterTableType.AT_DropNotNull,
    AlterTableType.AT_AddConstraint,
    AlterTableType.AT_ValidateConstraint,
    AlterTableType.AT_AddIndex,
    AlterTableType.AT_AddIndexConstraint,
}


def _alter_table(stmt: ast.AlterTableStmt) -> list[Hit]:
    table = _relation(stmt.relation)
    key = (_rel_key(stmt.relation),)
    found: list[Hit] = []
    for cmd in stmt.cmds or ():
        if not isinstance(cmd, ast.AlterTableCmd):
            continue
        sub = cmd.subtype
        col = f"{table}.{cmd.name}"
        if sub == AlterTableType.AT_DropColumn:
            found.append(
                Hit(
                    "ban-drop-column", "DropColumn", col, f"drops column {col} and its data", DESTRUCTIVE, key
                )
            )
        elif sub == AlterTableType.AT_AlterColumnType:
            msg = (
                f"changes the type of {col}: rewrites the table under an exclusive lock, and a "
                "narrowing cast fails or loses data"
            )
            found.append(Hit("changing-column-type", "AlterColumnType", col, msg, DESTRUCTIVE, key))
            found += _calls(cmd.def_, f"the USING of {col}")
        elif sub == AlterTableType.AT_DropConstraint:
            found.append(
                Hit(
                    "ban-drop-constraint",
                    "DropConstraint",
                    col,
                    f"drops constraint {cmd.name} of {table}: what it guaranteed no longer holds",
                    DESTRUCTIVE,
                    key,
                )
            )
        elif sub in (AlterTableType.AT_DetachPartition, AlterTableType.AT_DetachPartitionFinalize):
            part = cmd.def_.name if isinstance(cmd.def_, ast.PartitionCmd) else None
            name = _relation(part) if isinstance(part, ast.RangeVar) else "?"
            found.append(
                Hit(
                    "detach-partition",
                    "DetachPartition",
                    f"{table}/{name}",
                    f"detaches partition {name} from {table}: its rows leave the table",
                    DESTRUCTIVE,
                    key,
                )
            )
        elif sub == AlterTableType.AT_SetNotNull:
            found.append(
                Hit(
                    "adding-not-nullable-field",
                    "AddNotNull",
                    col,
                    f"sets NOT NULL on {col}: scans the table under an exclusive lock, fails on a NULL",
                    HAZARD,
                    key,
                )
            )
        elif sub == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            column = cmd.def_
            if _not_null_without_default(column):
                found.append(
                    Hit(
                        "adding-required-field",
                        "AddNotNull",
                        f"{table}.{column.colname}",
                        f"adds NOT NULL column {column.colname} without a default to {table}: "
                        "fails on a non-empty table",
                        HAZARD,
                        key,
                    )
                )
            type_name = column.typeName.names[-1].sval if column.typeName and column.typeName.names else ""
            if str(type_name).lower() in _SERIAL_TYPES:
                found.append(
                    Hit(
                        "adding-field-with-default",
                        "AddSerialColumn",
                        f"{table}.{column.colname}",
                        f"adds {type_name} column {column.colname} to {table}: its nextval() default "
                        "rewrites the table under an exclusive lock",
                        HAZARD,
                        key,
                    )
                )
            checks = [c for c in column.constraints or () if isinstance(c, ast.Constraint)]
            if any(c.contype == ConstrType.CONSTR_CHECK and not c.skip_validation for c in checks):
                found.append(
                    Hit(
                        "constraint-missing-not-valid",
                        "AddCheckedColumn",
                        f"{table}.{column.colname}",
                        f"adds column {column.colname} with a CHECK to {table}: every row is checked "
                        "under an exclusive lock",
                        HAZARD,
                        key,
                    )
                )
            found += _calls(column, f"the new column {table}.{column.colname}")
        elif sub in _SAFE_ALTER:
            found += _calls(cmd.def_, f"ALTER TABLE {table}")
        else:
            detail = AlterTableType(sub).name.removeprefix("AT_") if sub is not None else "?"
            hit = _unclassified(stmt, f"{detail} on {table}")
            found.append(Hit(hit.rule, hit.kind, hit.target, hit.message, hit.severity))
    return found


_DROP_RULES: dict[ObjectType | None, str] = {
    ObjectType.OBJECT_TABLE: "ban-drop-table",
    ObjectType.OBJECT_INDEX: "ban-drop-index",
    ObjectType.OBJECT_VIEW: "ban-drop-view",
    ObjectType.OBJECT_MATVIEW: "ban-drop-view",
    ObjectType.OBJECT_SEQUENCE: "ban-drop-sequence",
    ObjectType.OBJECT_SCHEMA: "ban-drop-schema",
    ObjectType.OBJECT_TYPE: "ban-drop-type",
    ObjectType.OBJECT_DOMAIN: "ban-drop-domain",
    ObjectType.OBJECT_FUNCTION: "ban-drop-function",
    ObjectType.OBJECT_PROCEDURE: "ban-drop-function",
    ObjectType.OBJECT_EXTENSION: "ban-drop-extension",
    ObjectType.OBJECT_POLICY: "ban-drop-policy",
    ObjectType.OBJECT_TRIGGER: "ban-drop-trigger",
}


def _partition_of(stmt: ast.CreateStmt) -> list[Hit]:
    """``CREATE TABLE … PARTITION OF parent`` locks the parent exclusively (and scans its default
    partition, whose rows may have to move)."""
    if stmt.partbound is None or not stmt.inhRelations:
        return []
    parent = stmt.inhRelations[0]
    if not isinstance(parent, ast.RangeVar):
        return []
    name = _relation(parent)
    return [
        Hit(
            "partition-of-existing-table",
            "CreatePartition",
            name,
            f"creates partition {_relation(stmt.relation)} of {name}: takes an ACCESS EXCLUSIVE lock on "
            f"{name} and scans its default partition, if any",
            HAZARD,
            (_rel_key(parent),),
        )
    ]


def _drop(stmt: ast.DropStmt) -> list[Hit]:
    word = _word(stmt.removeType)
    cascade = " with CASCADE (dependent objects go too)" if stmt.behavior == DropBehavior.DROP_CASCADE else ""
    rule = _DROP_RULES.get(stmt.removeType, "drop-object")
    return [
        Hit(
            rule,
            f"Drop{word}",
            name,
            f"drops {word.lower()} {name}{cascade}",
            DESTRUCTIVE,
            # CASCADE may take objects that exist along: never only "in the plan".
            () if cascade else (_object_key(stmt.removeType, name),),
        )
        for name in _drop_objects(stmt)
    ]


def _rename(stmt: ast.RenameStmt) -> list[Hit]:
    rtype = stmt.renameType
    if rtype in (ObjectType.OBJECT_COLUMN, ObjectType.OBJECT_TABCONSTRAINT):
        table = _relation(stmt.relation)
        old = f"{table}.{stmt.subname}"
        rule = "renaming-column" if rtype == ObjectType.OBJECT_COLUMN else "renaming-object"
        return [
            Hit(
                rule,
                "Rename",
                old,
                f"renames {old} to {stmt.newname}: the running app's queries break",
                DESTRUCTIVE,
                (_rel_key(stmt.relation),),
            )
        ]
    if stmt.relation is not None:
        old = _relation(stmt.relation)
        key = _rel_key(stmt.relation)
    else:
        obj = stmt.object
        old = _name(obj) if isinstance(obj, tuple | list) else str(getattr(obj, "sval", obj))
        key = _object_key(rtype, old)
    rule = "renaming-table" if rtype == ObjectType.OBJECT_TABLE else "renaming-object"
    return [
        Hit(
            rule,
            "Rename",
            old,
            f"renames {_word(rtype).lower()} {old} to {stmt.newname}: the running app's queries break",
            DESTRUCTIVE,
            (key,),
        )
    ]


def _safe_set(stmt: ast.VariableSetStmt) -> bool:
    return (stmt.name or "").lower() in _SAFE_SETTINGS


def _statement(stmt: object) -> list[Hit]:
    """The hits of one parsed statement, without plan context. No hit: of a kind known to be safe."""
    if isinstance(stmt, ast.TransactionStmt):
        return [] if stmt.kind in _SAFE_TRANSACTION else [_unclassified(stmt)]
    if isinstance(stmt, ast.VariableSetStmt):
        return [] if _safe_set(stmt) else [_unclassified(stmt, f"SET {stmt.name}")]
    if isinstance(stmt, ast.VariableShowStmt | ast.CommentStmt | ast.CreateExtensionStmt):
        return []
    if isinstance(stmt, ast.CreateStmt):  # defaults and checks are not evaluated on creation
        return _partition_of(stmt)
    if isinstance(
        stmt,
        ast.CreateSeqStmt
        | ast.CompositeTypeStmt
        | ast.CreateEnumStmt
        | ast.CreateRangeStmt
        | ast.CreateDomainStmt,
    ):
        return []
    if isinstance(stmt, ast.ViewStmt):
        if stmt.replace:
            return [
                Hit(
                    "ban-replace-view",
                    "ReplaceView",
                    _relation(stmt.view),
                    f"replaces view {_relation(stmt.view)}: what the running app reads changes",
                    DESTRUCTIVE,
                    (_rel_key(stmt.view),),
                )
            ]
        return []
    if isinstance(stmt, ast.CreateSchemaStmt):
        return [hit for elt in stmt.schemaElts or () for hit in _statement(elt)]
    if isinstance(stmt, ast.IndexStmt):
        return _calls((stmt.indexParams, stmt.whereClause), f"the index on {_relation(stmt.relation)}")
    if isinstance(stmt, ast.CreateTableAsStmt):
        return _calls(stmt.query, "CREATE … AS") + _nested_dml(getattr(stmt.query, "withClause", None))
    if isinstance(stmt, ast.SelectStmt):
        hits = _nested_dml(stmt.withClause) + _calls(stmt, "a SELECT")
        if stmt.lockingClause:
            hits.append(_unclassified(stmt, "FOR UPDATE/SHARE"))
        return hits
    if isinstance(stmt, ast.InsertStmt):
        hits = _nested_dml(stmt.withClause) + _calls(stmt, f"INSERT INTO {_relation(stmt.relation)}")
        conflict = stmt.onConflictClause
        if (
            conflict is not None
            and conflict.action is not None
            and conflict.action.name == "ONCONFLICT_UPDATE"
        ):
            table = _relation(stmt.relation)
            hits.append(
                Hit(
                    "update-rows",
                    "Update",
                    table,
                    f"overwrites existing rows of {table} (ON CONFLICT DO UPDATE)",
                    DESTRUCTIVE,
                    (_rel_key(stmt.relation),),
                )
            )
        return hits
    if isinstance(stmt, ast.AlterEnumStmt):
        name = _name(stmt.typeName or ())
        if stmt.oldVal is not None:
            return [
                Hit(
                    "renaming-enum-value",
                    "Rename",
                    f"{name}.{stmt.oldVal}",
                    f"renames value {stmt.oldVal!r} of type {name} to {stmt.newVal!r}: "
                    "rows and the running app keep the old word",
                    DESTRUCTIVE,
                    (_key("type", name),),
                )
            ]
        return []  # ADD VALUE
    if isinstance(stmt, ast.DropStmt):
        return _drop(stmt)
    if isinstance(stmt, ast.DropdbStmt):
        return [
            Hit(
                "ban-drop-database",
                "DropDatabase",
                str(stmt.dbname),
                f"drops database {stmt.dbname}",
                DESTRUCTIVE,
            )
        ]
    if isinstance(stmt, ast.DropOwnedStmt | ast.DropRoleStmt | ast.DropTableSpaceStmt):
        word = _stmt_kind(stmt)
        return [
            Hit("drop-object", word, word, f"{word}: drops objects or access of existing roles", DESTRUCTIVE)
        ]
    if isinstance(stmt, ast.AlterTableStmt):
        return _alter_table(stmt)
    if isinstance(stmt, ast.TruncateStmt):
        rule = "ban-truncate-cascade" if stmt.behavior == DropBehavior.DROP_CASCADE else "truncate-table"
        return [
            Hit(
                rule,
                "Truncate",
                _relation(rel),
                f"empties table {_relation(rel)}",
                DESTRUCTIVE,
                () if rule == "ban-truncate-cascade" else (_rel_key(rel),),
            )
            for rel in stmt.relations or ()
        ]
    if isinstance(stmt, ast.DeleteStmt):
        table = _relation(stmt.relation)
        where = stmt.whereClause is not None
        hit = Hit(
            "delete-rows" if where else "delete-all-rows",
            "Delete" if where else "DeleteAll",
            table,
            f"deletes rows of {table}" if where else f"deletes every row of {table} (no WHERE)",
            DESTRUCTIVE,
            (_rel_key(stmt.relation),),
        )
        return [hit, *_nested_dml(stmt.withClause), *_calls(stmt, f"DELETE FROM {table}")]
    if isinstance(stmt, ast.UpdateStmt):
        table = _relation(stmt.relation)
        where = stmt.whereClause is not None
        hit = Hit(
            "update-rows" if where else "update-all-rows",
            "Update" if where else "UpdateAll",
            table,
            f"overwrites values of {table}" if where else f"updates every row of {table} (no WHERE)",
            DESTRUCTIVE,
            (_rel_key(stmt.relation),),
        )
        return [hit, *_nested_dml(stmt.withClause), *_calls(stmt, f"UPDATE {table}")]
    if isinstance(stmt, ast.RenameStmt):
        return _rename(stmt)
    if isinstance(stmt, ast.GrantStmt) and not stmt.is_grant:
        return [
            Hit(
                "ban-revoke",
                "Revoke",
                "REVOKE",
                "revokes privileges: the running app may lose access",
                DESTRUCTIVE,
            )
        ]
    if isinstance(stmt, ast.DoStmt):
        return [
            Hit(
                UNCLASSIFIED_RULE,
                "Unclassified",
                "Do",
                "a DO block runs procedural code that was not checked",
                UNCLASSIFIED,
            )
        ]
    if isinstance(stmt, ast.CopyStmt):
        source = "PROGRAM" if stmt.is_program else ("a file" if stmt.filename else "STDIN/STDOUT")
        return [_unclassified(stmt, f"{'FROM' if stmt.is_from else 'TO'} {source}")]
    return [_unclassified(stmt)]


def classify(statement: str) -> list[Hit]:
    """Every finding of one statement, without plan context (empty: of a kind known to be safe)."""
    try:
        parsed = pglast.parse_sql(statement)
    except pglast.parser.ParseError as exc:
        return [
            Hit(
                UNPARSED_RULE,
                "Unparsed",
                "?",
                f"PostgreSQL's parser rejects this statement ({exc}); it was not checked",
                UNCLASSIFIED,
            )
        ]
    hits = [hit for raw in parsed for hit in _statement(raw.stmt)]
    return list(dict.fromkeys(hits))  # a call inside a WITH is seen from both sides: once


# ---------------------------------------------------------------- plan context


def _subject(stmt: object) -> tuple[str, tuple[str, ...]]:
    """The object a squawk rule speaks of in this statement: its name and key."""
    if isinstance(stmt, ast.AlterTableStmt | ast.IndexStmt | ast.CreateStmt | ast.RenameStmt):
        rv = stmt.relation
        if rv is not None:
            return _relation(rv), (_rel_key(rv),)
    if isinstance(stmt, ast.DropStmt):
        names = _drop_objects(stmt)
        return ", ".join(names), tuple(_object_key(stmt.removeType, n) for n in names)
    return _stmt_kind(stmt), ()


def subject(statement: str) -> tuple[str, tuple[str, ...]]:
    """Name and keys of what ``statement`` mainly acts on (for findings that come without one)."""
    try:
        parsed = pglast.parse_sql(statement)
    except pglast.parser.ParseError:
        return "?", ()
    if len(parsed) != 1:
        return "?", ()
    return _subject(parsed[0].stmt)


_INDEX_CONSTRAINTS = (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_EXCLUSION)


def _makes_index(con: object) -> bool:
    """A named PRIMARY KEY, UNIQUE or EXCLUDE constraint creates an index of its name (or fails)."""
    return isinstance(con, ast.Constraint) and bool(con.conname) and con.contype in _INDEX_CONSTRAINTS


class Created:
    """Objects created by the plan so far (not ``IF NOT EXISTS``: that one may have existed)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def holds(self, keys: Sequence[str]) -> bool:
        """Whether every key names an object created earlier in the plan (or inside a schema that was)."""
        return bool(keys) and all(self._holds(k) for k in keys)

    def _holds(self, key: str) -> bool:
        if key in self.keys:
            return True
        kind, _, name = key.partition(":")
        schema = name.split(".", 1)[0] if kind in ("rel", "type") else ""
        return bool(schema) and f"schema:{schema}" in self.keys

    def note(self, statement: str) -> None:
        try:
            parsed = pglast.parse_sql(statement)
        except pglast.parser.ParseError:
            return
        for raw in parsed:
            self._note(raw.stmt)

    def _note(self, stmt: object) -> None:
        add = self.keys.add
        if isinstance(stmt, ast.CreateStmt) and not stmt.if_not_exists:
            add(_rel_key(stmt.relation))
            for elt in stmt.tableElts or ():
                cons = elt.constraints if isinstance(elt, ast.ColumnDef) else (elt,)
                for con in cons or ():
                    if _makes_index(con):
                        add(_key("rel", str(con.conname)))  # a named PK/UNIQUE makes an index of that name
        elif isinstance(stmt, ast.IndexStmt) and not stmt.if_not_exists and stmt.idxname:
            schema = stmt.relation.schemaname if stmt.relation is not None else None
            add(_key("rel", f"{schema}.{stmt.idxname}" if schema else stmt.idxname))
        elif isinstance(stmt, ast.CreateSeqStmt) and not stmt.if_not_exists:
            add(_rel_key(stmt.sequence))
        elif isinstance(stmt, ast.ViewStmt) and not stmt.replace:
            add(_rel_key(stmt.view))
        elif isinstance(stmt, ast.CreateTableAsStmt) and not stmt.if_not_exists and stmt.into is not None:
            add(_rel_key(stmt.into.rel))
        elif isinstance(stmt, ast.CompositeTypeStmt):
            add(_key("type", _relation(stmt.typevar)))
        elif isinstance(stmt, ast.CreateEnumStmt | ast.CreateRangeStmt):
            add(_key("type", _name(stmt.typeName or ())))
        elif isinstance(stmt, ast.CreateDomainStmt):
            add(_key("type", _name(stmt.domainname or ())))
        elif isinstance(stmt, ast.CreateSchemaStmt):
            if not stmt.if_not_exists and stmt.schemaname:
                add(f"schema:{stmt.schemaname}")
            for elt in stmt.schemaElts or ():
                self._note(elt)
        elif isinstance(stmt, ast.AlterTableStmt):
            for cmd in stmt.cmds or ():
                con = cmd.def_ if isinstance(cmd, ast.AlterTableCmd) else None
                if _makes_index(con) and self.holds((_rel_key(stmt.relation),)):
                    add(_key("rel", str(getattr(con, "conname", ""))))
        elif isinstance(stmt, ast.RenameStmt) and stmt.relation is not None:
            old = _rel_key(stmt.relation)
            if stmt.renameType in _RELATION_OBJECTS and old in self.keys:
                self.keys.discard(old)
                schema = stmt.relation.schemaname
                add(_key("rel", f"{schema}.{stmt.newname}" if schema else str(stmt.newname)))
        elif isinstance(stmt, ast.DropStmt):
            for name in _drop_objects(stmt):
                self.keys.discard(_object_key(stmt.removeType, name))


# What ``analyse`` asks for lock and downtime hazards: (migration, statement index) → hits.
HazardSource = Callable[[Sequence[Step]], dict[tuple[str, int], list[Hit]]]


def analyse(
    steps: Iterable[Step], ignore: Iterable[str] = (), hazards: HazardSource | None = None
) -> list[Finding]:
    """Findings for every statement of every step, in plan order; rules in ``ignore`` are left out.
    ``hazards`` adds the lock and downtime findings of another linter (squawk) per statement."""
    steps = list(steps)
    ignored = set(ignore)
    extra = hazards(steps) if hazards is not None else {}
    created = Created()
    findings: list[Finding] = []
    for step in steps:
        for index, statement in enumerate(step.statements):
            hits = classify(statement)
            seen = {h.rule for h in hits}
            for hit in extra.get((step.migration, index), ()):
                if hit.rule not in seen:
                    hits.append(hit)
                    seen.add(hit.rule)
            for hit in hits:
                if hit.rule in ignored:
                    continue
                severity = IN_PLAN if created.holds(hit.objects) else hit.severity
                findings.append(
                    Finding(step.migration, index, hit.kind, hit.target, hit.message, hit.rule, severity)
                )
            created.note(statement)
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
        if getattr(stmt, "withClause", None) is not None or _unknown_calls(stmt):
            return False  # a version-table write that does more is shown, not hidden
        if isinstance(stmt, ast.CreateStmt | ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
            if not isinstance(relation, ast.RangeVar) or relation.relname != table:
                return False
        else:
            return False
    return bool(parsed)
