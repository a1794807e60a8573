"""Replay each Dockerfile's install steps (no docker) and run what the container would run."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from dbmigrate_runner.report import Outcome, Report, decode
from localcluster.postgres import PostgresServer
from tests.images.conftest import ROOT, run_in
from tests.images.dockerfile_model import ImageState

pytestmark = pytest.mark.timeout(900)


def _imports(image: ImageState, module: str) -> bool:
    done = run_in(image, "python", "-c", f"import {module}")
    return done.returncode == 0


def test_operator_image_entrypoint_help(operator_image: ImageState) -> None:
    assert operator_image.entrypoint == ["dbmigrate-operator"]
    try:
        done = run_in(operator_image, *operator_image.entrypoint, "--help", timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("`dbmigrate-operator --help` did not print usage and exit: it started the operator")
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()
    version = run_in(operator_image, *operator_image.entrypoint, "--version", timeout=30)
    assert version.returncode == 0, version.stderr
    # the installed distribution's metadata, so the image knows its own version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert version.stdout.split() == ["dbmigrate-operator", project["version"]]


def test_operator_image_imports_the_controller(operator_image: ImageState) -> None:
    done = run_in(
        operator_image,
        "python",
        "-c",
        "import dbmigrate_operator.__main__, kopf; print(dbmigrate_operator.__file__)",
    )
    assert done.returncode == 0, done.stderr
    # the installed package, not the source tree (--no-editable), so /src can be left behind
    assert str(operator_image.host_path("/opt/venv")) in done.stdout


def test_operator_image_has_only_the_operator_extra(operator_image: ImageState) -> None:
    assert _imports(operator_image, "dbmigrate_runner.report")  # the shared contract module
    for absent in ("tortoise", "aerich", "asyncpg", "pytest", "mypy"):
        assert not _imports(operator_image, absent), f"{absent} must not be in the operator image"


def test_runner_image_entrypoint_help(runner_image: ImageState) -> None:
    assert runner_image.entrypoint == ["dbmigrate-runner"]
    done = run_in(runner_image, *runner_image.entrypoint, "--help")
    assert done.returncode == 0, done.stderr
    for command in ("upgrade", "downgrade", "status"):
        assert command in done.stdout


def test_runner_image_has_only_the_runner_extra(runner_image: ImageState) -> None:
    for present in ("tortoise", "aerich", "asyncpg", "dbmigrate_runner.cli"):
        assert _imports(runner_image, present), f"{present} missing from the runner image"
    for absent in ("kopf", "kubernetes", "pytest"):
        assert not _imports(runner_image, absent), f"{absent} must not be in the runner image"


@pytest.mark.parametrize("image_name", ["operator_image", "runner_image"])
def test_bytecode_is_precompiled_for_a_read_only_root(
    image_name: str, request: pytest.FixtureRequest
) -> None:
    image: ImageState = request.getfixturevalue(image_name)
    venv = image.host_path("/opt/venv")
    package = "dbmigrate_operator" if image_name == "operator_image" else "dbmigrate_runner"
    compiled = list(venv.glob(f"lib/python3*/site-packages/{package}/__pycache__/*.pyc"))
    assert compiled, f"no .pyc under {venv} for {package}: UV_COMPILE_BYTECODE did not take effect"


SHOP = ROOT / "examples" / "shop"
MIGRATIONS = {
    "aerich": sorted(p.stem for p in (SHOP / "migrations" / "models").glob("[0-9]*.py")),
    "tortoise": sorted(p.stem for p in (SHOP / "shop" / "migrations").glob("[0-9]*.py")),
}


@pytest.mark.postgres
@pytest.mark.parametrize("tool", ["aerich", "tortoise"])
def test_shop_image_migrates_a_fresh_database_and_then_is_a_no_op(
    shop_image: ImageState, postgres: PostgresServer, database: str, tmp_path: Path, tool: str
) -> None:
    """The example user image, run as the Job runs it: entrypoint + default command, env only."""
    assert MIGRATIONS[tool], f"the example app has no {tool} migrations"
    report_path = tmp_path / "termination-log"
    env = {
        "DATABASE_URL": postgres.url(database),
        "DBMIGRATE_REPORT_PATH": str(report_path),
        "DBMIGRATE_TOOL": tool,
    }

    def run(*command: str) -> Report:
        report_path.unlink(missing_ok=True)
        done = run_in(shop_image, *command, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert postgres.password not in done.stdout + done.stderr
        return decode(report_path.read_text())

    assert shop_image.entrypoint is not None
    assert shop_image.cmd == ["upgrade"]
    before = _tree(shop_image)
    first = run(*shop_image.entrypoint, *shop_image.cmd)
    assert first.outcome is Outcome.SUCCEEDED
    assert first.applied_count == len(MIGRATIONS[tool])
    assert first.apps["models"].current == MIGRATIONS[tool][-1]

    again = run(*shop_image.entrypoint, "upgrade")
    assert again.outcome is Outcome.SUCCEEDED
    assert again.applied_count == 0
    status = run(*shop_image.entrypoint, "status")
    assert status.apps["models"].current == MIGRATIONS[tool][-1]
    assert status.applied == []
    # nothing was written into the image: it runs on a read-only root filesystem in the Job
    assert _tree(shop_image) == before


@pytest.mark.postgres
def test_shop_image_plans_with_squawk(
    shop_image: ImageState, postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """The lint's lock hazards come from the squawk binary of the image's venv (squawk-cli wheel):
    a plan in the image finds them, and nothing says the lint could not run."""
    report_path = tmp_path / "termination-log"
    env = {"DATABASE_URL": postgres.url(database), "DBMIGRATE_REPORT_PATH": str(report_path)}
    assert shop_image.entrypoint is not None
    upto = run_in(shop_image, *shop_image.entrypoint, "upgrade", "--target", "1", env=env)
    assert upto.returncode == 0, upto.stdout + upto.stderr
    done = run_in(shop_image, *shop_image.entrypoint, "plan", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    plan = decode(report_path.read_text()).plan
    assert plan is not None
    rules = {f.rule for f in plan.findings}
    assert "lint-unavailable" not in rules
    code = (
        "from dbmigrate_runner.squawk import hazards; from dbmigrate_runner.sqlplan import Step; "
        "found = hazards([Step('a:1', ['CREATE INDEX i ON t (a)'])]); "
        "print(' '.join(sorted(h.rule for hits in found.values() for h in hits)))"
    )
    lint = run_in(shop_image, "python", "-c", code)
    assert lint.returncode == 0, lint.stderr
    assert lint.stdout.split() == ["require-concurrent-index-creation"]


def _tree(image: ImageState) -> dict[str, float]:
    """Every file under the image's own folders (/app, /opt) with its modification time."""
    files: dict[str, float] = {}
    for top in ("/app", "/opt"):
        root = image.host_path(top)
        files.update({str(p): p.stat().st_mtime for p in root.rglob("*")})
    return files


@pytest.mark.postgres
def test_the_operators_job_runs_in_the_example_image(
    shop_image: ImageState, postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """The container the operator puts in its Job (command, args, env) works with our images."""
    from dbmigrate_operator.jobs import build_job
    from dbmigrate_operator.settings import Settings

    cr = {
        "apiVersion": "dbmigrate.dev/v1alpha1",
        "kind": "DatabaseMigration",
        "metadata": {"name": "shop-db", "namespace": "shop", "uid": "0000", "generation": 1},
        "spec": {
            "image": "registry.example.com/shop-migrations:1.4.2",
            "tool": "aerich",
            "database": {"urlSecretRef": {"name": "shop-db", "key": "url"}},
        },
    }
    job = build_job(cr, hash_="0123456789", command="upgrade", settings=Settings())
    (container,) = job["spec"]["template"]["spec"]["containers"]
    secrets = {("shop-db", "url"): postgres.url(database)}
    env = {}
    for item in container["env"]:
        if "valueFrom" in item:  # what the kubelet does with a secretKeyRef
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            env[item["name"]] = item["value"]
    report_path = tmp_path / "termination-log"
    env["DBMIGRATE_REPORT_PATH"] = str(report_path)  # stands in for container["terminationMessagePath"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert env["HOME"] == shop_image.env["HOME"]

    done = run_in(shop_image, *container["command"], *container["args"], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    report = decode(report_path.read_text())
    assert report.outcome is Outcome.SUCCEEDED
    assert report.apps["models"].current == MIGRATIONS["aerich"][-1]
