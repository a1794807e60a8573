"""An Alembic project read without Alembic: the revision graph and the version table, from the source.

The no-op deploy (the database already at the image's head) is the common case, and importing
Alembic and SQLAlchemy and running env.py costs more than the whole decision. So the runner first
reads ``alembic.ini`` (configparser), every revision file and env.py as syntax trees (``ast``,
nothing executed), and compares the heads with the version table on its own connection. Only when
everything it needs is a literal it can read does it answer; anything else (a computed revision
id or version table, ``depends_on``, ``version_locations``, sourceless files, ``**kwargs`` to
``configure``) returns None, and the full path (Alembic's own API and env.py) decides.

Reading the version table over the runner's own session is only right when env.py's session
finds the same table. So the shortcut is also refused when env.py, alembic.ini or a module of the
project that env.py imports (followed through the project's own imports) mentions what moves it:
``search_path``, ``schema_translate_map``, ``SET SCHEMA``, ``set_config``, ``SET ROLE`` or
``SESSION AUTHORIZATION``; and when env.py may connect to another database than the runner's
(:func:`own_connection`: it builds its own URL, then only the full path's identity check can tell),
or reads its revisions from elsewhere than alembic.ini says (:func:`own_locations`).
What it cannot see (a library doing it, a URL from the environment with
``options=-csearch_path``) is why ``DBMIGRATE_FAST_NOOP=false`` turns the shortcut off.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VERSION_TABLE = "alembic_version"
# Text that means env.py's session may find another version table than the runner's session does.
_UNSAFE = re.compile(
    r"search_path|schema_translate_map|\bset\s+schema\b|set_config|"
    r"\bset\s+(?:session\s+|local\s+)?role\b|session\s+authorization",
    re.IGNORECASE,
)
# Import statements, for following env.py into the project's own modules.
_FROM_IMPORT = re.compile(
    r"^[ \t]*from[ \t]+(?P<dots>\.*)(?P<module>[\w.]*)[ \t]+import[ \t]+(?P<names>\([^)]*\)|[^\n#;]*)",
    re.MULTILINE,
)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+(?P<modules>[\w. \t,]+)", re.MULTILINE)
# At most this many project modules are read when following env.py's imports.
_MAX_MODULES = 400
# Alembic's own rule for which files in a versions directory are revision scripts.
_SOURCE = re.compile(r"(?!\.\#|__init__)(.*\.py)$")


@dataclass(frozen=True)
class Scan:
    """What the source says: the version table and the revision graph."""

    table: str
    schema: str | None
    down: dict[str, tuple[str, ...]]  # revision -> its down revisions
    is_async: bool = False  # env.py builds an async engine

    @property
    def heads(self) -> tuple[str, ...]:
        below = {rev for downs in self.down.values() for rev in downs}
        return tuple(sorted(rev for rev in self.down if rev not in below))

    def ancestry(self, heads: tuple[str, ...]) -> list[str] | None:
        """``heads`` and everything below them, oldest first (None when one is not in the graph)."""
        return oldest_first(self.down, heads)


def oldest_first(down: Mapping[str, tuple[str, ...]], heads: Iterable[str]) -> list[str] | None:
    """``heads`` and their ancestors in ``down``, every revision after all of its ancestors, the
    heads last; deterministic (ids sorted where the graph leaves a choice), so the full path and
    the no-op path list a history in the same order. None when a revision is not in ``down``."""
    sizes: dict[str, int] = {}
    for head in set(heads):
        size = _history_size(down, head)
        if size is None:
            return None
        sizes[head] = size
    seen: set[str] = set()
    order: list[str] = []
    # The head with the longest history goes last (it is `current`: a merge, not an older branch).
    stack = [(head, False) for head in sorted(sizes, key=lambda h: (sizes[h], h), reverse=True)]
    while stack:
        rev, expanded = stack.pop()
        if expanded:
            order.append(rev)
            continue
        if rev in seen:
            continue
        if rev not in down:
            return None
        seen.add(rev)
        stack.append((rev, True))
        stack.extend((below, False) for below in sorted(down[rev], reverse=True) if below not in seen)
    return order


def _history_size(down: Mapping[str, tuple[str, ...]], head: str) -> int | None:
    """How many revisions ``head`` and its ancestors are (None when one is not in ``down``)."""
    seen = {head}
    todo = [head]
    while todo:
        rev = todo.pop()
        if rev not in down:
            return None
        for below in down[rev]:
            if below not in seen:
                seen.add(below)
                todo.append(below)
    return len(seen)


def unsafe(paths: Iterable[Path], roots: list[Path]) -> str | None:
    """Why reading the version table from the runner's session may not be what env.py reads: the
    first of ``paths`` (and of the project modules they import, found under ``roots``) that
    mentions a ``search_path`` change or the like, as "file: what"; None when none does."""
    todo = list(paths)
    seen: set[Path] = set()
    while todo and len(seen) < _MAX_MODULES:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        found = _UNSAFE.search(text)
        if found:
            return f"{path.name}: {found.group(0)}"
        if path.suffix == ".py":
            todo.extend(_local_imports(text, path, roots))
    return None if not todo else f"more than {_MAX_MODULES} project modules imported"


def _local_imports(text: str, path: Path, roots: list[Path]) -> list[Path]:
    """The files of the project (under ``roots``) that the module ``text`` imports, packages included.
    Read with a pattern rather than parsed (a no-op may follow dozens of model modules): an import
    written in a string or comment is followed too, which only makes the check more careful."""
    names: list[str] = []
    for found in _FROM_IMPORT.finditer(text):
        dots, module = len(found["dots"]), found["module"]
        aliases = [a.split()[0] for a in found["names"].replace("(", " ").split(",") if a.strip()]
        if dots:  # relative: from the importing file's package
            base = path.parent
            for _ in range(dots - 1):
                base = base.parent
            parts = module.split(".") if module else []
            names += [str(base.joinpath(*parts, alias)) for alias in aliases if alias != "*"]
            names.append(str(base.joinpath(*parts)))
        elif module:
            names += [module, *(f"{module}.{alias}" for alias in aliases if alias != "*")]
    for found in _IMPORT.finditer(text):
        names += [part.split()[0] for part in found["modules"].split(",") if part.strip()]
    files: list[Path] = []
    for name in names:
        dotted = name.split(".")
        candidates = [Path(name)] if os.path.isabs(name) else [root.joinpath(*dotted) for root in roots]
        for base in candidates:
            for file in (base.with_suffix(".py"), base / "__init__.py"):
                if file.is_file():
                    files.append(file.resolve())
            if not os.path.isabs(name):  # the packages on the way are imported too
                for parent in base.parents:
                    if parent in roots or parent == parent.parent:
                        break
                    if (parent / "__init__.py").is_file():
                        files.append((parent / "__init__.py").resolve())
    return files


def _literal(node: ast.expr | None) -> object:
    try:
        return ast.literal_eval(node) if node is not None else None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL


_NOT_LITERAL = object()


def _module_values(path: Path, names: tuple[str, ...]) -> dict[str, object] | None:
    """Module-level ``name = <literal>`` (or annotated) assignments; None when unreadable."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    found: dict[str, object] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name) and target.id in names:
                found[target.id] = _literal(value)
    return found


def _revision(path: Path) -> tuple[str, tuple[str, ...]] | None:
    values = _module_values(path, ("revision", "down_revision", "depends_on"))
    if values is None:
        return None
    revision, down, depends = values.get("revision"), values.get("down_revision"), values.get("depends_on")
    if not isinstance(revision, str) or not revision or depends not in (None, (), []):
        return None  # depends_on changes what "head" means: Alembic's own graph decides
    if down is None:
        return revision, ()
    if isinstance(down, str):
        return revision, (down,)
    if isinstance(down, tuple | list) and all(isinstance(d, str) for d in down):
        return revision, tuple(str(d) for d in down)
    return None


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


URL_OPTION = "sqlalchemy.url"
# How env.py reaches the database the runner hands it: the runner's sqlalchemy.url read through
# engine_from_config (Alembic's templates), or the runner's connection in config.attributes.
_RUNNER_ENGINE = ("engine_from_config", "async_engine_from_config")
# How env.py makes a connection of its own, to whatever URL it built.
_OWN_ENGINE = ("create_engine", "create_async_engine")


def own_connection(tree: ast.AST) -> str | None:
    """Why env.py may connect to another database than the one the runner locked, or None.

    The shortcut reads the version table of the runner's database; an env.py that builds its own
    URL (from its own settings: ``POSTGRES_*``, ``DB_*``) would migrate another one, and only the
    full path's identity check, which runs env.py, can tell. So the shortcut needs env.py to take
    the runner's URL or connection visibly and never to write ``sqlalchemy.url`` itself."""
    takes_runners = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name in _OWN_ENGINE:
                return f"env.py: {name}()"
            if name in ("set_main_option", "set_section_option") and URL_OPTION in map(_literal, node.args):
                return f"env.py: {name}({URL_OPTION!r}, ...)"
            takes_runners = takes_runners or name in _RUNNER_ENGINE
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
            if _literal(node.slice) == URL_OPTION:
                return f"env.py: sets [{URL_OPTION!r}]"
        elif isinstance(node, ast.Dict) and URL_OPTION in map(_literal, filter(None, node.keys)):
            return f"env.py: a dict with {URL_OPTION!r}"
        elif isinstance(node, ast.Attribute) and node.attr == "attributes":
            takes_runners = True
    return None if takes_runners else "env.py: neither engine_from_config() nor config.attributes"


def own_locations(tree: ast.AST) -> str | None:
    """Why the revisions env.py runs may not be the ones under alembic.ini's locations, or None:
    env.py touches ``context.script.version_locations`` (one versions directory per dialect, a
    plugin's revisions added), and Alembic reads the revisions only after env.py did."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "version_locations":
            return "env.py: script.version_locations"
    return None


def _version_table(tree: ast.AST) -> tuple[str, str | None] | None:
    """The one (version_table, version_table_schema) every ``configure(...)`` call passes as literals."""
    tables: set[tuple[str, str | None]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if _call_name(node) != "configure":
            continue
        kwargs = {kw.arg: kw.value for kw in node.keywords}
        if None in kwargs:  # **options: cannot tell
            return None
        table = _literal(kwargs["version_table"]) if "version_table" in kwargs else DEFAULT_VERSION_TABLE
        schema = _literal(kwargs.get("version_table_schema"))
        if not isinstance(table, str) or not (schema is None or isinstance(schema, str)):
            return None
        tables.add((table, schema))
    return next(iter(tables)) if len(tables) == 1 else None


# An env.py that builds an async engine needs an async driver in sqlalchemy.url.
ASYNC_MARKERS = ("async_engine_from_config", "create_async_engine", "AsyncEngine", "AsyncConnection")

_SEPARATORS = {"space": " ", "newline": "\n", "os": os.pathsep, ":": ":", ";": ";"}


def _locations(options: dict[str, str]) -> list[str] | None:
    """version_locations split as Alembic splits it ([] when unset; None when it cannot tell)."""
    text = options.get("version_locations", "")
    if not text.strip():
        return []
    name = options.get("path_separator", options.get("version_path_separator"))
    if name is None:
        parts = re.split(r", *|(?: +)", text)  # Alembic's legacy splitting
    elif name in _SEPARATORS:
        parts = [part.strip() for part in text.split(_SEPARATORS[name])]
    else:
        return None
    parts = [part for part in parts if part]
    if any(":" in part for part in parts):  # a package resource ("pkg:dir"): Alembic resolves it
        return None
    return parts


def _path(location: str, cwd: Path) -> Path:
    path = Path(location)
    return path if path.is_absolute() else cwd / path


def scan(ini: Path, cwd: Path, reasons: list[str] | None = None) -> Scan | None:
    """The project behind ``ini`` as far as literals tell, or None (then Alembic itself must read it).
    ``cwd``: where Alembic would run (a relative script_location resolves against it). Why the
    source is not to be trusted, when that is the reason, is appended to ``reasons``."""
    parser = configparser.ConfigParser(defaults={"here": str(ini.parent.resolve())})
    try:
        if not parser.read(ini, encoding="utf-8") or not parser.has_section("alembic"):
            return None
        options = dict(parser.items("alembic"))
    except (configparser.Error, OSError, UnicodeDecodeError):
        return None
    location = options.get("script_location", "").strip()
    if not location or ":" in location:  # a package resource ("pkg:dir"): Alembic resolves it
        return None
    for unsupported in ("sourceless", "recursive_version_locations"):
        if options.get(unsupported, "").strip().lower() not in ("", "false"):
            return None
    script_dir = _path(location, cwd)
    env_py = script_dir / "env.py"
    listed = _locations(options)
    if listed is None or not env_py.is_file():
        return None
    roots = [cwd.resolve(), script_dir.resolve()]
    prepend = options.get("prepend_sys_path", "").replace(os.pathsep, " ").split()
    roots += [_path(entry, cwd).resolve() for entry in prepend]
    why = unsafe([ini, env_py], roots)
    if why is not None:
        if reasons is not None:
            reasons.append(why)
        return None
    try:
        text = env_py.read_text(encoding="utf-8")
        tree = ast.parse(text, str(env_py))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    why = own_connection(tree) or own_locations(tree)
    if why is not None:
        if reasons is not None:
            reasons.append(why)
        return None
    table = _version_table(tree)
    if table is None:
        return None
    locations = [_path(loc, cwd) for loc in listed] or [script_dir / "versions"]
    files: dict[Path, Path] = {}  # Alembic skips a directory listed twice, and absent ones
    for folder in locations:
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                files.setdefault(path.resolve(), path)
    down: dict[str, tuple[str, ...]] = {}
    for path in files.values():
        if not path.is_file() or not _SOURCE.match(path.name):
            continue
        found = _revision(path)
        if found is None or found[0] in down:
            return None
        down[found[0]] = found[1]
    if not down or any(d not in down for downs in down.values() for d in downs):
        return None
    return Scan(table[0], table[1], down, any(marker in text for marker in ASYNC_MARKERS))
