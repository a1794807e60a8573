"""Static checks of the Dockerfiles: what a reviewer would insist on, without building an image."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from tests.images.conftest import OPERATOR_DOCKERFILE, ROOT, RUNNER_DOCKERFILE, SHOP_DOCKERFILE
from tests.images.dockerfile_model import Dockerfile, exec_form, load, parse_assignments, run_mounts

OWN_IMAGES = {"operator": OPERATOR_DOCKERFILE, "runner": RUNNER_DOCKERFILE}
ALEMBIC_SHOP_DOCKERFILE = ROOT / "examples" / "alembic-shop" / "Dockerfile"
EXAMPLE_IMAGES = {"shop": SHOP_DOCKERFILE, "alembic-shop": ALEMBIC_SHOP_DOCKERFILE}
ALL = {**OWN_IMAGES, **EXAMPLE_IMAGES}
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
SECRETISH = re.compile(r"(?i)pass(word)?|secret|token|api_?key|credential|private|database_url|dsn")
PINNED = re.compile(r"^[\w./-]+(:[\w.-]*\d+\.\d+\.\d+[\w.-]*)?(@sha256:[0-9a-f]{64})?$")


def _env(stage_instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, value in stage_instructions:
        if name == "ENV":
            env.update(parse_assignments(value))
    return env


def _stage_env(df: Dockerfile, index: int) -> dict[str, str]:
    return _env([(i.name, i.value) for i in df.stages[index].instructions])


@pytest.mark.parametrize("name", ALL)
def test_base_images_are_pinned(name: str) -> None:
    df = load(ALL[name])
    for stage in df.stages:
        if stage.base in {s.alias for s in df.stages}:
            continue
        assert ":latest" not in stage.base, stage.base
        assert PINNED.match(stage.base), stage.base
        assert ":" in stage.base or "@" in stage.base, (
            f"{name}: base image {stage.base!r} is not pinned to an exact x.y.z tag or a digest"
        )


@pytest.mark.parametrize("name", ALL)
def test_final_stage_runs_as_numeric_non_root_user(name: str) -> None:
    df = load(ALL[name])
    user = df.final.last("USER")
    if name in EXAMPLE_IMAGES and user is None:  # inherits the base image's non-root user
        return
    assert user is not None, f"{name}: final stage has no USER"
    uid, _, gid = user.value.partition(":")
    assert uid.isdigit(), f"{name}: USER {user.value!r} must be numeric (runAsNonRoot checks need a uid)"
    assert int(uid) != 0, f"{name}: USER {user.value!r} must be a numeric non-root uid"
    assert not gid or (gid.isdigit() and int(gid) != 0), f"{name}: USER {user.value!r} group must be numeric"


@pytest.mark.parametrize("name", ALL)
def test_no_secrets_in_env_or_args(name: str) -> None:
    df = load(ALL[name])
    names = list(df.global_args)
    for stage in df.stages:
        for ins in stage.instructions:
            if ins.name in {"ENV", "ARG"}:
                names += list(parse_assignments(ins.value))
    leaks = [n for n in names if SECRETISH.search(n)]
    assert not leaks, f"{name}: ENV/ARG look like credentials: {leaks} (pass them at run time)"


@pytest.mark.parametrize("name", ALL)
def test_no_healthcheck_kubernetes_uses_probes(name: str) -> None:
    df = load(ALL[name])
    assert not [i for s in df.stages for i in s.instructions if i.name == "HEALTHCHECK"]


@pytest.mark.parametrize(
    ("name", "script"), [("operator", "dbmigrate-operator"), ("runner", "dbmigrate-runner")]
)
def test_entrypoint_is_the_console_script_in_exec_form(name: str, script: str) -> None:
    df = load(OWN_IMAGES[name])
    assert script in SCRIPTS
    assert exec_form(df.final.last("ENTRYPOINT")) == [script]


@pytest.mark.parametrize(("name", "extra"), [("operator", "operator"), ("runner", "runner")])
def test_builder_installs_exactly_the_locked_extra(name: str, extra: str) -> None:
    df = load(OWN_IMAGES[name])
    installs = [
        shlex.split(run_mounts(i.value)[1])
        for s in df.stages
        for i in s.instructions
        if i.name == "RUN" and "uv sync" in i.value
    ]
    assert installs, f"{name}: no `uv sync` step"
    for argv in installs:
        assert "--frozen" in argv, f"{name}: uv sync must use the lock as is (--frozen)"
        assert "--no-dev" in argv
        extras = [argv[i + 1] for i, a in enumerate(argv) if a == "--extra"]
        assert extras == [extra], f"{name}: installs extras {extras}, want [{extra!r}]"
        assert "--all-extras" not in argv
    assert "--no-editable" in installs[-1], f"{name}: the final venv must not point back at /src"


@pytest.mark.parametrize("name", OWN_IMAGES)
def test_final_stage_copies_the_builder_venv_and_is_read_only_friendly(name: str) -> None:
    df = load(OWN_IMAGES[name])
    builder_env = _stage_env(df, 0)
    final_env = _stage_env(df, len(df.stages) - 1)
    venv = builder_env["UV_PROJECT_ENVIRONMENT"]
    copies = [shlex.split(i.value) for i in df.final.all("COPY")]
    assert ["--from=builder", venv, venv] in copies
    assert final_env["PATH"].startswith(f"{venv}/bin:")
    # bytecode is compiled at build time and never written at run time (read-only root filesystem)
    assert builder_env.get("UV_COMPILE_BYTECODE") == "1"
    assert final_env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert final_env.get("HOME", "").startswith("/tmp"), "HOME must be on the writable /tmp volume"
    assert not df.final.all("RUN"), "the final stage should only copy the venv"
    assert df.stages[0].base == df.final.base, "builder and final stage must share the interpreter"


def test_runner_image_documents_where_the_app_goes() -> None:
    df = load(RUNNER_DOCKERFILE)
    env = _stage_env(df, len(df.stages) - 1)
    assert env.get("PYTHONPATH") == "/app"
    workdir = df.final.last("WORKDIR")
    assert workdir is not None
    assert workdir.value == "/app"
    preamble = re.split(r"^FROM ", RUNNER_DOCKERFILE.read_text(), maxsplit=1, flags=re.MULTILINE)[0]
    assert "COPY" in preamble, "usage notes (where to COPY the app) belong before the first FROM"


@pytest.mark.parametrize("name", EXAMPLE_IMAGES)
def test_example_images_build_from_the_runner_image(name: str) -> None:
    df = load(EXAMPLE_IMAGES[name])
    assert len(df.stages) == 1
    assert "migrations" in df.final.base
    assert df.final.all("COPY"), "the example image must add the app and its migrations"
    assert not df.final.last("ENTRYPOINT"), "keep the base image's dbmigrate-runner entrypoint"


def _dockerignored(relpath: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relpath.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(c.split("/")[-1], pat[3:]) for c in candidates)
        else:
            hit = any(fnmatch.fnmatch(c, pat) and c.count("/") == pat.count("/") for c in candidates)
        if hit:
            ignored = not negate
    return ignored


@pytest.mark.parametrize("name", OWN_IMAGES)
def test_dockerignore_keeps_everything_the_build_copies(name: str) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    df = load(OWN_IMAGES[name])
    for stage in df.stages:
        for ins in stage.all("COPY"):
            words = [w for w in shlex.split(ins.value) if not w.startswith("--")]
            if ins.value.startswith("--from="):
                continue
            for src in words[:-1]:
                path = Path(src.rstrip("/"))
                files = [p for p in (ROOT / path).rglob("*.py")] if (ROOT / path).is_dir() else [ROOT / path]
                for f in files:
                    rel = f.relative_to(ROOT).as_posix()
                    assert not _dockerignored(rel, patterns), (
                        f"{name}: COPY {src} but .dockerignore drops {rel}"
                    )
    assert _dockerignored(".venv/bin/python", patterns)
    assert _dockerignored("tests/conftest.py", patterns)
    assert _dockerignored(".git/config", patterns)
    assert _dockerignored("operator/dbmigrate_operator/__pycache__/x.pyc", patterns)


def test_operator_image_exposes_the_ports_it_serves() -> None:
    """Liveness, webhook and metrics: the operator's defaults, each EXPOSEd once."""
    from dbmigrate_operator.gating.server import WebhookSettings
    from dbmigrate_operator.settings import Settings

    expose = load(OPERATOR_DOCKERFILE).final.all("EXPOSE")
    assert len(expose) == 1, "one EXPOSE line"
    ports = [int(p.split("/")[0]) for p in expose[0].value.split()]
    liveness = int((Settings().liveness_endpoint or "").rsplit(":", 1)[1].split("/")[0])
    assert sorted(ports) == sorted({liveness, WebhookSettings().port, Settings().metrics_port})


def test_operator_image_limits_malloc_arenas() -> None:
    """The operator's thread pool must not cost one glibc arena per thread (docs/benchmarks.md, fig. 7)."""
    df = load(OPERATOR_DOCKERFILE)
    assert _stage_env(df, len(df.stages) - 1).get("MALLOC_ARENA_MAX") == "2"
