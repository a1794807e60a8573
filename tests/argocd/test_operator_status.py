"""The health check on the conditions the operator itself writes (operator/dbmigrate_operator/status.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dbmigrate_operator import status
from tests.argocd.luahealth import HealthStatus, run_health_script
from tests.argocd.test_health import HEALTH_LUA

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
IN_PROGRESS = [
    status.Reason.JOB_CREATED,
    status.Reason.JOB_RUNNING,
    status.Reason.WAITING_FOR_PREVIOUS_RUN,
    status.Reason.REPLACING_JOB,
    status.Reason.WAITING_FOR_NODE,
    status.Reason.WAITING_FOR_LOCK,
    status.Reason.PLANNING,
]
WAITING = status.Reason.WAITING_FOR_APPROVAL
STUCK = [r for r in status.Reason if r not in (*IN_PROGRESS, WAITING) and r is not status.Reason.APPLIED]


def _cr(verdict: status.Verdict, *, generation: int, observed: int) -> dict[str, Any]:
    return {
        "apiVersion": "dbmigrate.dev/v1alpha1",
        "kind": "DatabaseMigration",
        "metadata": {"name": "shop-db", "namespace": "shop", "generation": generation},
        "status": {
            "observedGeneration": observed,
            "conditions": status.conditions(verdict, None, observed, NOW),
        },
    }


@pytest.mark.parametrize("reason", IN_PROGRESS, ids=str)
def test_a_run_under_way_is_progressing(reason: status.Reason) -> None:
    obj = _cr(status.progressing(reason, f"{reason}: job shop-db-1a2b"), generation=4, observed=4)
    assert run_health_script(HEALTH_LUA, obj) == HealthStatus("Progressing", f"{reason}: job shop-db-1a2b")


def test_waiting_for_approval_is_degraded_and_names_the_hash() -> None:
    """A plan waiting for a person is Degraded, not Suspended: Argo CD holds a sync open on a
    Suspended resource, so the commit carrying the approval would never sync (seen with Argo CD
    3.6.2, tests/realnode/test_argocd.py); Degraded ends it at the wave. The message says why."""
    message = (
        "waiting for approval of plan "
        + "ab" * 32
        + ": 2 migration(s), 3 statement(s), 1 destructive finding(s)"
    )
    obj = _cr(status.progressing(WAITING, message), generation=4, observed=4)
    assert run_health_script(HEALTH_LUA, obj) == HealthStatus("Degraded", message)


def test_applied_is_healthy() -> None:
    obj = _cr(status.ready("Applied models:3_x"), generation=4, observed=4)
    assert run_health_script(HEALTH_LUA, obj) == HealthStatus("Healthy", "Applied models:3_x")


@pytest.mark.parametrize("reason", STUCK, ids=str)
def test_every_stall_is_degraded_with_its_message(reason: status.Reason) -> None:
    obj = _cr(status.stalled(reason, f"why: {reason}"), generation=2, observed=2)
    assert run_health_script(HEALTH_LUA, obj) == HealthStatus("Degraded", f"why: {reason}")


@pytest.mark.parametrize(
    "verdict",
    [status.ready("Applied"), status.stalled(status.Reason.MIGRATION_FAILED, "boom")],
    ids=["ready", "stalled"],
)
def test_a_spec_change_the_operator_has_not_seen_is_progressing(verdict: status.Verdict) -> None:
    obj = _cr(verdict, generation=5, observed=4)
    health = run_health_script(HEALTH_LUA, obj)
    assert health.status == "Progressing"
    assert "generation 5" in health.message


def test_in_progress_reasons_are_the_ones_the_operator_reports_as_progressing() -> None:
    """Keeps IN_PROGRESS honest: every reason the operator passes to progressing() is in it."""
    source = "\n".join(p.read_text() for p in ROOT.joinpath("operator", "dbmigrate_operator").glob("*.py"))
    used = set(re.findall(r"progressing\(\s*Reason\.(\w+)", source))
    assert used, "no progressing(Reason.X) call found: update this test to the operator's code"
    assert {status.Reason[name] for name in used} <= {*IN_PROGRESS, WAITING}
