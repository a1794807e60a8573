"""The pure decision: what a pod waits for and whether a DatabaseMigration satisfies it."""

from __future__ import annotations

from typing import Any

import pytest

from dbmigrate_operator import identity
from dbmigrate_operator.constants import SCHEDULING_GATE, WAIT_FOR_LABEL, WAIT_FOR_VERSION_ANNOTATION
from dbmigrate_operator.gating.requirement import Requirement, evaluate, has_gate, requirement_of


def migration(
    *,
    generation: int = 3,
    observed: int | None = 3,
    ready: str | None = "True",
    ready_generation: int | None = 3,
    phase: str = "Succeeded",
    applied: list[dict[str, str]] | None = None,
    stalled: bool = False,
    last_message: str | None = None,
) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = []
    if ready is not None:
        cond: dict[str, Any] = {"type": "Ready", "status": ready, "reason": "Applied"}
        if ready_generation is not None:
            cond["observedGeneration"] = ready_generation
        conditions.append(cond)
    if stalled:
        conditions.append({"type": "Stalled", "status": "True", "reason": "MigrationFailed"})
    status: dict[str, Any] = {"phase": phase, "conditions": conditions}
    if observed is not None:
        status["observedGeneration"] = observed
    # These cases are about versions: the database check (test_database_check.py) is off here.
    spec: dict[str, Any] = {"database": {"secretRef": {"name": "shop-db"}}, "databaseCheck": "Disabled"}
    if applied is not None:
        status["appliedVersions"] = applied
        status["currentVersion"] = f"{applied[-1]['app']}:{applied[-1]['version']}" if applied else None
        status["database"] = {"ref": identity.ref(spec), "job": "shop-db-1", "fingerprint": "a1" * 8}
    if last_message is not None:
        status["lastRun"] = {"outcome": "migration_failed", "message": last_message}
    return {
        "metadata": {"name": "shop-db", "namespace": "shop", "generation": generation},
        "spec": spec,
        "status": status,
    }


V1 = {"app": "models", "version": "0_20260101000000_init"}
V2 = {"app": "models", "version": "1_20260102000000_add_bio"}


class TestRequirementOf:
    def test_no_label_means_not_opted_in(self) -> None:
        assert requirement_of({"app": "web"}, {WAIT_FOR_VERSION_ANNOTATION: "x"}) is None
        assert requirement_of(None, None) is None

    def test_empty_label_means_not_opted_in(self) -> None:
        assert requirement_of({WAIT_FOR_LABEL: ""}, None) is None

    def test_label_alone(self) -> None:
        assert requirement_of({WAIT_FOR_LABEL: "shop-db"}, None) == Requirement("shop-db")

    def test_blank_annotation_is_no_pin(self) -> None:
        got = requirement_of({WAIT_FOR_LABEL: "shop-db"}, {WAIT_FOR_VERSION_ANNOTATION: "  "})
        assert got == Requirement("shop-db")

    def test_version_pin(self) -> None:
        got = requirement_of({WAIT_FOR_LABEL: "shop-db"}, {WAIT_FOR_VERSION_ANNOTATION: " 1_x_add "})
        assert got == Requirement("shop-db", version="1_x_add")
        assert got is not None
        assert got.pin == "1_x_add"

    def test_app_and_version_pin(self) -> None:
        got = requirement_of({WAIT_FOR_LABEL: "shop-db"}, {WAIT_FOR_VERSION_ANNOTATION: "models:1_x_add"})
        assert got == Requirement("shop-db", version="1_x_add", app="models")
        assert got is not None
        assert got.pin == "models:1_x_add"

    @pytest.mark.parametrize(("text", "version"), [(":1_x", "1_x"), ("models:", "models")])
    def test_degenerate_pins_keep_the_text_as_version(self, text: str, version: str) -> None:
        got = requirement_of({WAIT_FOR_LABEL: "db"}, {WAIT_FOR_VERSION_ANNOTATION: text})
        assert got == Requirement("db", version=version)


class TestLabelAlone:
    req = Requirement("shop-db")

    def test_missing_migration_is_unmet(self) -> None:
        verdict = evaluate(self.req, None)
        assert not verdict.met
        assert verdict.reason == "MigrationNotFound"
        assert "shop-db" in verdict.message

    def test_ready_for_current_generation_is_met(self) -> None:
        assert evaluate(self.req, migration()).met

    def test_ready_without_condition_generation_falls_back_to_status(self) -> None:
        assert evaluate(self.req, migration(ready_generation=None)).met

    def test_stale_status_generation_is_unmet(self) -> None:
        verdict = evaluate(self.req, migration(generation=4, observed=3, ready_generation=4))
        assert not verdict.met
        assert "generation 4" in verdict.message

    def test_stale_condition_generation_is_unmet(self) -> None:
        verdict = evaluate(self.req, migration(generation=4, observed=4, ready_generation=3))
        assert not verdict.met

    def test_missing_observed_generation_is_unmet(self) -> None:
        assert not evaluate(self.req, migration(observed=None)).met

    def test_not_ready_is_unmet_and_says_the_phase(self) -> None:
        verdict = evaluate(self.req, migration(ready="False", phase="Running"))
        assert not verdict.met
        assert verdict.reason == "MigrationNotReady"
        assert "Running" in verdict.message

    def test_no_status_is_unmet(self) -> None:
        verdict = evaluate(self.req, {"metadata": {"generation": 1}})
        assert not verdict.met

    def test_failed_is_unmet_and_says_so(self) -> None:
        verdict = evaluate(
            self.req,
            migration(ready="False", phase="Failed", stalled=True, last_message='relation "x" exists'),
        )
        assert not verdict.met
        assert verdict.reason == "MigrationFailed"
        assert 'relation "x" exists' in verdict.message
        assert "keep serving" in verdict.message

    def test_long_failure_text_is_shortened(self) -> None:
        verdict = evaluate(self.req, migration(ready="False", phase="Failed", last_message="e" * 5000))
        assert len(verdict.message) < 600


class TestVersionPin:
    def test_applied_version_is_met(self) -> None:
        verdict = evaluate(Requirement("shop-db", version=V2["version"]), migration(applied=[V1, V2]))
        assert verdict.met

    def test_app_must_match_when_given(self) -> None:
        other = {"app": "billing", "version": V2["version"]}
        assert not evaluate(
            Requirement("db", version=V2["version"], app="models"), migration(applied=[other])
        ).met
        assert evaluate(
            Requirement("db", version=V2["version"], app="billing"), migration(applied=[other])
        ).met

    def test_unapplied_version_is_unmet_and_names_it(self) -> None:
        verdict = evaluate(
            Requirement("shop-db", version=V2["version"], app="models"), migration(applied=[V1])
        )
        assert not verdict.met
        assert verdict.reason == "VersionNotApplied"
        assert f"models:{V2['version']}" in verdict.message
        assert V1["version"] in verdict.message  # the current version, for comparison

    def test_pin_is_met_even_while_a_newer_spec_is_not_ready(self) -> None:
        # Scale-ups of old pods must not be gated while the next migration runs (DESIGN.md).
        running = migration(generation=5, observed=4, ready="False", phase="Running", applied=[V1, V2])
        assert evaluate(Requirement("shop-db", version=V1["version"]), running).met

    def test_pin_with_failed_migration_says_failed(self) -> None:
        failed = migration(ready="False", phase="Failed", stalled=True, applied=[V1], last_message="boom")
        verdict = evaluate(Requirement("shop-db", version=V2["version"]), failed)
        assert not verdict.met
        assert verdict.reason == "MigrationFailed"
        assert "boom" in verdict.message

    def test_pin_against_missing_migration_is_unmet(self) -> None:
        assert not evaluate(Requirement("shop-db", version="1"), None).met

    def test_pin_older_than_a_capped_list_counts_by_its_number(self) -> None:
        body = migration(applied=[V2])  # the operator keeps only the newest entries
        body["status"]["appliedCount"] = 2
        assert evaluate(Requirement("db", version=V1["version"], app="models"), body).met
        assert evaluate(Requirement("db", version=V1["version"]), body).met  # a single app
        newer = Requirement("db", version="2_20260103000000_next", app="models")
        assert not evaluate(newer, body).met

    def test_numbers_are_not_trusted_when_the_list_is_complete(self) -> None:
        body = migration(applied=[V2])
        body["status"]["appliedCount"] = 1
        assert not evaluate(Requirement("db", version=V1["version"], app="models"), body).met

    def test_capped_list_with_several_apps_needs_the_app_name(self) -> None:
        body = migration(applied=[V2])
        body["status"]["appliedCount"] = 5
        body["status"]["currentVersion"] = f"billing:3_x,models:{V2['version']}"
        assert not evaluate(Requirement("db", version=V1["version"]), body).met
        assert evaluate(Requirement("db", version=V1["version"], app="models"), body).met

    def test_alembic_pin_is_met_only_when_listed_never_by_number(self) -> None:
        body = migration(applied=[{"app": "alembic", "version": "9f00aa11bb22"}])
        body["status"]["appliedCount"] = 60  # capped: older revisions are not listed
        body["status"]["currentVersion"] = "alembic:9f00aa11bb22"
        assert evaluate(Requirement("db", version="9f00aa11bb22"), body).met
        # "1abc..." would count as "1 <= 9" for the numbered tools: not for revision ids
        assert not evaluate(Requirement("db", version="1abc00000000"), body).met
        assert not evaluate(Requirement("db", version="1abc00000000", app="alembic"), body).met
        verdict = evaluate(Requirement("db", version="1abc00000000"), body)
        assert "not among the 1 newest applied revisions" in verdict.message
        assert "59 older ones are not listed, so it cannot be verified" in verdict.message

    @pytest.mark.parametrize("applied", [None, "1_x", {"app": "models", "version": "1_x"}, [None, "1_x"]])
    def test_malformed_applied_versions_are_unmet(self, applied: Any) -> None:
        body = migration()
        body["status"]["appliedVersions"] = applied
        assert not evaluate(Requirement("db", version="1_x"), body).met


def test_has_gate() -> None:
    assert has_gate({"spec": {"schedulingGates": [{"name": "other"}, {"name": SCHEDULING_GATE}]}})
    assert not has_gate({"spec": {"schedulingGates": [{"name": "other"}]}})
    assert not has_gate({"spec": {}})
