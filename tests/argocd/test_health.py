"""Argo CD health check for DatabaseMigration: health_test.yaml cases, run on real Lua."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51
import pytest
import yaml

from tests.argocd.luahealth import INVALID_STATUS_MESSAGE, HealthStatus, run_health_script

ROOT = Path(__file__).resolve().parents[2]
CHECK_DIR = ROOT / "argocd" / "resource_customizations" / "dbmigrate.dev" / "DatabaseMigration"
HEALTH_LUA = (CHECK_DIR / "health.lua").read_text()


def _cases() -> list[dict[str, Any]]:
    doc = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())
    cases: list[dict[str, Any]] = doc["tests"]
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_health_test_yaml_case(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((CHECK_DIR / case["inputPath"]).read_text())
    assert obj["apiVersion"] == "dbmigrate.dev/v1alpha1"
    assert obj["kind"] == "DatabaseMigration"
    expected = HealthStatus(case["healthStatus"]["status"], case["healthStatus"].get("message", ""))
    assert run_health_script(HEALTH_LUA, obj) == expected


def test_every_testdata_file_has_a_case() -> None:
    used = {c["inputPath"] for c in CASES}
    present = {f"testdata/{p.name}" for p in (CHECK_DIR / "testdata").glob("*.yaml")}
    assert present == used


def test_cases_cover_every_outcome_we_promise() -> None:
    assert {c["healthStatus"]["status"] for c in CASES} == {"Healthy", "Progressing", "Degraded"}


def test_degraded_only_when_a_person_is_needed_for_the_current_generation() -> None:
    """Degraded exactly when Stalled=True, or a plan waits for approval, at the current generation:
    both need a person, and both must end Argo CD's sync at the wave (a waiting approval held open
    as Suspended deadlocks the commit that approves it)."""

    def now(obj: dict[str, Any], kind: str, reason: str | None = None) -> bool:
        conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
        cond = conditions.get(kind, {})
        return bool(
            cond.get("status") == "True"
            and (reason is None or cond.get("reason") == reason)
            and cond.get("observedGeneration", obj["status"].get("observedGeneration"))
            >= obj["metadata"]["generation"]
        )

    for case in CASES:
        obj = yaml.safe_load((CHECK_DIR / case["inputPath"]).read_text())
        person = now(obj, "Stalled") or now(obj, "Reconciling", "WaitingForApproval")
        assert (case["healthStatus"]["status"] == "Degraded") == person, case["inputPath"]


def test_a_waiting_approval_is_never_suspended() -> None:
    """Suspended holds Argo CD's sync operation open (gitops-engine waits on anything not Healthy or
    Degraded), so the approval committed to Git could never be synced."""
    assert all(c["healthStatus"]["status"] != "Suspended" for c in CASES)


# The harness itself must be as strict as Argo CD, or the cases above prove little.


def test_harness_has_no_string_library() -> None:
    with pytest.raises(lupa.lua51.LuaError):
        run_health_script('return {status = string.upper("healthy")}', {})
    with pytest.raises(lupa.lua51.LuaError):
        run_health_script('local s = "Healthy"; return {status = s:sub(1)}', {})


def test_harness_has_no_io() -> None:
    with pytest.raises(lupa.lua51.LuaError):
        run_health_script('io.open("/etc/passwd"); return {status = "Healthy"}', {})


def test_harness_maps_an_invalid_status_to_unknown() -> None:
    unknown = HealthStatus("Unknown", INVALID_STATUS_MESSAGE)
    assert run_health_script('return {status = "Fine"}', {}) == unknown


def test_harness_rejects_a_non_table_result() -> None:
    with pytest.raises(TypeError, match="expect table"):
        run_health_script('return "Healthy"', {})


def test_harness_passes_obj_with_lists_as_one_based_tables() -> None:
    script = 'return {status = "Healthy", message = obj.status.conditions[1].type .. obj.metadata.generation}'
    obj = {"metadata": {"generation": 7}, "status": {"conditions": [{"type": "Ready"}]}}
    assert run_health_script(script, obj) == HealthStatus("Healthy", "Ready7")
