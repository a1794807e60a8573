"""Render the Helm chart with the project's own helm (built from hack/helm by localcluster)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.binaries import ensure_binaries
from tests.cluster.fixtures import cluster, namespace, pytest_collection_modifyitems
from tests.images.conftest import operator_image

# The real control plane for test_install_e2e.py (same session cluster as tests/e2e), and the
# operator image replayed by tests/images.
__all__ = ["cluster", "namespace", "operator_image", "pytest_collection_modifyitems"]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "dbmigrate-operator"
KUBE_VERSION = "1.34.4"
RELEASE = "dbm"
# What an API server that serves ValidatingAdmissionPolicy (GA since 1.30) tells helm.
VAP_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
# ... and a 1.29 one where the beta API was turned on (feature gate + runtime-config).
VAP_BETA_API = "admissionregistration.k8s.io/v1beta1/ValidatingAdmissionPolicy"
NAMESPACE = "dbmigrate-system"


def build_tool(name: str) -> Path:
    """helm4 or kstatus: built on first use by hack/build-binaries.sh into a cache dir of its own,
    keyed by its version (a cold build: helm4 up to ~16 min on 2 busy cores, kstatus ~30 s)."""
    done = subprocess.run(
        [str(ROOT / "hack" / "build-binaries.sh"), name], stdout=subprocess.PIPE, text=True, check=True
    )
    tool = Path(done.stdout.strip().splitlines()[-1]) / name
    assert tool.is_file(), f"{name} was not built into {tool.parent} (hack/build-binaries.sh {name})"
    return tool


# Fixture -> the tool it needs. Built at collection time when a selected test uses the fixture, as the
# cluster's binaries are (tests/cluster/fixtures.py): a cold helm4 build outlasts any test's timeout.
TOOL_FIXTURES = {"helm4_bin": "helm4", "kstatus_bin": "kstatus"}


def pytest_collection_finish(session: pytest.Session) -> None:
    wanted = sorted(
        {
            tool
            for item in session.items
            for fixture, tool in TOOL_FIXTURES.items()
            if fixture in getattr(item, "fixturenames", ())
        }
    )
    capman = session.config.pluginmanager.getplugin("capturemanager")
    for tool in wanted:
        if capman is None:
            build_tool(tool)
            continue
        with capman.global_and_fixture_disabled():
            build_tool(tool)


@pytest.fixture(scope="session")
def helm4_bin() -> Path:
    return build_tool("helm4")  # built at collection: instant here


@pytest.fixture(scope="session")
def kstatus_bin() -> Path:
    return build_tool("kstatus")


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    helm = ensure_binaries(sys.stderr) / "helm"
    assert helm.is_file(), f"helm was not built into {helm.parent} (hack/build-binaries.sh)"
    return helm


@dataclass
class Rendered:
    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {d["kind"] for d in self.docs}


def helm_args(values: dict[str, Any] | None, sets: list[str] | None, tmp: Path) -> list[str]:
    args: list[str] = []
    if values:
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
    for item in sets or []:
        args += ["--set", item]
    return args


RenderFn = Callable[..., Rendered]


@pytest.fixture
def helm(helm_bin: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(helm_bin), *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
        )

    return run


@pytest.fixture
def render(helm_bin: Path, tmp_path: Path) -> RenderFn:
    """`helm template` the chart (CRDs included) with extra values; fails the test on a helm error."""

    def run(
        values: dict[str, Any] | None = None,
        *sets: str,
        namespace: str = NAMESPACE,
        api_versions: tuple[str, ...] = (VAP_API,),
        kube_version: str = KUBE_VERSION,
    ) -> Rendered:
        """`api_versions`: what a live API server would tell helm it serves (`--api-versions`); by
        default a KUBE_VERSION server's ValidatingAdmissionPolicy (without it the chart fails)."""
        done = subprocess.run(
            [
                str(helm_bin),
                "template",
                RELEASE,
                str(CHART),
                "--namespace",
                namespace,
                "--kube-version",
                kube_version,
                "--include-crds",
                *(arg for version in api_versions for arg in ("--api-versions", version)),
                *helm_args(values, list(sets), tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return Rendered([d for d in yaml.safe_load_all(done.stdout) if d])

    return run
