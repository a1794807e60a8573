"""docs/install.md names only values the chart has, with the defaults it has."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.chart.conftest import CHART, ROOT

DOC = (ROOT / "docs" / "install.md").read_text()
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def _lookup(path: str) -> Any:
    node: Any = VALUES
    for part in path.split("."):
        assert isinstance(node, dict), path
        assert part in node, f"docs/install.md mentions `{path}`, which values.yaml does not have"
        node = node[part]
    return node


def test_values_named_in_the_docs_exist() -> None:
    rows = [line for line in DOC.splitlines() if line.startswith("| `")]
    names = [n for row in rows for n in re.findall(r"`([a-zA-Z][\w.]*)`", row.split("|")[1])]
    keys = [n for n in names if n.split(".")[0] in VALUES]
    assert len(keys) >= 10, keys
    for key in keys:
        _lookup(key)


def test_documented_defaults_match_values_yaml() -> None:
    assert _lookup("replicaCount") == 2
    assert "| `replicaCount` | `2` |" in DOC
    assert _lookup("webhook.failurePolicy") == "Fail"
    assert "| `webhook.failurePolicy` | `Fail` |" in DOC
    assert _lookup("webhook.excludedNamespaces") == ["kube-system"]
    assert (_lookup("resyncSeconds"), _lookup("gateSweepSeconds")) == (300, 30)
    assert "| `300`, `30` |" in DOC


def test_chart_app_version_is_the_project_version() -> None:
    """The default image tag is appVersion: it must name the release the chart ships with."""
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
