"""A detached throwaway PostgreSQL for the demo: `start()` leaves it running, `stop()` removes it.

Started by the tests' own `start_instance` (localcluster/postgres.py: initdb in a temp dir, loopback
only, scram passwords, a non-root account when run as root), but not tied to a `with` block, and
with a fresh random password instead of the tests' fixed one. `python -m scripts.pg start|stop`.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from localcluster.postgres import Instance, PostgresServer, start_instance


@dataclass
class DetachedPostgres:
    """What `stop` needs, JSON-serialisable (the demo keeps it in its state file)."""

    root: str
    port: int
    password: str
    bindir: str
    run_user: str | None

    @property
    def instance(self) -> Instance:
        return Instance(
            root=Path(self.root), port=self.port, bindir=Path(self.bindir), run_user=self.run_user
        )

    @property
    def server(self) -> PostgresServer:
        return self.instance.server(self.password)

    def pid(self) -> int | None:
        """The postmaster's pid, from its pid file (None once stopped)."""
        try:
            return int((Path(self.root) / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def start(listen: tuple[str, ...] = ("127.0.0.1",), clients: tuple[str, ...] = ()) -> DetachedPostgres:
    """Start a server with a fresh password; it outlives this process (`pg_ctl start` daemonizes).
    `listen`/`clients`: see `start_instance` (the real node's pods connect over its bridge)."""
    password = secrets.token_urlsafe(18)
    started = start_instance(password, prefix="dbmigrate-demo-pg-", listen=listen, clients=clients)
    return DetachedPostgres(str(started.root), started.port, password, str(started.bindir), started.run_user)


def stop(state: DetachedPostgres) -> None:
    """Immediate shutdown and removal of its directory (idempotent)."""
    state.instance.stop()


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
