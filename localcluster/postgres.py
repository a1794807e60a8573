"""A throwaway PostgreSQL server per test session: initdb + pg_ctl in a temp dir, loopback only.

Runs as a non-root user when the tests run as root (PostgreSQL refuses to run as root).
Host connections need a password (scram), so wrong-credential tests are real.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dbmigrate_runner.database import LOCK_KEY

SUPERUSER = "postgres"
PASSWORD = "s3cr3t-Pa55word"  # tests grep every output for this string


def find_bindir() -> Path:
    """Where initdb/pg_ctl live; Debian keeps them out of PATH under /usr/lib/postgresql/N/bin."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for cand in candidates:
        if Path(cand, "initdb").exists():
            return Path(cand)
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(
        "PostgreSQL server binaries not found: run `make postgres` (apt-get install postgresql)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_user() -> str | None:
    """A non-root account to own the cluster when we are root; created if none fits."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "dbmigrate-pg"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(["useradd", "--system", "--no-create-home", "dbmigrate-pg"], check=True)
    return "dbmigrate-pg"


@dataclass
class PostgresServer:
    host: str
    port: int
    socket_dir: Path
    bindir: Path
    user: str = SUPERUSER
    password: str = PASSWORD

    def url(self, dbname: str, *, user: str | None = None, password: str | None = None) -> str:
        return (
            f"postgres://{user or self.user}:{password if password is not None else self.password}"
            f"@{self.host}:{self.port}/{dbname}"
        )

    def psql(self, dbname: str, sql: str) -> str:
        """Run SQL over the unix socket (trust auth) and return unaligned, tuples-only output."""
        out = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                dbname,
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def create_database(self, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.psql("postgres", f'CREATE DATABASE "{name}"')
        return name


@dataclass(frozen=True)
class Instance:
    """A started server's directory and how to reach and stop it (shared with scripts/pg.py)."""

    root: Path  # data/, sock/ and log live here
    port: int
    bindir: Path
    run_user: str | None  # the non-root account that owns it, when we are root

    def server(self, password: str = PASSWORD, host: str = "127.0.0.1") -> PostgresServer:
        return PostgresServer(
            host=host,
            port=self.port,
            socket_dir=self.root / "sock",
            bindir=self.bindir,
            password=password,
        )

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is ended (as in a restart or failover), and the
        server is back on the same port when this returns."""
        self._pg_ctl("-l", str(self.root / "log"), "-m", "fast", "-w", "restart")

    def _pg_ctl(self, *args: str) -> None:
        _run_as(self.run_user, self.root, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), *args)

    def stop(self) -> None:
        """Immediate shutdown and removal of the directory; fine to call twice or after a failed start."""
        if (self.root / "data").exists():
            with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
                self._pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def _run_as(user: str | None, cwd: Path, *args: str) -> None:
    prefix = ["runuser", "-u", user, "--"] if user else []
    subprocess.run([*prefix, *args], check=True, capture_output=True, text=True, cwd=cwd)


def start_instance(
    password: str,
    *,
    prefix: str = "dbmigrate-pg-",
    options: str = "",
    listen: tuple[str, ...] = ("127.0.0.1",),
    clients: tuple[str, ...] = (),
) -> Instance:
    """initdb + `pg_ctl start` (the server daemonizes) in a fresh directory; removed again on failure.

    The directory is under /tmp, not the caller's: the non-root account must reach it. `listen`:
    the addresses it listens on; `clients`: CIDRs besides loopback allowed in with the password
    (the real node's pods connect from the pod network to the node's address).
    """
    bindir, user = find_bindir(), _run_user()
    root = Path(tempfile.mkdtemp(prefix=prefix))
    instance = Instance(root=root, port=_free_port(), bindir=bindir, run_user=user)
    data, sock, pwfile = root / "data", root / "sock", root / "pw"
    sock.mkdir()
    pwfile.write_text(password + "\n")
    if user:
        pw = pwd.getpwnam(user)
        for p in (root, sock, pwfile):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    try:
        _run_as(
            user,
            root,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        pwfile.unlink()
        with (data / "pg_hba.conf").open("a") as hba:
            hba.writelines(f"host all all {cidr} scram-sha-256\n" for cidr in clients)
        addresses = ",".join(listen)
        opts = f"-c listen_addresses={addresses} -p {instance.port} -k {sock} -c fsync=off {options}".strip()
        instance._pg_ctl("-o", opts, "-l", str(root / "log"), "-w", "start")
    except BaseException:
        instance.stop()
        raise
    return instance


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    instance = start_instance(PASSWORD, options="-c max_connections=200")
    try:
        yield instance.server()
    finally:
        instance.stop()


@contextlib.contextmanager
def lock_held_elsewhere(postgres: PostgresServer, database: str) -> Iterator[None]:
    """Another session (psql) holds the runners' advisory lock while the block runs, as a long
    migration elsewhere would."""
    holder = subprocess.Popen(
        [str(postgres.bindir / "psql"), "-X", "-q", "-A", "-t", "-h", str(postgres.socket_dir),
         "-p", str(postgres.port), "-U", postgres.user, "-d", database],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdin is not None
        assert holder.stdout is not None
        holder.stdin.write(f"SELECT pg_advisory_lock({LOCK_KEY});\n\\echo locked\n")
        holder.stdin.flush()
        while holder.stdout.readline().strip() != "locked":
            pass
        yield
    finally:
        holder.kill()
        holder.wait()
