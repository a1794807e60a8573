"""versions.py: the one reading of versions for the controller, the gate and the webhook (issue 21),
and the downgrade question asked the same way by the approval step and the run (issue 18 item 10)."""

from __future__ import annotations

from typing import Any

import pytest

from dbmigrate_operator import ancestry, versions
from dbmigrate_operator.actions import CreateJob
from dbmigrate_operator.reconcile import decide
from dbmigrate_operator.settings import Settings
from dbmigrate_runner.report import AppState
from tests.operator.builders import T0, make_cr

REVS = [f"{i:012x}" for i in range(1, 8)]  # an Alembic history, oldest first


def alembic_status(listed: int) -> dict[str, Any]:
    """At the head; appliedVersions capped to the newest `listed`, the ancestry knows them all."""
    state = AppState(current=REVS[-1], count=len(REVS), versions=REVS, heads=[REVS[-1]])
    return {
        "currentVersion": f"alembic:{REVS[-1]}",
        "appliedCount": len(REVS),
        "appliedVersions": [{"app": "alembic", "version": v} for v in REVS[-listed:]],
        "ancestry": ancestry.merge(None, state, 100),
    }


@pytest.mark.parametrize(
    ("text", "pin"),
    [
        ("models:0003_x", versions.Pin("0003_x", "models")),
        ("0003_x", versions.Pin("0003_x")),
        (" models : 0003_x ", versions.Pin("0003_x", "models")),
        (":0003_x", versions.Pin("0003_x")),
        ("models:", versions.Pin("models")),
        ("", None),
        (None, None),
    ],
)
def test_parse_pin(text: str | None, pin: versions.Pin | None) -> None:
    assert versions.parse_pin(text) == pin


def test_numbers_and_order() -> None:
    assert versions.number("3_20260101_x") == 3
    assert versions.number("0003_x") == 3
    assert versions.number("ae1027a6acf6") is None
    assert versions.order("zero") == -1
    assert versions.order("ae1027a6acf6") == -1
    assert versions.order("12_x") > versions.order("3_x")


def test_pin_state_reads_the_list_the_cap_and_the_ancestry() -> None:
    status = {
        "currentVersion": "models:5_x",
        "appliedCount": 6,
        "appliedVersions": [{"app": "models", "version": "5_x"}],
    }
    assert versions.pin_state(versions.Pin("5_x", "models"), status).met
    assert versions.pin_state(versions.Pin("2_x"), status).met  # capped: below the current number
    assert not versions.pin_state(versions.Pin("6_x"), status).met
    alembic = alembic_status(listed=2)
    assert versions.pin_state(versions.Pin(REVS[0]), alembic).met  # only in the ancestry
    assert not versions.pin_state(versions.Pin("ffffffffffff"), alembic).met


def test_a_downgrade_is_judged_with_the_recorded_ancestry() -> None:
    status = alembic_status(listed=1)  # the older revisions are only in status.ancestry
    assert versions.is_downgrade(f"alembic:{REVS[1]}", status)
    assert not versions.is_downgrade("alembic:head", status)
    assert not versions.is_downgrade(REVS[-1], status)
    assert versions.is_downgrade("base", status)
    assert versions.is_downgrade("models:2_x", {"currentVersion": "models:5_x"})
    assert not versions.is_downgrade("models:7_x", {"currentVersion": "models:5_x"})


def test_the_approval_step_plans_no_downgrade_the_run_would_refuse() -> None:
    """Under approval, a target found only in the ancestry is a downgrade for both checks: refused
    at once, without a plan Job (the approval step used to ignore the ancestry and plan it)."""
    cr = make_cr(
        generation=2, status=alembic_status(listed=1), tool="alembic", approval="Manual", target=REVS[1]
    )
    plan = decide(cr, [], [], T0, Settings())
    assert plan.of(CreateJob) == []
    stalled = next(x for x in plan.status["conditions"] if x["type"] == "Stalled")
    assert stalled["reason"] == "DowngradeNotAllowed"
