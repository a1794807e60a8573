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


def test_growth_compares_the_first_window_after_warm_up_with_the_last() -> None:
    from bench.load_figures import growth

    # 100 s of samples: 200 MiB during the warm-up, then 100, rising to 110 over the last 20 s.
    samples = [(float(t), 200.0 if t < 20 else (110.0 if t >= 80 else 100.0)) for t in range(100)]
    first, last, ratio = growth(samples, warmup=20, window=20)
    assert (first, last) == (100.0, 110.0)
    assert ratio == pytest.approx(1.1)
    with pytest.raises(ValueError, match="not enough samples"):
        growth(samples[:5], warmup=20, window=20)


def test_byte_counter_counts_what_it_relays_each_way(tmp_path: Path) -> None:
    import socket
    import threading
    import time

    from bench.kube import ByteCounter

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo_twice() -> None:
        conn, _ = server.accept()
        with conn:
            data = conn.recv(1024)
            conn.sendall(data * 2)

    threading.Thread(target=echo_twice, daemon=True).start()
    relay = ByteCounter(f"https://127.0.0.1:{port}")
    try:
        with socket.create_connection(("127.0.0.1", relay.port)) as sock:
            sock.sendall(b"x" * 100)
            got = b""
            while len(got) < 200:
                got += sock.recv(1024)
        deadline = time.monotonic() + 5
        while relay.received < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (relay.sent, relay.received) == (100, 200)
        config = tmp_path / "kubeconfig"
        config.write_text(f"clusters:\n- cluster: {{server: https://127.0.0.1:{port}}}\n")
        assert f"server: https://127.0.0.1:{relay.port}}}" in relay.kubeconfig(config).read_text()
        config.write_text("clusters:\n- cluster: {server: https://elsewhere:6443}\n")
        with pytest.raises(ValueError, match="does not name the server"):
            relay.kubeconfig(config)
    finally:
        relay.close()
        server.close()


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_load_figures_run_at_tiny_sizes(tmp_path: Path) -> None:
    """Figures 7-10 end to end on the local control plane, sized to take minutes, checked for shape."""
    doc = tmp_path / "benchmarks.md"
    figures = ["memory", "react-loaded", "noise", "soak"]
    doc.write_text("".join(f"<!-- bench:{f}:begin -->\n<!-- bench:{f}:end -->\n" for f in figures))
    res = subprocess.run(
        [
            sys.executable, "-m", "bench", *figures, "--quick", "--record",
            "--crs", "6", "--reps", "2", "--noise-pods", "20", "--noise-jobs", "4",
            "--soak-minutes", "0.5", "--soak-sample", "1",
            "--results-dir", str(tmp_path / "results"), "--doc", str(doc),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=880,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    [path] = (tmp_path / "results").glob("*.json")
    data = json.loads(path.read_text())["figures"]
    assert set(data) == set(figures)
    ratios = {f: {r["label"]: r for r in data[f]["ratios"]} for f in figures}
    rows = {f: {r["label"]: r["stat"] for r in data[f]["rows"]} for f in figures}

    assert ratios["memory"]["peak RSS with 6 DatabaseMigrations (MiB)"]["limit"] == 150
    peak = rows["memory"]["operator peak RSS (VmHWM), start → steady"]["median"]
    assert 20 < peak < 4096
    assert not [n for n in data["memory"]["notes"] if "INCOMPLETE" in n]

    assert rows["react-loaded"]["pod Succeeded → status Ready"]["n"] == 2
    assert ratios["react-loaded"]["pod Succeeded → status Ready: p99"]["limit"] == 1.0

    # The current design receives none of the churn; the previous one (the bench's switch) does.
    assert rows["noise"]["Pod/Job watch events that reached the operator, churn"]["median"] == 0
    before = (
        "previous design (no server-side selectors): Pod/Job watch events that reached the operator, churn"
    )
    assert rows["noise"][before]["median"] >= 24
    assert rows["noise"]["Pod + Job watch events the API server sent (all watchers), churn"]["median"] >= 24
    assert ratios["noise"]["Pod/Job watch events from unrelated churn"]["met"] is True

    assert rows["soak"]["RSS samples"]["n"] >= 20
    assert ratios["soak"]["RSS growth: last window / first window"]["limit"] == 1.1
    assert ratios["soak"]["DatabaseMigrations left at the end and not Ready within 180 s"]["met"] is True
    assert data["soak"]["extra"]["counts"]["create"] >= 5
    text = doc.read_text()
    for f in figures:
        assert f"<!-- bench:{f}:begin -->\n_Recorded" in text


def test_the_previous_design_is_switched_back_in_the_bench_s_process_only() -> None:
    """bench.legacy_operator (figure 6's same-run comparison) changes nothing unless installed."""
    check = (
        "from dbmigrate_operator import controller as ctl\n"
        "from dbmigrate_operator.gating import release\n"
        "now = lambda: (ctl.Controller._observe, ctl.PROGRESS_WRITE_SECONDS, release.fingerprint)\n"
        "shipped = now()\n"
        "import bench.legacy_operator as legacy\n"
        "assert now() == shipped\n"
        "legacy.install()\n"
        "assert ctl.Controller._observe is not shipped[0]\n"
        "assert ctl.PROGRESS_WRITE_SECONDS == 0\n"
        "running = {'metadata': {'name': 'x', 'generation': 1}, 'status': {'phase': 'Running'}}\n"
        "assert release.worth_a_pass(running) and release.fingerprint(running) != release.fingerprint(\n"
        "    {**running, 'status': {'phase': 'Pending'}})\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, cwd=Path(__file__).parents[2])
