"""The real images (localcluster/images.py): built with buildah, imported into a real containerd and
run there with runc, as the kubelet would run them (image user, read-only root filesystem)."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from dbmigrate_runner.report import Outcome, Report, decode
from localcluster.images import (
    REFS,
    BuiltImage,
    buildah_command,
    ensure_images,
    image_config,
    import_into_containerd,
)
from localcluster.postgres import PostgresServer
from tests.images.conftest import ROOT

pytestmark = [pytest.mark.realnode, pytest.mark.timeout(3600)]

FINAL = ("operator", "migrations", "shop", "alembic-shop", "app")
LOCAL_CAS = sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt"))
SHOP = ROOT / "examples" / "shop"


@pytest.fixture(scope="session")
def images() -> dict[str, BuiltImage]:
    return ensure_images()


class Containerd:
    """A containerd of our own (own root, state and socket; no CRI) and `ctr` against it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "containerd.sock"
        config = base / "config.toml"
        disabled = [
            "io.containerd.grpc.v1.cri",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.zfs",
        ]
        config.write_text(
            "version = 2\n"
            f'root = "{base / "root"}"\n'
            f'state = "{base / "state"}"\n'
            f"disabled_plugins = {disabled!r}\n".replace("'", '"')
            + f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
            '[debug]\n  address = ""\n'
            '[metrics]\n  address = ""\n'
        )
        self.log = (base / "containerd.log").open("w")
        self.proc = subprocess.Popen(
            ["containerd", "--config", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while self.ctr("version", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"containerd did not start: {(base / 'containerd.log').read_text()[-3000:]}"
                )
            time.sleep(0.2)

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    def run(
        self,
        ref: str,
        *args: str,
        env: dict[str, str] | None = None,
        mounts: Sequence[str] = (),
        net_host: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """`ctr run --rm --read-only`: the image's user, entrypoint, workdir and env, like a pod."""
        options = ["--rm", "--read-only"]
        options += ["--net-host"] if net_host else []
        for key, value in (env or {}).items():
            options += ["--env", f"{key}={value}"]
        for mount in mounts:
            options += ["--mount", mount]
        return self.ctr("run", *options, ref, f"t-{uuid.uuid4().hex[:12]}", *args, check=False)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def containerd(
    images: dict[str, BuiltImage], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Containerd]:
    daemon = Containerd(tmp_path_factory.mktemp("containerd"))
    try:
        import_into_containerd(daemon.socket, images.values())
        yield daemon
    finally:
        daemon.stop()


def test_every_image_is_built_under_its_ref_with_its_input_hash(images: dict[str, BuiltImage]) -> None:
    assert set(images) == {"python", "pause", "operator", "migrations", "shop", "alembic-shop", "app"}
    assert REFS["shop"] == "localhost/dbmigrate/shop-migrations:1.4.2"
    for name, image in images.items():
        assert image.ref == REFS[name]
        assert image.archive.is_file()
        assert image.digest_key[:20] in image.archive.name
        labels = image_config(image.storage_ref).get("Labels")
        assert isinstance(labels, dict)
        assert labels["dev.dbmigrate.inputs"] == image.digest_key


def test_a_warm_run_rebuilds_nothing(images: dict[str, BuiltImage]) -> None:
    log = io.StringIO()
    again = ensure_images(log)
    assert again == images
    assert not [line for line in log.getvalue().splitlines() if "building" in line or "debootstrap" in line]


def test_containerd_has_every_image_under_its_exact_ref(
    containerd: Containerd, images: dict[str, BuiltImage]
) -> None:
    listed = containerd.ctr("images", "ls", "-q").stdout.split()
    assert set(REFS.values()) <= set(listed)
    assert not [ref for ref in listed if ":inputs-" in ref], "the storage tags leaked into the archives"
    # importing again (the node does it on every start) is harmless
    import_into_containerd(containerd.socket, [images["pause"]])


@pytest.mark.parametrize("name", FINAL)
def test_final_images_run_as_uid_65532(
    name: str, containerd: Containerd, images: dict[str, BuiltImage]
) -> None:
    assert image_config(images[name].storage_ref).get("User") == "65532:65532"
    done = containerd.run(REFS[name], "python", "-c", "import os; print(os.getuid(), os.getgid())")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["65532", "65532"]


def test_migrations_image_runner_help_on_a_read_only_root(containerd: Containerd) -> None:
    done = containerd.run(REFS["migrations"], "dbmigrate-runner", "--help")
    assert done.returncode == 0, done.stdout + done.stderr
    for command in ("upgrade", "downgrade", "status"):
        assert command in done.stdout


def test_operator_image_knows_its_version(containerd: Containerd) -> None:
    done = containerd.run(REFS["operator"], "dbmigrate-operator", "--version")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["dbmigrate-operator", "0.1.0"]
    absent = containerd.run(REFS["operator"], "python", "-c", "import tortoise")
    assert absent.returncode != 0, "the runner's dependencies must not be in the operator image"


@pytest.mark.postgres
@pytest.mark.parametrize("tool", ["aerich", "tortoise"])
def test_shop_image_migrates_then_is_a_no_op(
    containerd: Containerd, postgres: PostgresServer, database: str, tmp_path: Path, tool: str
) -> None:
    """The example image as the Job runs it: entrypoint + default command, env, host network."""
    tmp_path.chmod(0o777)  # the container's user writes its report there
    env = {
        "DATABASE_URL": postgres.url(database),
        "DBMIGRATE_REPORT_PATH": "/report/termination-log",
        "DBMIGRATE_TOOL": tool,
    }
    mounts = [f"type=bind,src={tmp_path},dst=/report,options=rbind:rw"]
    expected = sorted(
        p.stem
        for p in (SHOP / ("migrations/models" if tool == "aerich" else "shop/migrations")).glob("[0-9]*.py")
    )

    def run(*command: str) -> Report:
        (tmp_path / "termination-log").unlink(missing_ok=True)
        done = containerd.run(REFS["shop"], *command, env=env, mounts=mounts, net_host=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert postgres.password not in done.stdout + done.stderr
        return decode((tmp_path / "termination-log").read_text())

    first = run()  # the image's own entrypoint and CMD (upgrade)
    assert first.outcome is Outcome.SUCCEEDED
    assert first.applied_count == len(expected)
    assert first.apps["models"].current == expected[-1]
    again = run("dbmigrate-runner", "upgrade")
    assert again.outcome is Outcome.SUCCEEDED
    assert again.applied_count == 0


def test_app_image_serves_http(containerd: Containerd) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"app-{uuid.uuid4().hex[:8]}"
    ref = REFS["app"]
    command = ["ctr", "--address", str(containerd.socket), "-n", "k8s.io", "run", "--rm", "--read-only"]
    proc = subprocess.Popen(
        [*command, "--net-host", ref, name, "python", "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    assert b"shop-web" in response.read()
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the app container did not serve"
                time.sleep(0.3)
    finally:
        containerd.ctr("task", "kill", "--signal", "SIGKILL", name, check=False)
        proc.wait(timeout=60)


def test_pause_image_pauses_and_stops_on_sigterm(containerd: Containerd) -> None:
    name = f"pause-{uuid.uuid4().hex[:8]}"
    command = ["ctr", "--address", str(containerd.socket), "-n", "k8s.io", "run", "--rm", "--read-only"]
    proc = subprocess.Popen([*command, REFS["pause"], name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "RUNNING" not in containerd.ctr("task", "ls").stdout:
            assert proc.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(0.5)
        assert proc.poll() is None, "the pause container exited on its own"
        containerd.ctr("task", "kill", name)  # SIGTERM
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            containerd.ctr("task", "kill", "--signal", "SIGKILL", name, check=False)
            proc.wait(timeout=30)


def _ca_fingerprints() -> tuple[list[bytes], list[bytes]]:
    """Distinctive bytes of each locally added CA (the intercepting proxy's): PEM lines, DER."""
    pem: list[bytes] = []
    der: list[bytes] = []
    for path in LOCAL_CAS:
        lines = [line for line in path.read_text().splitlines() if line and not line.startswith("-----")]
        pem += [line.encode() for line in lines[2:4]]
        der.append(base64.b64decode("".join(lines))[32:96])
    return pem, der


@pytest.mark.parametrize("name", ["python", *FINAL])
def test_images_hold_no_locally_added_ca(name: str, images: dict[str, BuiltImage]) -> None:
    """The build trusted the host's bundle (proxy CA included) through a mount only."""
    container = subprocess.run(
        buildah_command("from", "--pull=never", images[name].storage_ref),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        root = Path(
            subprocess.run(
                buildah_command("mount", container), capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        assert not list((root / "usr/local/share/ca-certificates").glob("*")), "a local CA was copied in"
        pem, der = _ca_fingerprints()
        marks = pem + der
        # the detector detects: the host's bundle, which the build mounted, holds every local CA
        host_bundle = Path("/etc/ssl/certs/ca-certificates.crt").read_bytes()
        assert all(mark in host_bundle for mark in pem)
        names = {p.name for p in LOCAL_CAS}
        bundle = (root / "etc/ssl/certs/ca-certificates.crt").read_bytes()
        assert bundle.count(b"BEGIN CERTIFICATE") > 100, "not Debian's own bundle"
        found: list[str] = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(folder, d))]
            for file in files:
                path = Path(folder) / file
                if file in names or file.removesuffix(".pem") in {n.removesuffix(".crt") for n in names}:
                    found.append(str(path))
                    continue
                if not path.is_file() or path.is_symlink() or path.stat().st_size > 20_000_000:
                    continue
                data = path.read_bytes()
                if any(mark in data for mark in marks):
                    found.append(str(path))
        assert not found, f"{REFS[name]} holds a locally added CA: {found}"
    finally:
        subprocess.run(buildah_command("rm", container), capture_output=True, check=False)
