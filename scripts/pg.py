"""A detached throwaway PostgreSQL for the demo: `start()` leaves it running, `stop()` removes it.

The same server as the tests' fixture (tests/support/postgres.py: initdb in a temp dir, loopback
only, scram passwords, a non-root account when run as root), but not tied to a `with` block, and
with a fresh random password instead of the tests' fixed one. `python -m scripts.pg start|stop`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.support.postgres import SUPERUSER, PostgresServer, _free_port, _run_user, find_bindir


@dataclass
class DetachedPostgres:
    """What `stop` needs, JSON-serialisable (the demo keeps it in its state file)."""

    root: str
    port: int
    password: str
    bindir: str
    run_user: str | None

    @property
    def server(self) -> PostgresServer:
        return PostgresServer(
            host="127.0.0.1",
            port=self.port,
            socket_dir=Path(self.root) / "sock",
            bindir=Path(self.bindir),
            password=self.password,
        )

    def pid(self) -> int | None:
        """The postmaster's pid, from its pid file (None once stopped)."""
        try:
            return int((Path(self.root) / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _run(prefix: list[str], *args: str, cwd: Path) -> None:
    subprocess.run([*prefix, *args], check=True, capture_output=True, text=True, cwd=cwd)


def start() -> DetachedPostgres:
    """initdb + `pg_ctl start` (which daemonizes); the server outlives this process."""
    bindir = find_bindir()
    user = _run_user()
    # Under /tmp, not the caller's dir: the non-root account must reach it (pytest's tmp is 0700).
    root = Path(tempfile.mkdtemp(prefix="dbmigrate-demo-pg-"))
    sock = root / "sock"
    sock.mkdir()
    password = secrets.token_urlsafe(18)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if user:
        pw = pwd.getpwnam(user)
        for p in (root, sock, pwfile):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    prefix = ["runuser", "-u", user, "--"] if user else []
    port = _free_port()
    state = DetachedPostgres(str(root), port, password, str(bindir), user)
    try:
        _run(
            prefix,
            str(bindir / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
            cwd=root,
        )
        pwfile.unlink()
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off"
        log = str(root / "log")
        _run(
            prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(root / "data"),
            "-o",
            opts,
            "-l",
            log,
            "-w",
            "start",
            cwd=root,
        )
    except BaseException:
        stop(state)
        raise
    return state


def stop(state: DetachedPostgres) -> None:
    """Immediate shutdown and removal of its directory (idempotent)."""
    root = Path(state.root)
    if (root / "data").exists():
        prefix = ["runuser", "-u", state.run_user, "--"] if state.run_user else []
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            _run(
                prefix,
                str(Path(state.bindir) / "pg_ctl"),
                "-D",
                str(root / "data"),
                "-m",
                "immediate",
                "-w",
                "stop",
                cwd=Path("/"),
            )
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.pg", description=__doc__)
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--state", type=Path, required=True, help="JSON file written by start, read by stop")
    args = parser.parse_args(argv)
    if args.command == "start":
        state = start()
        args.state.write_text(json.dumps(state.to_json()))
        print(f"PostgreSQL up at 127.0.0.1:{state.port} (state in {args.state})", file=sys.stderr)
    else:
        stop(DetachedPostgres(**json.loads(args.state.read_text())))
        args.state.unlink()


if __name__ == "__main__":
    main()
