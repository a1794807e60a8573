"""Replayed images (no docker): each Dockerfile's steps run into a temporary root, once per session."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.images.dockerfile_model import ImageState, base_state, load, replay

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_DOCKERFILE = ROOT / "Dockerfile"
RUNNER_DOCKERFILE = ROOT / "migrations_image" / "Dockerfile"
SHOP_DOCKERFILE = ROOT / "examples" / "shop" / "Dockerfile"


def _replay_image(dockerfile: Path, root: Path) -> ImageState:
    """Replay every stage of ``dockerfile`` (build context: the repository root) into ``root``."""
    # The base image's interpreter: this test's Python (a real, non-venv one, as uv insists on for
    # UV_PYTHON_PREFERENCE=only-system) behind a venv that gives `python -m pip` a place to install to.
    system = root / "base-python" / "bin"
    system.mkdir(parents=True)
    real = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    (system / "python3.11").symlink_to(real)
    pip_venv = root / "base-pip"
    subprocess.run([sys.executable, "-m", "venv", str(pip_venv)], check=True, timeout=300)
    parsed = load(dockerfile)
    log: list[str] = []
    state = base_state(root, [pip_venv / "bin", system])
    final = state
    for stage in parsed.stages:
        # every stage starts FROM the same python base; stages share the root, as COPY --from expects
        final = replay(parsed, stage, ROOT, state, log)
    (root / "replay.log").write_text("\n".join(log))
    return final


@pytest.fixture(scope="session")
def operator_image(tmp_path_factory: pytest.TempPathFactory) -> ImageState:
    return _replay_image(OPERATOR_DOCKERFILE, tmp_path_factory.mktemp("operator-image"))


@pytest.fixture(scope="session")
def runner_image(tmp_path_factory: pytest.TempPathFactory) -> ImageState:
    return _replay_image(RUNNER_DOCKERFILE, tmp_path_factory.mktemp("runner-image"))


@pytest.fixture(scope="session")
def shop_image(runner_image: ImageState) -> ImageState:
    """The example user image: examples/shop/Dockerfile's final stage on top of the runner image."""
    parsed = load(SHOP_DOCKERFILE)
    log: list[str] = []
    return replay(parsed, parsed.final, SHOP_DOCKERFILE.parent, runner_image, log)


RunIn = Callable[..., subprocess.CompletedProcess[str]]


def run_in(
    image: ImageState, *argv: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a command the way the container would: image env, image workdir, no host PYTHONPATH."""
    command = list(argv)
    exe = image.host_path(command[0]) if command[0].startswith("/") else command[0]
    merged = {"LANG": "C.UTF-8", **image.host_env(), **(env or {})}
    # resolve the program on the image's PATH, not the test process's
    if "/" not in str(exe):
        for folder in merged["PATH"].split(":"):
            if (Path(folder) / str(exe)).exists():
                exe = Path(folder) / str(exe)
                break
        else:
            raise FileNotFoundError(f"{command[0]} is not on the image's PATH {merged['PATH']}")
    return subprocess.run(
        [str(exe), *command[1:]],
        cwd=image.host_path(image.workdir),
        env=merged,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
