"""The bench code runs end to end: figure 1 (noop) once, checked for shape, never for speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core import FigureResult, Stat, percentile
from bench.report import record_docs

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_noop_figure_runs_and_writes_json(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "noop",
            "--reps",
            "1",
            "--record",
            "--results-dir",
            str(tmp_path / "results"),
            "--doc",
            str(doc),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "== noop" in res.stdout
    [path] = (tmp_path / "results").glob("*.json")
    data = json.loads(path.read_text())
    assert {"started_at", "machine", "load_before", "load_after", "figures"} <= set(data)
    assert data["machine"]["nproc"] >= 1
    fig = data["figures"]["noop"]
    labels = {row["label"] for row in fig["rows"]}
    assert {
        "runner (aerich)",
        "aerich upgrade",
        "init-container script",
        "runner (tortoise)",
        "tortoise migrate",
        "runner (alembic)",
        "alembic upgrade head",
    } <= labels
    for row in fig["rows"]:
        assert row["stat"]["n"] == 1
        assert row["stat"]["median"] > 0
    ratios = {r["label"]: r for r in fig["ratios"]}
    assert ratios["runner (aerich) / aerich upgrade"]["limit"] == 0.5
    assert ratios["runner (aerich) / init-container script"]["limit"] == 0.3
    assert ratios["runner (alembic) / alembic upgrade head"]["limit"] == 0.5
    assert all(r["value"] > 0 and isinstance(r["met"], bool | None) for r in ratios.values())
    # The no-op path's promise, checked from the interpreter's own import log.
    assert fig["extra"]["runner_imports"]["imports_tortoise"] is False
    assert fig["extra"]["runner_imports"]["imports_aerich"] is False
    assert fig["extra"]["runner_imports_alembic"]["imports_alembic"] is False
    assert fig["extra"]["runner_imports_alembic"]["imports_sqlalchemy"] is False
    text = doc.read_text()
    assert "<!-- bench:noop:begin -->" in text
    assert "| runner (aerich) |" in text


def test_record_docs_replaces_only_its_block(tmp_path: Path) -> None:
    doc = tmp_path / "b.md"
    doc.write_text("# B\n\nintro\n\n<!-- bench:x:begin -->\nold\n<!-- bench:x:end -->\n\nanalysis\n")
    fig = FigureResult("x", "X")
    fig.add("thing", "s", [0.2, 0.1, 0.3])
    fig.add("base", "s", [0.4, 0.4, 0.4])
    fig.ratio("thing / base", "thing", "base", limit=0.3)
    run = {
        "started_at": "T",
        "quick": False,
        "load_before": {"loadavg": [1]},
        "load_after": {"loadavg": [2]},
        "machine": {"nproc": 2, "cpu_model": "c", "memory_gib": 1, "python": "3", "postgresql": "15"},
    }
    record_docs(doc, [fig], run)
    text = doc.read_text()
    assert "old" not in text
    assert text.startswith("# B\n\nintro\n")
    assert text.rstrip().endswith("analysis")
    assert "| thing / base | 0.5 | ≤ 0.3 | **MISSED** |" in text


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 201)]
    assert percentile(values, 50) == 100
    assert percentile(values, 99) == 198
    assert percentile([5.0], 99) == 5.0
    assert Stat.of([3.0, 1.0, 2.0]).median == 2.0


def test_metric_sum_matches_labels() -> None:
    from bench.kube import metric_sum

    text = "\n".join(
        [
            "# HELP apiserver_flowcontrol_dispatched_requests_total x",
            'apiserver_flowcontrol_dispatched_requests_total{flow_schema="a",priority_level="p"} 3',
            'apiserver_flowcontrol_dispatched_requests_total{flow_schema="b",priority_level="p"} 5',
            'apiserver_flowcontrol_dispatched_requests_total{flow_schema="a",priority_level="q"} 4',
            'apiserver_flowcontrol_dispatched_requests_total_other{flow_schema="a"} 100',
        ]
    )
    assert metric_sum(text, "apiserver_flowcontrol_dispatched_requests_total", {"flow_schema": "a"}) == 7
    assert metric_sum(text, "apiserver_flowcontrol_dispatched_requests_total", {}) == 12
    assert metric_sum(text, "apiserver_flowcontrol_dispatched_requests_total", {"flow_schema": "c"}) == 0


def test_the_previous_design_is_switched_back_in_the_bench_s_process_only() -> None:
    """bench.legacy_operator (figure 6's same-run comparison) changes nothing unless installed."""
    check = (
        "from dbmigrate_operator import handlers\n"
        "from dbmigrate_operator.gating import release\n"
        "now = lambda: (handlers.Controller._observe, handlers.PROGRESS_WRITE_SECONDS, release.fingerprint)\n"
        "shipped = now()\n"
        "import bench.legacy_operator as legacy\n"
        "assert now() == shipped\n"
        "legacy.install()\n"
        "assert handlers.Controller._observe is not shipped[0]\n"
        "assert handlers.PROGRESS_WRITE_SECONDS == 0\n"
        "running = {'metadata': {'name': 'x', 'generation': 1}, 'status': {'phase': 'Running'}}\n"
        "assert release.worth_a_pass(running) and release.fingerprint(running) != release.fingerprint(\n"
        "    {**running, 'status': {'phase': 'Pending'}})\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, cwd=Path(__file__).parents[2])
