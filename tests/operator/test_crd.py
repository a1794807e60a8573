"""The CRD, offline: structural schema, examples accepted, every bad-CR case rejected for its reason."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from dbmigrate_operator import constants as c
from dbmigrate_operator.status import Phase
from tests.operator.crd_support import (
    ACCEPTED_VERSIONS,
    CRD_PATH,
    EXAMPLES,
    CelError,
    InvalidCase,
    cel_eval,
    crd,
    example_migrations,
    invalid_cases,
    schema,
    validate,
    with_version,
)

CASES = invalid_cases()


def test_crd_is_a_valid_custom_resource_definition() -> None:
    kubernetes_validate.validate(crd(), "1.29.0", strict=True)


def test_names_scope_and_printer_columns() -> None:
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == f"{c.PLURAL}.{c.GROUP}"
    assert (spec["group"], spec["scope"], spec["names"]["kind"]) == (c.GROUP, "Namespaced", c.KIND)
    assert spec["names"]["plural"] == c.PLURAL
    assert {"dbmigration", "dbmigrations", "dbm"} <= set(spec["names"]["shortNames"])
    (version,) = spec["versions"]
    assert version["name"] == c.VERSION
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {col["name"]: col for col in version["additionalPrinterColumns"]}
    assert list(columns)[:4] == ["Ready", "Version", "Phase", "Age"]
    assert columns["Image"]["priority"] == 1
    assert columns["Image"]["jsonPath"] == ".spec.image"
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for key, sub in (node.get("properties") or {}).items():
        out += _walk(sub, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural() -> None:
    """Every node typed (or int-or-string), no free-form objects, every CEL rule with a message."""
    for path, node in _walk(schema()):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        for rule in node.get("x-kubernetes-validations") or []:
            assert rule.get("message", "").strip(), (path, rule)
            if "$ref" in rule["rule"]:
                pytest.fail(path)
    # the YAML is plain: no anchors or aliases that some tools (Helm templating, kustomize) mangle
    assert "&" not in CRD_PATH.read_text().split("openAPIV3Schema")[1].replace("&&", "")


def test_status_fields_match_what_the_operator_writes() -> None:
    props = schema()["properties"]["status"]["properties"]
    assert {
        "observedGeneration",
        "phase",
        "currentVersion",
        "appliedVersions",
        "appliedCount",
        "ancestry",
        "lastRun",
        "conditions",
    } <= set(props)
    assert props["phase"]["enum"] == [phase.value for phase in Phase]
    assert {
        "hash",
        "job",
        "target",
        "pending",
        "pendingCount",
        "statements",
        "opaque",
        "findings",
        "findingsCount",
        "reviewCount",
        "lintIgnore",
        "omitted",
        "sql",
        "sqlOmitted",
        "approvedBy",
        "image",
        "imageID",
    } == set(props["plan"]["properties"])
    assert {"heads", "packed", "known", "omitted"} <= set(props["ancestry"]["properties"])
    assert {
        "job",
        "runHash",
        "image",
        "command",
        "startedAt",
        "completedAt",
        "outcome",
        "applied",
        "message",
        "appliedCount",
    } <= set(props["lastRun"]["properties"])


@pytest.mark.parametrize(("name", "obj"), example_migrations(), ids=[n for n, _ in example_migrations()])
def test_examples_are_accepted(name: str, obj: dict[str, Any]) -> None:
    assert validate(obj) == []


@pytest.mark.parametrize(("tool", "field", "value"), ACCEPTED_VERSIONS)
def test_versions_each_tool_accepts(tool: str, field: str, value: str) -> None:
    assert validate(with_version(tool, field, value)) == []


def test_every_example_file_parses_and_its_other_objects_are_valid() -> None:
    assert len(EXAMPLES) >= 3
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] in ("Secret", "Namespace"):
                kubernetes_validate.validate(doc, "1.29.0", strict=True)


def test_there_are_many_kinds_of_bad_crs() -> None:
    assert len(CASES) >= 10
    assert len({case.offline for case in CASES}) >= 5


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_cr_is_rejected_for_its_reason(case: InvalidCase) -> None:
    errors = validate(case.obj)
    assert errors, f"{case.name} was accepted"
    matching = [e for e in errors if e[0] == case.field and e[1] == case.offline]
    assert matching, errors
    if case.offline == "cel":  # our own message, word for word as the API server will say it
        assert any(case.expect in message for _, _, message in matching), matching


def test_cel_subset_evaluator_can_say_no() -> None:
    """The evaluator itself: a rule that is false is false, an unknown construct is an error."""
    assert cel_eval("has(self.a) && self.a.contains(':')", {"a": "x:y"})
    assert not cel_eval("has(self.a) && self.a.contains(':')", {"a": "xy"})
    assert not cel_eval("!(self in ['A', 'B'])", "A")
    with pytest.raises(CelError):
        cel_eval("self.exists(x, x > 1)", [1])
    with pytest.raises(CelError):
        cel_eval("self.missing == 1", {})


@pytest.mark.parametrize(
    "locking",
    [
        {"timeout": "3s", "retries": 20, "budget": "10m"},
        {"timeout": "0"},
        {"timeout": "250ms"},
        {"budget": "1.5h"},
    ],
)
def test_spec_locking_is_accepted(locking: dict[str, Any]) -> None:
    cr = {
        "apiVersion": f"{c.GROUP}/{c.VERSION}",
        "kind": c.KIND,
        "metadata": {"name": "ok", "namespace": "default"},
        "spec": {
            "image": "registry.example.com/m:1",
            "locking": locking,
            "database": {"urlSecretRef": {"name": "shop-db", "key": "url"}},
        },
    }
    assert validate(cr) == []
