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


def _mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}
    found = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi)", quantity)
    assert found, f"memory quantity {quantity!r} is not in Ki/Mi/Gi"
    return float(found.group(1)) * units[found.group(2)]


def _recorded_mib(figure: str, label: str) -> float:
    """A row's median from a figure's block in docs/benchmarks.md (written by `python -m bench`)."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    block = text.split(f"<!-- bench:{figure}:begin -->", 1)[1].split(f"<!-- bench:{figure}:end -->", 1)[0]
    row = next(line for line in block.splitlines() if line.startswith(f"| {label}"))
    found = re.match(r"([\d.]+) MiB", row.split("|")[2].strip())
    assert found, row
    return float(found.group(1))


def test_default_resources_leave_headroom_over_the_recorded_measurements() -> None:
    """The chart's memory request covers what the bench recorded for an operator without any
    DatabaseMigration, and its limit is at least 1.25 × every recorded peak (docs/install.md#sizing)."""
    resources = _lookup("resources")
    request, limit = _mib(resources["requests"]["memory"]), _mib(resources["limits"]["memory"])
    idle = _recorded_mib("memory", "operator RSS at start")
    peaks = [
        _recorded_mib("memory", "operator peak RSS (VmHWM)"),
        _recorded_mib("soak", "operator peak RSS (VmHWM)"),
        _recorded_mib("noise", "operator peak RSS (VmHWM)"),
    ]
    assert request >= idle, (request, idle)
    assert limit >= 1.25 * max(peaks), (limit, peaks)
    assert "cpu" not in resources["limits"]  # a throttled operator answers the webhook late
    doc_row = next(line for line in DOC.splitlines() if line.startswith("| `resources` |"))
    assert f"`{resources['requests']['cpu']}`, `{resources['requests']['memory']}`" in doc_row
    assert f"`{resources['limits']['memory']}` memory" in doc_row
    sizing = DOC.split("## Sizing", 1)[1].split("\n## ", 1)[0]
    assert f"`memory: {resources['limits']['memory']}` (chart default)" in sizing
