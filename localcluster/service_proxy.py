"""A kube-proxy stand-in for the apiserver's own outbound traffic (webhooks, aggregated APIs).

kube-apiserver is started with an EgressSelectorConfiguration whose `cluster` egress is an HTTP
CONNECT proxy on a Unix socket: this one. A `CONNECT <ClusterIP>:<port>` (what the apiserver dials
for a webhook's `clientConfig.service`) goes to the local port the test mapped for that Service
(`Cluster.map_service`), so a chart's Service-based webhook reaches an operator running as a local
process. Loopback destinations (`url:` webhooks on 127.0.0.1) pass straight through; anything else
is refused: no traffic ever leaves loopback.

Service map file (JSON, re-read per connection): {"<ns>/<name>[:<port>]": <local port>}.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("service-proxy")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class ServiceProxy:
    def __init__(self, socket_path: Path, service_map_file: Path, core: Any) -> None:
        self.socket_path, self.service_map_file, self.core = socket_path, service_map_file, core

    def resolve(self, host: str, port: int) -> tuple[str, int]:
        """Where a CONNECT target really goes; LookupError with a readable reason if nowhere."""
        if _loopback(host):
            return host, port
        labels = host.split(".")
        if len(labels) >= 3 and labels[2] == "svc":  # name.namespace.svc[.cluster.local]
            ns, name = labels[1], labels[0]
        else:
            services = self.core.list_service_for_all_namespaces().items
            match = [s for s in services if s.spec.cluster_ip == host]
            if not match:
                raise LookupError(f"{host}:{port} is not a Service ClusterIP and not loopback")
            ns, name = match[0].metadata.namespace, match[0].metadata.name
        mapping = json.loads(self.service_map_file.read_text()) if self.service_map_file.exists() else {}
        local = mapping.get(f"{ns}/{name}:{port}") or mapping.get(f"{ns}/{name}")
        if not local:
            raise LookupError(f"service {ns}/{name} port {port} is not mapped to a local port (map_service)")
        return "127.0.0.1", int(local)

    def handle(self, conn: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    conn.close()
                    return
                data += chunk
            head, rest = data.split(b"\r\n\r\n", 1)
            method, target = head.split(b"\r\n", 1)[0].decode().split(" ")[:2]
            host, _, port = target.rpartition(":")
            if method != "CONNECT":
                raise LookupError(f"only CONNECT is supported, got {method}")
            dest = self.resolve(host.strip("[]"), int(port))
            upstream = socket.create_connection(dest, timeout=10)
            upstream.settimeout(None)
        except (LookupError, OSError, ValueError) as exc:
            log.warning("egress refused: %s", exc)
            with contextlib.suppress(OSError):
                conn.sendall(
                    f"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nX-Reason: {exc}\r\n\r\n".encode()
                )
            conn.close()
            return
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            upstream.sendall(rest)
        back = threading.Thread(target=_pipe, args=(upstream, conn), daemon=True)
        back.start()
        _pipe(conn, upstream)
        back.join()
        conn.close()
        upstream.close()

    def serve_forever(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.socket_path))
        server.listen(128)
        log.info("egress proxy on %s", self.socket_path)
        while True:
            conn, _ = server.accept()
            threading.Thread(target=self.handle, args=(conn,), daemon=True, name="egress").start()
