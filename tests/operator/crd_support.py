"""Offline checks of the CRD: its OpenAPI schema with a JSON-schema validator, its CEL rules with a
small evaluator for the subset of CEL the CRD uses, and the bad-CR cases as data.

The real kube-apiserver is the authority; the e2e suite applies the same cases there
(:func:`invalid_cases` gives each case's object and the message fragment the API server returns).
This offline pass catches a broken rule or schema in milliseconds.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "databasemigrations.dbmigrate.dev.yaml"
INVALID_DIR = Path(__file__).with_name("invalid_crs")
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def crd() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return data


def schema() -> dict[str, Any]:
    (version,) = crd()["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


@dataclass(frozen=True)
class InvalidCase:
    name: str
    obj: dict[str, Any]
    expect: str  # a fragment of the API server's rejection message
    field: str  # dotted path of the failing field ("" = the object itself)
    offline: str  # jsonschema keyword that fails offline, or "cel"


def invalid_cases() -> list[InvalidCase]:
    cases = []
    for path in sorted(INVALID_DIR.glob("*.yaml")):
        text = path.read_text()
        header = dict(re.findall(r"^# (\w+): ?(.*)$", text, re.MULTILINE))
        cases.append(
            InvalidCase(
                path.stem,
                yaml.safe_load(text),
                header["expect"].strip(),
                header["field"].strip(),
                header["offline"].strip(),
            )
        )
    return cases


# (tool, field, value) the CRD must accept: Alembic ids are whatever `alembic revision --rev-id` took.
ACCEPTED_VERSIONS: list[tuple[str, str, str]] = [
    ("alembic", "target", "ae1027a6acf6"),
    ("alembic", "target", "0001_create_users"),
    ("alembic", "target", "release_2026.01"),
    ("alembic", "target", "Users_V2"),
    ("alembic", "target", "alembic:ae1027a6acf6"),
    ("alembic", "target", "orders@head"),
    ("alembic", "target", "heads"),
    ("alembic", "target", "base"),
    ("alembic", "target", "ae10"),
    ("alembic", "baseline", "0001_create_users"),
    ("alembic", "baseline", "initial_schema"),
    ("aerich", "target", "models:3_20260101120000_add_bio"),
    ("aerich", "target", "zero"),
    ("tortoise", "target", "0003_add_bio"),
    ("tortoise", "baseline", "0002_add_index"),
]


# spec.image values the CRD (and the operator's validate()) must accept: a tag, also after a registry
# port, or a digest.
ACCEPTED_IMAGES: list[str] = [
    "registry.example.com/shop-migrations:1.4.2",
    "localhost:5000/shop-migrations:1.4.2",
    "localhost:5000/team/shop-migrations:v2.0-rc.1_build",
    "shop-migrations:7",
    "registry.example.com/shop-migrations@sha256:" + "0123456789abcdef" * 4,
    "localhost:5000/shop-migrations:1.4.2@sha256:" + "0123456789abcdef" * 4,
    "registry.example.com/shop-migrations:latest@sha256:" + "0123456789abcdef" * 4,
]
# ... and values they must refuse, with the start of the reason.
REFUSED_IMAGES: list[tuple[str, str]] = [
    ("registry.example.com/shop-migrations", "spec.image must name a tag or a digest"),
    ("localhost:5000/shop-migrations", "spec.image must name a tag or a digest"),
    ("localhost:5000/team/shop-migrations", "spec.image must name a tag or a digest"),
    ("shop-migrations", "spec.image must name a tag or a digest"),
    ("shop-migrations@sha256:abc", "spec.image must name a tag or a digest"),
    ("registry.example.com/shop-migrations:latest", "spec.image must not use the :latest tag"),
    ("localhost:5000/shop-migrations:latest", "spec.image must not use the :latest tag"),
]


def with_image(image: str) -> dict[str, Any]:
    """A minimal DatabaseMigration with spec.image = image."""
    obj = with_version("aerich", "target", "zero")
    obj["spec"]["image"] = image
    return obj


def with_version(tool: str, field: str, value: str) -> dict[str, Any]:
    """A minimal DatabaseMigration with spec.<field> = value for ``tool``."""
    return {
        "apiVersion": "dbmigrate.dev/v1alpha1",
        "kind": "DatabaseMigration",
        "metadata": {"name": "ok", "namespace": "default"},
        "spec": {
            "image": "registry.example.com/m:1",
            "tool": tool,
            field: value,
            "database": {"urlSecretRef": {"name": "db", "key": "url"}},
        },
    }


def example_migrations() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "DatabaseMigration":
                out.append((f"{path.name}:{doc['metadata']['name']}", doc))
    return out


# ------------------------------------------------------------------ defaulting (as the API server does)


def apply_defaults(node: Any, sch: dict[str, Any]) -> Any:
    if isinstance(node, dict) and sch.get("type") == "object":
        props = sch.get("properties") or {}
        for key, sub in props.items():
            if key not in node and "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
            if key in node:
                node[key] = apply_defaults(node[key], sub)
        extra = sch.get("additionalProperties")
        if isinstance(extra, dict):
            for key in list(node):
                if key not in props:
                    node[key] = apply_defaults(node[key], extra)
    elif isinstance(node, list) and isinstance(sch.get("items"), dict):
        return [apply_defaults(item, sch["items"]) for item in node]
    return node


# ------------------------------------------------------------------ the CEL subset

_TOKEN = re.compile(r"\s+|'[^']*'|&&|\|\||!=|==|<=|>=|[<>!()\[\],.]|\w+")
_METHODS = {
    "contains": "__contains__",
    "endsWith": "endswith",
    "startsWith": "startswith",
    "matches": "matches",
}


class _CelString(str):
    """A string with CEL's ``matches`` (RE2, a match anywhere; our patterns mean the same in ``re``)."""

    __slots__ = ()

    def matches(self, pattern: str) -> bool:
        return re.search(pattern, self) is not None


def _cel_value(value: Any) -> Any:
    if isinstance(value, str):
        return _CelString(value)
    if isinstance(value, dict):
        return {k: _cel_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cel_value(v) for v in value]
    return value


class CelError(Exception):
    """The rule could not be evaluated (a missing field without has(), an unsupported construct)."""


def _tokens(rule: str) -> list[str]:
    out, pos = [], 0
    while pos < len(rule):
        match = _TOKEN.match(rule, pos)
        if not match:
            raise CelError(f"unsupported CEL at {rule[pos:]!r}")
        if not match.group().isspace():
            out.append(match.group())
        pos = match.end()
    return out


def _translate(tokens: list[str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "has" and tokens[i + 1] == "(":
            depth, j = 1, i + 2
            while depth:
                depth += {"(": 1, ")": -1}.get(tokens[j], 0)
                j += 1
            inner = tokens[i + 2 : j - 1]  # e.g. self . a . b
            if len(inner) < 3 or inner[-2] != ".":
                raise CelError("has() needs a field selection")
            out.append(f"_has({_translate(inner[:-2])}, {inner[-1]!r})")
            i = j
            continue
        if tok == ".":
            name = tokens[i + 1]
            if i + 2 < len(tokens) and tokens[i + 2] == "(":
                if name not in _METHODS:
                    raise CelError(f"unsupported method {name}")
                out.append(f".{_METHODS[name]}")
            else:
                out.append(f"[{name!r}]")
            i += 2
            continue
        out.append(
            {
                "&&": " and ",
                "||": " or ",
                "!": " not ",
                "size": "len",
                "true": "True",
                "false": "False",
                "in": " in ",
            }.get(tok, tok)
        )
        i += 1
    return "".join(out)


def cel_eval(rule: str, value: Any) -> bool:
    code = _translate(_tokens(rule))
    try:
        return bool(eval(code, {"__builtins__": {}}, {"self": _cel_value(value), "len": len, "_has": _has}))
    except (KeyError, TypeError) as exc:
        raise CelError(f"{rule!r} failed on {value!r}: {exc!r}") from None


def _has(obj: Any, key: str) -> bool:
    return isinstance(obj, dict) and key in obj


def cel_errors(node: Any, sch: dict[str, Any], path: str = "") -> list[tuple[str, str]]:
    errors = []
    for rule in sch.get("x-kubernetes-validations") or []:
        if not cel_eval(rule["rule"], node):
            errors.append((path, str(rule.get("message", rule["rule"])).strip()))
    if isinstance(node, dict):
        props = sch.get("properties") or {}
        for key, value in node.items():
            sub = props.get(key) or (
                sch.get("additionalProperties") if isinstance(sch.get("additionalProperties"), dict) else None
            )
            if sub:
                errors += cel_errors(value, sub, f"{path}.{key}".lstrip("."))
    elif isinstance(node, list) and isinstance(sch.get("items"), dict):
        for index, item in enumerate(node):
            errors += cel_errors(item, sch["items"], f"{path}.{index}")
    return errors


# ------------------------------------------------------------------ everything together


def validate(obj: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(dotted path, keyword or 'cel', message) for every violation; [] when the object is valid."""
    sch = schema()
    obj = apply_defaults(copy.deepcopy(obj), sch)
    validator = jsonschema.Draft202012Validator(sch)
    errors = [
        (".".join(str(p) for p in e.absolute_path), str(e.validator), e.message)
        for e in validator.iter_errors(obj)
    ]
    for err in validator.iter_errors(obj):
        if err.validator == "required":  # the API server names the missing field itself
            missing = re.findall(r"'([^']+)' is a required property", err.message)
            errors += [
                (".".join([*map(str, err.absolute_path), m]), "required", err.message) for m in missing
            ]
    if not errors:  # like the API server: CEL runs on schema-valid objects
        errors += [(path, "cel", message) for path, message in cel_errors(obj, sch)]
    return errors
