"""CLI: `python -m localcluster up|down|env|build|images` for poking at the test cluster by hand.

`up` starts a detached cluster and records it in .cache/cluster/state.json; `env` prints
shell exports (KUBECONFIG, PATH with our kubectl/helm); `down` stops it and removes its data;
`images` builds the container images (localcluster/images.py) and prints their refs and archives,
`images --containerd SOCKET` also imports them into that containerd (namespace k8s.io).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from localcluster.binaries import REPO, ensure_binaries
from localcluster.cluster import Cluster, start

STATE = REPO / ".cache" / "cluster" / "state.json"


def _load() -> Cluster:
    if not STATE.exists():
        sys.exit("no cluster is up (python -m localcluster up)")
    return Cluster.from_state(json.loads(STATE.read_text()))


def _print_env(cluster: Cluster) -> None:
    env = cluster.env()
    for key in ("KUBECONFIG", "PATH", "DBMIGRATE_NODE_IMAGE_MAP_FILE"):
        print(f"export {key}={shlex.quote(env[key])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "env", "build", "images"])
    parser.add_argument("--data-dir", type=Path, help="default: a new temp dir")
    parser.add_argument(
        "--node",
        choices=["kubelet", "agent"],
        default="kubelet",
        help="up: a real node (default) or the node agent",
    )
    parser.add_argument("--containerd", type=Path, help="images: import into the containerd at this socket")
    args = parser.parse_args(argv)
    if args.command == "images":
        from localcluster.images import ensure_images, import_into_containerd

        built = ensure_images()
        for name, image in built.items():
            print(f"{name}\t{image.ref}\t{image.archive}")
        if args.containerd:
            import_into_containerd(args.containerd, built.values())
    elif args.command == "build":
        print(ensure_binaries())
    elif args.command == "up":
        if STATE.exists():
            sys.exit(f"a cluster is already up ({STATE}); run `down` first")
        cluster = start(args.data_dir, detach=True, node=args.node)
        STATE.parent.mkdir(parents=True, exist_ok=True)
        STATE.write_text(json.dumps(cluster.state(), indent=1))
        print(f"# cluster up at {cluster.server}; data in {cluster.data_dir}", file=sys.stderr)
        _print_env(cluster)
    elif args.command == "env":
        _print_env(_load())
    else:
        _load().stop()
        STATE.unlink()


if __name__ == "__main__":
    main()
