"""Replay each Dockerfile's install steps (no docker) and run what the container would run."""

from __future__ import annotations

import pytest

from tests.images.conftest import run_in
from tests.images.dockerfile_model import ImageState

pytestmark = pytest.mark.timeout(900)


def _imports(image: ImageState, module: str) -> bool:
    done = run_in(image, "python", "-c", f"import {module}")
    return done.returncode == 0


def test_operator_image_entrypoint_help(operator_image: ImageState) -> None:
    assert operator_image.entrypoint == ["dbmigrate-operator"]
    done = run_in(operator_image, *operator_image.entrypoint, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()


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
