"""Read our Dockerfiles (via dockerfile-parse) into stages, and replay a stage without docker.

Replaying runs a stage's RUN steps with ``sh -c`` exactly as written, with the Dockerfile's ARG and
ENV values, after mapping the image's own absolute paths (``/opt``, ``/src``, ``/app``) into a
temporary root and dropping BuildKit cache mounts (the host's caches stand in for them). COPY
copies from the build context. So a wrong lock, extra, path or console script fails a test here
even though no image is built.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser

_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# Top-level folders the images create themselves; everything else (/usr, /tmp, ...) is the base image's.
IMAGE_ROOTS = ("opt", "src", "app")
_IMAGE_PATH = re.compile(r"(?<![\w.$/-])/(" + "|".join(IMAGE_ROOTS) + r")(?=/|\b|$)")
_MOUNT = re.compile(r"^--mount=(\S+)\s+")


@dataclass
class Instruction:
    name: str
    value: str
    line: int


@dataclass
class Stage:
    base: str  # after ARG substitution
    alias: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, name: str) -> list[Instruction]:
        return [i for i in self.instructions if i.name == name]

    def last(self, name: str) -> Instruction | None:
        found = self.all(name)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, alias: str) -> Stage:
        return next(s for s in self.stages if s.alias == alias)


def substitute(text: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


def parse_assignments(value: str) -> dict[str, str]:
    """``ENV``/``ARG``/``LABEL`` bodies: ``k=v k2="v 2"`` (or the legacy ``ENV k v``)."""
    words = shlex.split(value)
    if len(words) >= 2 and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    out: dict[str, str] = {}
    for word in words:
        key, sep, val = word.partition("=")
        out[key] = val if sep else ""
    return out


def load(path: Path) -> Dockerfile:
    parser = DockerfileParser(path=str(path))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for item in parser.structure:
        name, value, line = item["instruction"], item["value"], item["startline"] + 1
        if name == "COMMENT":
            continue
        if name == "FROM":
            words = value.split()
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(substitute(words[0], global_args), alias))
        elif not stages:
            if name != "ARG":
                raise ValueError(f"{path}:{line}: only ARG may precede the first FROM")
            global_args.update(parse_assignments(value))
        else:
            stages[-1].instructions.append(Instruction(name, value, line))
    return Dockerfile(path, global_args, stages)


def exec_form(instruction: Instruction | None) -> list[str] | None:
    """ENTRYPOINT/CMD in JSON (exec) form, or None if absent; shell form is an error for us."""
    if instruction is None:
        return None
    parsed = json.loads(instruction.value)
    assert isinstance(parsed, list), instruction
    return [str(p) for p in parsed]


@dataclass
class ImageState:
    """What a replayed image looks like from the outside: its env, workdir, user and command."""

    root: Path
    env: dict[str, str]
    workdir: str = "/"
    user: str | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None

    def host_path(self, image_path: str) -> Path:
        """Where an image path lives in the replay (image-owned roots only)."""
        return Path(rewrite(image_path, self.root))

    def host_env(self) -> dict[str, str]:
        return {k: rewrite(v, self.root) for k, v in self.env.items()}


def rewrite(text: str, root: Path) -> str:
    return _IMAGE_PATH.sub(lambda m: f"{root}/{m.group(1)}", text)


def base_state(root: Path, python_bins: list[Path]) -> ImageState:
    """Stand-in for the python base image: its PATH leads to the given interpreter folders first."""
    path = ":".join([*map(str, python_bins), "/usr/local/bin", "/usr/bin", "/bin"])
    return ImageState(root=root, env={"PATH": path})


def _host_environ() -> dict[str, str]:
    """The test process's environment, less whatever would point uv/pip/python somewhere else."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("UV_")}


def replay(
    dockerfile: Dockerfile, stage: Stage, context: Path, state: ImageState, log: list[str]
) -> ImageState:
    """Run one stage on top of ``state``; returns the resulting state (``state`` is not changed)."""
    args = dict(dockerfile.global_args)
    env = dict(state.env)
    st = ImageState(state.root, env, state.workdir, state.user, state.entrypoint, state.cmd)
    for ins in stage.instructions:
        scope = {**args, **env}
        if ins.name == "ARG":
            for key, val in parse_assignments(ins.value).items():
                args[key] = substitute(val, scope) if val else args.get(key, "")
        elif ins.name == "ENV":
            env.update({k: substitute(v, scope) for k, v in parse_assignments(ins.value).items()})
        elif ins.name == "WORKDIR":
            st.workdir = os.path.join(st.workdir, substitute(ins.value, scope))
            st.host_path(st.workdir).mkdir(parents=True, exist_ok=True)
        elif ins.name == "USER":
            st.user = substitute(ins.value, scope)
        elif ins.name == "ENTRYPOINT":
            st.entrypoint, st.cmd = exec_form(ins), None  # docker resets CMD with a new ENTRYPOINT
        elif ins.name == "CMD":
            st.cmd = exec_form(ins)
        elif ins.name == "COPY":
            _copy(ins, substitute(ins.value, scope), context, st)
        elif ins.name == "RUN":
            _run(ins, ins.value, {**args, **env}, st, log)  # the shell expands $VARs
        elif ins.name in {"LABEL", "EXPOSE"}:
            continue
        else:
            raise NotImplementedError(f"{dockerfile.path}:{ins.line}: replay does not know {ins.name}")
    return st


def _copy(ins: Instruction, value: str, context: Path, st: ImageState) -> None:
    words = shlex.split(value)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    *sources, dest = paths
    if any(f.startswith("--from=") for f in flags):
        # Stages share one replay root, so the file is already there: check it is.
        for src in sources:
            assert st.host_path(src).exists(), f"line {ins.line}: {src} missing in the build stage"
        return
    dest_path = st.host_path(os.path.join(st.workdir, dest))
    for src in sources:
        origin = context / src
        assert origin.exists(), f"line {ins.line}: COPY source {src} not in the context {context}"
        if origin.is_dir():
            shutil.copytree(
                origin, dest_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            target = dest_path / origin.name if dest.endswith("/") or len(sources) > 1 else dest_path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)


def run_mounts(value: str) -> tuple[list[dict[str, str]], str]:
    """Split ``RUN --mount=... cmd`` into the mounts and the shell command."""
    mounts: list[dict[str, str]] = []
    while match := _MOUNT.match(value):
        mounts.append(dict(part.partition("=")[::2] for part in match.group(1).split(",")))
        value = value[match.end() :]
    return mounts, value


def _run(ins: Instruction, value: str, scope: dict[str, str], st: ImageState, log: list[str]) -> None:
    mounts, command = run_mounts(value)
    assert all(m.get("type") == "cache" for m in mounts), f"line {ins.line}: only cache mounts replay"
    env = {**_host_environ(), **{k: rewrite(v, st.root) for k, v in scope.items()}}
    cwd = st.host_path(st.workdir)
    cwd.mkdir(parents=True, exist_ok=True)
    command = rewrite(command, st.root)
    done = subprocess.run(
        ["sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    log.append(f"$ {command}\n{done.stdout}{done.stderr}")
    assert done.returncode == 0, (
        f"line {ins.line}: `{command}` exited {done.returncode}:\n{done.stderr[-3000:]}"
    )
