"""The argocd-cm snippet (file and docs) is generated from health.lua and must not drift."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.argocd.render_cm import CM_KEY, DOC_FILE, HEALTH_LUA, PATCH_FILE, ROOT, render_doc, render_patch

REGEN = "run `python -m tests.argocd.render_cm` to regenerate"


def test_patch_file_is_generated_from_health_lua() -> None:
    assert PATCH_FILE.read_text() == render_patch(HEALTH_LUA.read_text()), REGEN


def test_patch_file_carries_health_lua_verbatim() -> None:
    cm = yaml.safe_load(PATCH_FILE.read_text())
    assert (cm["kind"], cm["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert cm["data"][CM_KEY] == HEALTH_LUA.read_text()


def test_docs_show_the_generated_snippet() -> None:
    doc = DOC_FILE.read_text()
    assert doc == render_doc(doc, render_patch(HEALTH_LUA.read_text())), REGEN
    blocks = [d for b in re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL) for d in yaml.safe_load_all(b)]
    snippets = [b["data"][CM_KEY] for b in blocks if isinstance(b, dict) and CM_KEY in b.get("data", {})]
    assert snippets == [HEALTH_LUA.read_text()]


def test_docs_put_the_migration_in_an_earlier_wave_than_the_deployment() -> None:
    doc = DOC_FILE.read_text()
    docs = [d for b in re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL) for d in yaml.safe_load_all(b)]
    waves = {
        d["kind"]: int(d["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))
        for d in docs
        if isinstance(d, dict) and d.get("kind") in {"DatabaseMigration", "Deployment"}
    }
    assert waves["DatabaseMigration"] < waves["Deployment"]


def test_example_applications_order_operator_before_app() -> None:
    apps = list(yaml.safe_load_all((ROOT / "examples" / "argocd" / "application.yaml").read_text()))
    assert [a["kind"] for a in apps] == ["Application", "Application"]
    by_name = {a["metadata"]["name"]: a for a in apps}
    wave = {n: int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for n, a in by_name.items()}
    assert wave["dbmigrate-operator"] < wave["shop"]
    assert by_name["dbmigrate-operator"]["spec"]["source"]["path"] == "charts/dbmigrate-operator"
    assert (ROOT / "charts" / "dbmigrate-operator" / "Chart.yaml").is_file()


def test_example_operator_values_satisfy_the_chart_schema() -> None:
    import json

    import jsonschema

    apps = {
        a["metadata"]["name"]: a
        for a in yaml.safe_load_all((ROOT / "examples/argocd/application.yaml").read_text())
    }
    values = apps["dbmigrate-operator"]["spec"]["source"]["helm"]["valuesObject"]
    schema = json.loads((ROOT / "charts/dbmigrate-operator/values.schema.json").read_text())
    defaults = yaml.safe_load((ROOT / "charts/dbmigrate-operator/values.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(_merged(defaults, values))  # as helm merges them
    # cert-manager: the chart's own certificate would be regenerated on every Argo CD render
    assert values["webhook"]["certManager"]["enabled"] is True


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def test_example_app_prunes_and_deletes_in_background() -> None:
    """docs/argocd.md: the example prunes and deletes in background, so a running migration survives a
    prune even where the chart's admission policy that holds foreground deletion is turned off."""
    apps = {
        a["metadata"]["name"]: a
        for a in yaml.safe_load_all((ROOT / "examples/argocd/application.yaml").read_text())
    }
    shop = apps["shop"]
    assert "PrunePropagationPolicy=background" in shop["spec"]["syncPolicy"]["syncOptions"]
    finalizers = shop["metadata"].get("finalizers", [])
    assert "resources-finalizer.argocd.argoproj.io/background" in finalizers
    assert "resources-finalizer.argocd.argoproj.io" not in finalizers  # the foreground one
