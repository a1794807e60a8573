"""Real container images from the repository's own Dockerfiles, without a Docker engine or a registry.

- ``python``: a Python 3.11 base image made here with ``debootstrap --variant=minbase bookworm`` from
  the machine's Debian mirror (what ``python:3.11-slim-bookworm`` is to users), passed to every
  Dockerfile as ``--build-arg PYTHON_IMAGE``;
- ``operator`` (``Dockerfile``), ``migrations`` (``migrations_image/Dockerfile``), ``shop``
  (``examples/shop/Dockerfile`` on ``migrations``), ``alembic-shop`` (``examples/alembic-shop/Dockerfile``
  on ``migrations``) and ``app`` (``examples/demo/app/Dockerfile``, the
  gated Deployment's web server) built with ``buildah build``;
- ``pause``: the static ``catatonit`` (Debian's package) in an image FROM scratch, for the sandbox.

Each image carries a hash of its inputs in the label ``dev.dbmigrate.inputs`` (Dockerfile, the
build context after .dockerignore, the base image's id, the build args): an unchanged image is not
rebuilt. Storage lives outside the work tree (``~/.cache/dbmigrate-operator/images/``, or
``DBMIGRATE_IMAGES_CACHE``) so test runs and fresh clones on one machine share it; each image is
exported as a docker-archive there, which ``import_into_containerd`` loads under its exact ref.

TLS-intercepting proxies: the host's CA bundle is bind-mounted over the image's for the RUN steps
of a build only (``--volume``), with ``--build-arg UV_SYSTEM_CERTS=1 PIP_CERT=...``; nothing of it is
copied into an image.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TextIO

from localcluster.binaries import REPO

ENSURE_SCRIPT = REPO / "scripts" / "ensure-container-tools.sh"
LABEL = "dev.dbmigrate.inputs"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
SHOP_VERSION = "1.4.2"
ALEMBIC_SHOP_VERSION = "2.0.0"
REFS: dict[str, str] = {
    "python": "localhost/dbmigrate/python:3.11-bookworm",
    "pause": "localhost/dbmigrate/pause:3.10",
    "operator": f"localhost/dbmigrate/operator:{VERSION}",
    "migrations": f"localhost/dbmigrate/migrations:{VERSION}",
    "shop": f"localhost/dbmigrate/shop-migrations:{SHOP_VERSION}",
    "app": f"localhost/dbmigrate/shop-web:{SHOP_VERSION}",
    "alembic-shop": f"localhost/dbmigrate/alembic-shop-migrations:{ALEMBIC_SHOP_VERSION}",
}
# buildah's defaults ask for more than root may set without CAP_SYS_RESOURCE
ULIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3.11", "python3.11-venv", "python3-pip", "ca-certificates")
NONROOT_UID = 65532


ARCHIVES_KEPT_DAYS = 14


@dataclass(frozen=True)
class BuiltImage:
    ref: str  # what a pod names, e.g. localhost/dbmigrate/shop-migrations:1.4.2 (the archive's name)
    archive: Path  # a docker-archive holding the image under `ref`
    digest_key: str  # sha256 of the image's inputs

    @property
    def storage_ref(self) -> str:
        """The image's name in our buildah storage (see ``storage_ref``)."""
        return storage_ref(self.ref, self.digest_key)


def storage_ref(ref: str, key: str) -> str:
    """Where an image lives in our buildah storage: its repository, tagged with its inputs' hash.

    The storage is shared by every work tree and clone on the machine, so the user-facing tag
    (``:1.4.2``) is never moved there: two trees with different sources keep both builds.
    """
    return f"{ref.rpartition(':')[0]}:inputs-{key[:20]}"


@dataclass(frozen=True)
class _Spec:
    """An image built by ``buildah build`` from a Dockerfile of the repository."""

    name: str
    dockerfile: Path
    context: Path
    base: str  # the key of the image passed as a build arg
    base_arg: str


SPECS = (
    _Spec("operator", REPO / "Dockerfile", REPO, "python", "PYTHON_IMAGE"),
    _Spec("migrations", REPO / "migrations_image" / "Dockerfile", REPO, "python", "PYTHON_IMAGE"),
    _Spec(
        "shop",
        REPO / "examples" / "shop" / "Dockerfile",
        REPO / "examples" / "shop",
        "migrations",
        "MIGRATIONS_BASE",
    ),
    _Spec(
        "alembic-shop",
        REPO / "examples" / "alembic-shop" / "Dockerfile",
        REPO / "examples" / "alembic-shop",
        "migrations",
        "MIGRATIONS_BASE",
    ),
    _Spec(
        "app",
        REPO / "examples" / "demo" / "app" / "Dockerfile",
        REPO / "examples" / "demo" / "app",
        "python",
        "PYTHON_IMAGE",
    ),
)


def cache_dir() -> Path:
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("DBMIGRATE_IMAGES_CACHE") or xdg / "dbmigrate-operator" / "images")


def _runroot() -> Path:
    # run state (locks, mount bookkeeping) belongs on storage that a reboot clears
    digest = hashlib.sha256(str(cache_dir()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"dbmigrate-images-run-{os.getuid()}-{digest}"


def buildah_command(*args: str) -> list[str]:
    """``buildah`` on our own storage (``--root``/``--runroot``), overlay driver."""
    return [
        "buildah",
        "--root",
        str(cache_dir() / "storage"),
        "--runroot",
        str(_runroot()),
        "--storage-driver",
        "overlay",
        *args,
    ]


class _Log:
    def __init__(self, out: TextIO | None) -> None:
        self.out = out or sys.stderr

    def __call__(self, message: str) -> None:
        print(f"[images] {message}", file=self.out, flush=True)


def _run(argv: Sequence[str], log: _Log | None = None, env: Mapping[str, str] | None = None) -> str:
    """Run a command; stream its output to ``log`` (when given); return it; fail with its tail."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if log is not None:
            log(f"  {line.rstrip()}")
    if proc.wait() != 0:
        tail = "".join(lines[-40:])
        raise RuntimeError(f"{' '.join(argv)} failed with exit code {proc.returncode}:\n{tail}")
    return "".join(lines)


def _buildah(*args: str, log: _Log | None = None) -> str:
    return _run(buildah_command(*args), log)


def ensure_tools() -> None:
    """Install buildah, debootstrap, containerd/ctr, runc and catatonit when one is missing."""
    needed = ("buildah", "debootstrap", "containerd", "ctr", "runc", "catatonit")
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    if all(shutil.which(tool, path=path) for tool in needed):
        return
    subprocess.run(["bash", str(ENSURE_SCRIPT)], check=True)


# -- input hashing ------------------------------------------------------------------------------


def _dockerignore_patterns(context: Path) -> list[tuple[bool, str]] | None:
    file = context / ".dockerignore"
    if not file.exists():
        return None
    patterns: list[tuple[bool, str]] = []
    for raw in file.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        patterns.append((negate, pattern))
    return patterns


def _pattern_matches(pattern: str, rel: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent folders."""
    parts = rel.split("/")
    regex = _glob_regex(pattern)
    return any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1))


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def _ignored(rel: str, patterns: list[tuple[bool, str]]) -> bool:
    ignored = False
    for negate, pattern in patterns:
        if _pattern_matches(pattern, rel):
            ignored = not negate
    return ignored


def _may_hold_exceptions(rel_dir: str, patterns: list[tuple[bool, str]]) -> bool:
    """Whether a ``!`` pattern could re-include something under an ignored folder."""
    parts = rel_dir.split("/")
    for negate, pattern in patterns:
        if not negate:
            continue
        pparts = pattern.split("/")
        if pparts[0].startswith("**"):
            return True
        if all(fnmatchcase(part, pp) for part, pp in zip(parts, pparts, strict=False)):
            return True
    return False


def context_files(context: Path) -> list[str]:
    """The files of a build context that reach the build: .dockerignore applied, else git's files."""
    patterns = _dockerignore_patterns(context)
    if patterns is None:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "."],
            cwd=context,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return sorted(f for f in listed.split("\0") if f and (context / f).is_file())
    files: list[str] = []
    for folder, dirs, names in os.walk(context):
        rel_folder = os.path.relpath(folder, context)
        rel_folder = "" if rel_folder == "." else rel_folder + "/"
        keep = []
        for d in sorted(dirs):
            rel = rel_folder + d
            if d == ".git" or (_ignored(rel, patterns) and not _may_hold_exceptions(rel, patterns)):
                continue
            keep.append(d)
        dirs[:] = keep
        files += [rel_folder + n for n in names if not _ignored(rel_folder + n, patterns)]
    return sorted(files)


def _hash(parts: Mapping[str, object], files: Iterable[tuple[str, Path]] = ()) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode())
    for rel, path in files:
        digest.update(f"\0{rel}\0{path.stat().st_mode & 0o111:o}\0".encode())
        digest.update(path.read_bytes() if not path.is_symlink() else os.readlink(path).encode())
    return digest.hexdigest()


# -- images in our storage ----------------------------------------------------------------------


def _inspect(ref: str) -> dict[str, object] | None:
    done = subprocess.run(
        buildah_command("inspect", "--type", "image", ref), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return None
    data: dict[str, object] = json.loads(done.stdout)
    return data


def image_id(ref: str) -> str:
    info = _inspect(ref)
    if info is None:
        raise RuntimeError(f"no image {ref} in {cache_dir() / 'storage'}")
    return str(info["FromImageID"])


def image_config(ref: str) -> dict[str, object]:
    """The OCI image config (``config`` part: User, Env, Entrypoint, Cmd, Labels, ...)."""
    info = _inspect(ref)
    if info is None:
        raise RuntimeError(f"no image {ref}")
    oci = info["OCIv1"]
    assert isinstance(oci, dict)
    config: dict[str, object] = oci.get("config") or {}
    return config


def _label(ref: str) -> str | None:
    info = _inspect(ref)
    if info is None:
        return None
    oci = info["OCIv1"]
    assert isinstance(oci, dict)
    labels = (oci.get("config") or {}).get("Labels") or {}
    value = labels.get(LABEL)
    return str(value) if value else None


def _export(name: str, key: str, log: _Log) -> Path:
    """A docker-archive of the image under its user-facing ref, named after its inputs.

    Archives unused for ARCHIVES_KEPT_DAYS are removed (other trees may still use recent ones).
    """
    folder = cache_dir() / "archives" / name
    archive = folder / f"{key[:20]}.docker.tar"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.tar"):
        if old != archive and time.time() - old.stat().st_mtime > ARCHIVES_KEPT_DAYS * 86400:
            old.unlink(missing_ok=True)
    if archive.exists():
        archive.touch()
        return archive
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    log(f"exporting {REFS[name]} to {archive}")
    # by id: pushing by name would add the storage tag to the archive's RepoTags
    image = image_id(storage_ref(REFS[name], key))
    _buildah("push", "--quiet", image, f"docker-archive:{partial}:{REFS[name]}")
    partial.rename(archive)
    return archive


def _cached(name: str, key: str, log: _Log) -> BuiltImage | None:
    if _label(storage_ref(REFS[name], key)) != key:
        return None
    return BuiltImage(REFS[name], _export(name, key, log), key)


# -- the Python base: debootstrap ---------------------------------------------------------------


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
        elif not line.startswith("#") and ":" in line and not line[0].isspace():
            key, _, value = line.partition(":")
            current[key.strip().lower()] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def debian_mirrors() -> tuple[str, str]:
    """The machine's Debian mirror and security mirror for bookworm (from /etc/apt/sources.list*)."""
    mirror = os.environ.get("DBMIGRATE_DEBIAN_MIRROR", "")
    security = os.environ.get("DBMIGRATE_DEBIAN_SECURITY_MIRROR", "")
    entries: list[tuple[str, list[str]]] = []
    apt = Path("/etc/apt")
    for file in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]:
        if not file.is_file():
            continue
        if file.suffix == ".sources":
            for stanza in _deb822_stanzas(file.read_text()):
                if "deb" in stanza.get("types", "").split():
                    for uri in stanza.get("uris", "").split():
                        entries.append((uri, stanza.get("suites", "").split()))
        elif file.suffix == ".list" or file.name == "sources.list":
            for line in file.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb":
                    entries.append((words[1], [words[2]]))
    for uri, suites in entries:
        if not mirror and SUITE in suites:
            mirror = uri
        if not security and f"{SUITE}-security" in suites:
            security = uri
    return (mirror or "http://deb.debian.org/debian", security or "http://deb.debian.org/debian-security")


# Run in the new root after debootstrap: security/updates, the `python` name, a non-root user, and
# what a container image does not need (apt lists and caches, docs, man pages, locales).
_FINISH = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
rm -f /etc/apt/sources.list
cat > /etc/apt/sources.list.d/debian.sources <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat > /etc/dpkg/dpkg.cfg.d/dbmigrate-slim <<EOF
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
cat > /etc/apt/apt.conf.d/dbmigrate-slim <<EOF
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
EOF
apt-get update -qq
apt-get -y -qq upgrade
apt-get clean
# like the python images: pip installs into /usr/local, so `python -m pip install uv` works
rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
ln -sf /usr/bin/python3.11 /usr/local/bin/python
ln -sf /usr/bin/python3.11 /usr/local/bin/python3
printf '#!/bin/sh\nexec /usr/bin/python3.11 -m pip "$@"\n' > /usr/local/bin/pip
chmod 0755 /usr/local/bin/pip
grep -q '^nonroot:' /etc/group || echo 'nonroot:x:65532:' >> /etc/group
grep -q '^nonroot:' /etc/passwd \
  || echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin' >> /etc/passwd
mkdir -p /home/nonroot && chown 65532:65532 /home/nonroot && chmod 0750 /home/nonroot
find /usr/share/doc -mindepth 1 ! -name copyright ! -type d -delete
find /usr/share/doc -mindepth 1 -type d -empty -delete
rm -rf /usr/share/man/* /usr/share/info/* /usr/share/lintian/* /usr/share/locale/*
rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/lib/dpkg/*-old
find /var/log -type f -delete
rm -rf /tmp/* /var/tmp/* /root/.cache
: > /etc/resolv.conf
: > /etc/hostname
rm -f /etc/machine-id
"""


def _python_key(mirror: str, security: str) -> str:
    return _hash(
        {
            "image": "python",
            "suite": SUITE,
            "packages": DEBIAN_PACKAGES,
            "mirror": mirror,
            "security": security,
            "finish": _FINISH,
            "day": time.strftime("%G-W%V"),  # weekly: pick up Debian's security updates
        }
    )


@contextlib.contextmanager
def _proc_mounted(root: Path) -> Iterator[None]:
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)


@contextlib.contextmanager
def _scratch_container() -> Iterator[str]:
    """A new working container FROM scratch, removed again if building on it fails."""
    container = _buildah("from", "--pull=never", "scratch").strip()
    try:
        yield container
    except BaseException:
        subprocess.run(buildah_command("rm", container), capture_output=True, check=False)
        raise


def _commit(container: str, name: str, key: str, *config: str) -> None:
    """Set the image config (and the inputs' hash label), then commit under its hash tag."""
    _buildah("config", *config, "--label", f"{LABEL}={key}", container)
    _buildah("commit", "--quiet", "--rm", container, storage_ref(REFS[name], key))


def _build_python(log: _Log) -> BuiltImage:
    mirror, security = debian_mirrors()
    key = _python_key(mirror, security)
    cached = _cached("python", key, log)
    if cached:
        return cached
    log(f"debootstrap {SUITE} from {mirror} (+ {', '.join(DEBIAN_PACKAGES)}) into a new image")
    with _scratch_container() as container:
        root = Path(_buildah("mount", container).strip())
        debs = cache_dir() / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        _run(
            [
                shutil.which("debootstrap") or "/usr/sbin/debootstrap",
                "--variant=minbase",
                f"--cache-dir={debs}",
                f"--include={','.join(DEBIAN_PACKAGES)}",
                SUITE,
                str(root),
                mirror,
            ],
            log,
        )
        with _proc_mounted(root):
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MIRROR": mirror, "SECURITY": security}
            _run(["chroot", str(root), "/bin/sh", "-c", _FINISH], log, env=env)
        _buildah("umount", container)
        _commit(
            container,
            "python",
            key,
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            "--cmd",
            '["python3"]',
            "--label",
            f"org.opencontainers.image.description=Debian {SUITE} minbase, Python 3.11 (localcluster)",
        )
    return BuiltImage(REFS["python"], _export("python", key, log), key)


# -- pause: catatonit FROM scratch --------------------------------------------------------------


def _build_pause(log: _Log) -> BuiltImage:
    binary = Path(shutil.which("catatonit") or "/usr/bin/catatonit").resolve()
    file_info = subprocess.run(["file", "-b", str(binary)], capture_output=True, text=True, check=False)
    if "dynamically linked" in file_info.stdout:
        raise RuntimeError(f"{binary} is not static ({file_info.stdout.strip()}): it cannot run FROM scratch")
    recipe = {"image": "pause", "entrypoint": ["/catatonit", "-P"], "user": "65535:65535"}
    key = _hash(recipe, [("catatonit", binary)])
    cached = _cached("pause", key, log)
    if cached:
        return cached
    log(f"pause image from {binary}")
    with _scratch_container() as container:
        _buildah("copy", "--chmod", "0755", container, str(binary), "/catatonit")
        _commit(
            container,
            "pause",
            key,
            "--entrypoint",
            '["/catatonit", "-P"]',
            "--cmd",
            "",
            "--user",
            "65535:65535",
        )
    return BuiltImage(REFS["pause"], _export("pause", key, log), key)


# -- Dockerfile images --------------------------------------------------------------------------


def _tls_build_options(dockerfile: str) -> list[str]:
    """Trust the host's CA bundle (e.g. a TLS-intercepting proxy's) in RUN steps, and only there."""
    bundle = Path(os.environ.get("DBMIGRATE_BUILD_CA_BUNDLE") or HOST_CA_BUNDLE)
    if not bundle.is_file():
        return []
    target = "/etc/ssl/certs/ca-certificates.crt"
    options = ["--volume", f"{bundle}:{target}:ro"]
    declared = set(re.findall(r"^\s*ARG\s+(\w+)", dockerfile, re.MULTILINE))
    for name, value in (("UV_SYSTEM_CERTS", "1"), ("PIP_CERT", target)):
        if name in declared:
            options += ["--build-arg", f"{name}={value}"]
    return options


def _build_dockerfile(spec: _Spec, base: BuiltImage, log: _Log) -> BuiltImage:
    build_args = {spec.base_arg: base.storage_ref}
    files = context_files(spec.context)
    key = _hash(
        {
            "image": spec.name,
            "ref": REFS[spec.name],
            "dockerfile": spec.dockerfile.read_text(),
            "base_id": image_id(base.storage_ref),
            "build_args": build_args,
        },
        [(rel, spec.context / rel) for rel in files],
    )
    cached = _cached(spec.name, key, log)
    if cached:
        return cached
    log(f"building {REFS[spec.name]} from {spec.dockerfile.relative_to(REPO)}")
    isolation = os.environ.get("DBMIGRATE_BUILDAH_ISOLATION", "chroot")
    args = [
        "build",
        "--layers",
        "--pull=never",
        f"--isolation={isolation}",
        "--network=host",
        *ULIMITS,
        *_tls_build_options(spec.dockerfile.read_text()),
        "--label",
        f"{LABEL}={key}",
        "-f",
        str(spec.dockerfile),
        "-t",
        storage_ref(REFS[spec.name], key),
    ]
    for name, value in build_args.items():
        args += ["--build-arg", f"{name}={value}"]
    _buildah(*args, str(spec.context), log=log)
    return BuiltImage(REFS[spec.name], _export(spec.name, key, log), key)


def collect_garbage(log: _Log | None = None, dangling_days: float = 2) -> None:
    """Remove storage images nobody uses: an ``inputs-`` tag whose archive was pruned (unused for
    ARCHIVES_KEPT_DAYS), and untagged images (old builds, layer cache) older than ``dangling_days``."""
    names_of = {ref.rpartition(":")[0]: name for name, ref in REFS.items()}
    listed = json.loads(_buildah("images", "--json") or "[]")
    stale: list[str] = []
    for image in listed:
        names = image.get("names") or []
        if not names:
            if time.time() - float(image.get("created") or time.time()) > dangling_days * 86400:
                stale.append(image["id"])
            continue
        unused = 0
        for full in names:
            repo, _, tag = full.rpartition(":")
            name = names_of.get(repo)
            key = tag.removeprefix("inputs-")
            archived = name and any((cache_dir() / "archives" / name).glob(f"{key}*.tar"))
            if name and tag.startswith("inputs-") and not archived:
                unused += 1
        if unused == len(names):
            stale.append(image["id"])
    for image_id_ in stale:  # in use by a container or a child image: kept, and retried next time
        subprocess.run(buildah_command("rmi", image_id_), capture_output=True, check=False)
    if stale and log:
        log(f"removed {len(stale)} unused images from {cache_dir() / 'storage'}")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    lock = cache_dir() / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_images(progress: TextIO | None = None) -> dict[str, BuiltImage]:
    """Build what changed (a warm run takes seconds); every image exported as an archive."""
    log = _Log(progress)
    ensure_tools()
    started = time.monotonic()
    with _locked():
        images = {"python": _build_python(log), "pause": _build_pause(log)}
        for spec in SPECS:
            images[spec.name] = _build_dockerfile(spec, images[spec.base], log)
        collect_garbage(log)
    log(f"{len(images)} images ready in {time.monotonic() - started:.1f} s")
    return images


def import_into_containerd(address: Path, images: Iterable[BuiltImage], namespace: str = "k8s.io") -> None:
    """Load the archives into the containerd at ``address`` under their exact refs (unpacked)."""
    ctr = [shutil.which("ctr") or "ctr", "--address", str(address), "--namespace", namespace]
    for image in images:
        _run([*ctr, "images", "import", str(image.archive)])
        listed = _run([*ctr, "images", "ls", "-q"])
        if image.ref not in listed.split():
            raise RuntimeError(f"{image.archive} imported, but containerd has no image {image.ref}: {listed}")
