"""`make demo` end to end: the README's main command starts everything, shows the migration Ready and
the gated pods Running, leaves it running for the user, and `make demo-stop` removes every process.

Runs `python -m scripts.demo` exactly as the Makefile does (its own control plane, PostgreSQL and
operator, detached), with its state in a temp dir (DBMIGRATE_DEMO_DIR) so a demo the user has
running is left alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from localcluster import node as nodemod
from localcluster.binaries import REPO
from localcluster.stack import shop_versions
from scripts.demo import pids, process_running

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.timeout(600),
    pytest.mark.local_cluster("make demo: starts its own local control plane, PostgreSQL and operator"),
]


def demo(
    command: str, state_dir: Path, timeout: float, node: str = "kubelet", *extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "DBMIGRATE_DEMO_GITOPS")}
    env["DBMIGRATE_DEMO_DIR"] = str(state_dir)
    return subprocess.run(
        [sys.executable, "-m", "scripts.demo", command, "--node", node, *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "node", [pytest.param("kubelet", marks=pytest.mark.realnode), "agent"], ids=["real-node", "node-agent"]
)
def test_demo_starts_shows_ready_and_running_then_stops(tmp_path: Path, node: str) -> None:
    state_dir = tmp_path / "demo"
    state: dict[str, object] = {}
    machine_before = nodemod.iptables_rules(), nodemod.read_sysctls()
    try:
        started = demo("start", state_dir, 480, node)
        out = started.stdout
        assert started.returncode == 0, out[-4000:] + started.stderr[-4000:]
        state = json.loads((state_dir / "state.json").read_text())

        # The printed kubectl output tells the story, in this order.
        gated = re.search(r"shop-web-\S+\s+0/1\s+SchedulingGated", out)
        assert gated, out
        assert gated.start() < _migrated_then_serving(out)
        assert "NAME      READY   VERSION" in out  # the real header of `kubectl get dbmigrations`

        # Left running: the printed exports give a shell our kubectl and the demo's cluster.
        exports = [line.strip() for line in out.splitlines() if line.strip().startswith("export ")]
        assert [e.split("=")[0] for e in exports] == ["export KUBECONFIG", "export PATH"]
        shell = "; ".join(
            [*exports, "command -v kubectl", "kubectl get pods -n shop -l app=shop-web --no-headers"]
        )
        res = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60, check=True)
        which, *pods = res.stdout.splitlines()
        assert which != "/usr/bin/kubectl"
        assert Path(which).parent == Path(state["cluster"]["bin_dir"])  # type: ignore[index]
        assert len(pods) == 2
        assert all(p.split()[2] == "Running" for p in pods)
        assert all(process_running(pid) for pid in pids(state))
        password = state["postgres"]["password"]  # type: ignore[index]
        assert password not in out + started.stderr
        if node == "kubelet":  # real containers: crictl lists the migration's and the app's
            rows = [line.split() for line in out[out.index("$ crictl ps -a") :].splitlines()[1:]]
            assert any("Exited" in r and "migrate" in r for r in rows), out[-3000:]
            assert sum("Running" in r and "web" in r for r in rows) >= 2, out[-3000:]
        else:
            assert "NOTE: --node agent: no containers" in out
    finally:
        stopped = demo("stop", state_dir, 120)
    _check_gone(stopped, state_dir, state, node, machine_before)


def _migrated_then_serving(out: str) -> int:
    """The printed tables show the DatabaseMigration Ready at the newest version, then at least two
    web pods Running after it; returns where the Ready row is printed."""
    ready = re.search(rf"shop-db\s+True\s+models:{shop_versions()[-1]}\s+Succeeded", out)
    running = list(re.finditer(r"shop-web-\S+\s+1/1\s+Running", out))
    assert ready, out
    assert len(running) >= 2, out
    assert ready.start() < running[0].start()
    return ready.start()


def _check_gone(
    stopped: subprocess.CompletedProcess[str],
    state_dir: Path,
    state: dict[str, object],
    node: str,
    machine_before: object,
) -> None:
    """After `make demo-stop`: every process the state named gone, every data dir removed."""
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "stopped" in stopped.stdout
    assert not state_dir.exists()
    deadline = time.monotonic() + 30
    while any(process_running(pid) for pid in pids(state)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in pids(state) if process_running(pid)] == []
    assert not Path(state["cluster"]["data_dir"]).exists()  # type: ignore[index]
    assert not Path(state["postgres"]["root"]).exists()  # type: ignore[index]
    assert demo("stop", state_dir, 60).returncode == 0  # stopping twice is harmless
    if node == "kubelet":  # the machine as found: iptables, sysctls, no bridge, no node state
        assert (nodemod.iptables_rules(), nodemod.read_sysctls()) == machine_before
        assert subprocess.run(["ip", "link", "show", nodemod.BRIDGE], capture_output=True).returncode != 0
        assert not nodemod.STATE_FILE.exists()


@pytest.mark.realnode
def test_demo_through_argocd_syncs_from_git_and_continues_by_commits(tmp_path: Path) -> None:
    """`--gitops argocd` (DBMIGRATE_DEMO_GITOPS=argocd): the same story delivered by Argo CD from a
    local Git repository; the printed commit instructions continue it; demo-stop ends Argo CD too."""
    state_dir = tmp_path / "demo"
    state: dict[str, object] = {}
    machine_before = nodemod.iptables_rules(), nodemod.read_sysctls()
    try:
        started = demo("start", state_dir, 600, "kubelet", "--gitops", "argocd")
        out = started.stdout
        assert started.returncode == 0, out[-4000:] + started.stderr[-4000:]
        state = json.loads((state_dir / "state.json").read_text())
        argo_pids = [int(p) for p in state["argocd"]["pids"].values()]  # type: ignore[index]
        assert len(argo_pids) == 3
        assert all(process_running(p) for p in argo_pids)

        # The two tables side by side, the Application ending Synced and Healthy with the migration.
        assert re.search(r"\$ kubectl get applications -A\s+\$ kubectl get dbm -A", out), out
        synced = re.search(r"argocd\s+shop\s+Synced\s+Healthy", out)
        assert synced, out
        _migrated_then_serving(out)
        waves = re.search(r"completed at (\S+); the Deployment \(wave 0\) was created at (\S+)", out)
        assert waves, out
        assert waves[2][:19] >= waves[1][:19], "wave 0 applied before its schema"  # UTC, to the second
        assert state["postgres"]["password"] not in out + started.stderr  # type: ignore[index]

        # Continue the story as printed: a commit in the clone, pushed, reaches the cluster.
        (work,) = [ln.strip()[3:] for ln in out.splitlines() if ln.strip().startswith("cd ")]
        deployment = Path(work) / "app" / "deployment.yaml"
        doc = yaml.safe_load(deployment.read_text())
        doc["spec"]["replicas"] = 1
        deployment.write_text(yaml.safe_dump(doc))
        subprocess.run(
            ["bash", "-c", "git commit -qam 'shop-web: one replica' && git push -q"],
            cwd=work, env={**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null"}, check=True, timeout=60,
        )  # fmt: skip
        exports = "; ".join(ln.strip() for ln in out.splitlines() if ln.strip().startswith("export "))
        get = f"{exports}; kubectl get deployment shop-web -n shop -o jsonpath={{.spec.replicas}}"
        deadline = time.monotonic() + 120
        while (replicas := _bash(get)) != "1" and time.monotonic() < deadline:
            time.sleep(1)
        assert replicas == "1", "the pushed commit was not synced"
    finally:
        stopped = demo("stop", state_dir, 120)
    _check_gone(stopped, state_dir, state, "kubelet", machine_before)
    assert "Argo CD's application-controller" in stopped.stdout


def _bash(script: str) -> str:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60).stdout.strip()
