"""No import circle in the operator package (issue 21): a module can be read, and changed, after
the ones it imports. Type-only imports (`if TYPE_CHECKING:`) count: they are a circle for a reader."""

from __future__ import annotations

import ast
import pathlib

import dbmigrate_operator

ROOT = pathlib.Path(dbmigrate_operator.__file__).parent
PACKAGE = dbmigrate_operator.__name__


def module_name(path: pathlib.Path) -> str:
    parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The package's modules `path` imports at its top level (functions' lazy imports not counted)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.ImportFrom) and sub.module:
                for alias in sub.names:
                    name = f"{sub.module}.{alias.name}"
                    found.add(name if name in modules else sub.module)
            elif isinstance(sub, ast.Import):
                found.update(alias.name for alias in sub.names)
    return found & modules


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []

    def visit(path: list[str]) -> None:
        for dep in sorted(graph[path[-1]]):
            if dep in path:
                found.append([*path[path.index(dep) :], dep])
            elif dep > path[0]:  # each circle once, from its smallest module
                visit([*path, dep])

    for start in sorted(graph):
        visit([start])
    return found


# The modules the controller's decision is split into (reconcile.py is their table of contents).
DECISION = (
    "actions",
    "approval_step",
    "deletion",
    "diagnosis",
    "history",
    "jobstate",
    "record",
    "results",
    "run_steps",
    "spec_rules",
)


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    return {name: module_imports(path, modules) - {name} for name, path in paths.items()}


def test_the_operator_package_has_no_import_circle() -> None:
    graph = import_graph()
    assert graph[f"{PACKAGE}.gating.release"], "the graph was built"
    assert {f"{PACKAGE}.{name}" for name in DECISION} <= set(graph), "the decision's modules are in it"
    assert circles(graph) == []


def test_reconcile_is_on_top_of_the_decision_modules() -> None:
    """reconcile.py reads as the table of contents of the decision: every module that decides a part
    is reached from it, none of them imports it back, and none does I/O (no kopf, no API client)."""
    graph = import_graph()
    reconcile = f"{PACKAGE}.reconcile"
    reached: set[str] = set()
    todo = [reconcile]
    while todo:
        for dep in graph[todo.pop()] - reached:
            reached.add(dep)
            todo.append(dep)
    io = {
        f"{PACKAGE}.{name}"
        for name in (
            "kube",
            "rawapi",
            "handlers",
            "controller",
            "writes",
            "leadership",
            "gating",
            "gating.kube",
        )
    }
    for name in DECISION:
        module = f"{PACKAGE}.{name}"
        assert module in reached, name
        assert reconcile not in graph[module], name
        assert not graph[module] & io, (name, graph[module] & io)
        source = (ROOT / f"{name}.py").read_text()
        assert "import kopf" not in source, name
        assert "import kubernetes" not in source, name


def test_every_api_call_goes_through_the_one_client() -> None:
    """rawapi.py is the one API client (the ApiClient, its timeout, error descriptions, requests) and
    stands at the bottom: it imports nothing of the package. The facades name calls over it (gating's
    extends the controller's); test_apiclient.py checks that no other module builds an ApiClient."""
    graph = import_graph()
    rawapi = f"{PACKAGE}.rawapi"
    assert graph[rawapi] == set()
    for name in ("kube", "leadership", "gating.server"):
        assert rawapi in graph[f"{PACKAGE}.{name}"], name
    assert f"{PACKAGE}.kube" in graph[f"{PACKAGE}.gating.kube"]


def test_a_circle_is_found() -> None:
    assert circles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b", "a"]]
