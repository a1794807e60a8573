"""A real node for the local cluster: containerd + runc + a CNI bridge + kubelet + kube-proxy.

Everything lives under the cluster's data dir (containerd's root, state and socket, the kubelet's
root and logs, the CNI config and IPAM state) except what a kubelet cannot be told to put
elsewhere; that is recorded before start and put back by `stop()`:
- sysctls the kubelet and the bridge plugin set (`SYSCTLS`) get their old values back;
- iptables chains named `KUBE-*` (kubelet canaries, kube-proxy's Service rules) are removed,
  and the tables are checked against the snapshot taken before start;
- the pods' cgroups live under `/dbmigrate-node` in every v1 hierarchy and are removed;
- the bridge `dbm0` is deleted, mounts under the data dir are unmounted, `/var/log/containers`
  links into the data dir are removed.

The node's address is the bridge's gateway (`NODE_IP`): pods reach the API server, PostgreSQL
and anything else on the host there, and the API server reaches the kubelet there. One real node
runs on a machine at a time (`LOCK`); a crashed one is cleaned up by the next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BRIDGE = "dbm0"
POD_CIDR = "10.213.0.0/24"
NODE_IP = "10.213.0.1"  # the bridge's address: the node's InternalIP, the pods' gateway
SERVICE_CIDR = "10.214.0.0/24"  # not the node agent's, so both kinds of cluster can run at once
CGROUP_PARENT = "dbmigrate-node"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CNI_BIN = Path("/usr/lib/cni")
STATE_FILE = Path("/run/dbmigrate-operator/node.json")
LOCK = Path("/run/dbmigrate-operator/node.lock")
SYSCTLS = (
    "net/ipv4/ip_forward",
    "kernel/panic",
    "kernel/panic_on_oops",
    "vm/overcommit_memory",
    "net/ipv4/conf/all/route_localnet",
)
TOOLS = ("containerd", "runc", "iptables", "ip")
ENSURE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ensure-container-tools.sh"


class NodeBusy(RuntimeError):
    """Another local real node is running on this machine."""


def ensure_tools() -> None:
    """Install containerd, runc, the CNI plugins and iptables from Debian's packages when absent."""
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    if all(shutil.which(t, path=path) for t in TOOLS) and (CNI_BIN / "bridge").exists():
        return
    subprocess.run(["bash", str(ENSURE_SCRIPT)], check=True)


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def read_sysctls() -> dict[str, str]:
    return {name: _sysctl_path(name).read_text().strip() for name in SYSCTLS if _sysctl_path(name).exists()}


def restore_sysctls(saved: dict[str, str]) -> None:
    for name, value in saved.items():
        with contextlib.suppress(OSError):
            if _sysctl_path(name).read_text().strip() != value:
                _sysctl_path(name).write_text(value)


IPTABLES = ("iptables", "ip6tables")
BUILTIN_CHAINS = {"INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"}


def iptables_rules() -> str:
    """The machine's IPv4 and IPv6 rules and chains, without counters, comments or the empty
    tables and default-ACCEPT built-in chains that merely listing or touching a table creates."""
    kept = []
    for tool in IPTABLES:
        out = subprocess.run([f"{tool}-save"], capture_output=True, text=True, check=False).stdout
        table = ""
        for line in out.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A "):
                kept.append(f"{tool} {table} {line}")
            elif line.startswith(":"):
                name, policy = line[1:].split()[:2]
                if name not in BUILTIN_CHAINS or policy != "ACCEPT":
                    kept.append(f"{tool} {table} :{name} {policy}")
    return "\n".join(kept)


def remove_kube_chains() -> None:
    """Delete every rule jumping to a `KUBE-*` chain, then those chains, in every table, IPv4 and
    IPv6 (what kube-proxy and the kubelet leave behind)."""
    for tool in IPTABLES:
        for table in ("filter", "nat", "mangle", "raw"):
            res = subprocess.run([f"{tool}-save", "-t", table], capture_output=True, text=True, check=False)
            if res.returncode != 0:
                continue
            lines = res.stdout.splitlines()
            chains = [line[1:].split()[0] for line in lines if line.startswith(":KUBE-")]
            for line in lines:
                if line.startswith("-A ") and not line.split()[1].startswith("KUBE-") and "KUBE-" in line:
                    subprocess.run([tool, "-t", table, "-D", *shlex.split(line[3:])], capture_output=True)
            for flag in ("-F", "-X"):
                for chain in chains:
                    subprocess.run([tool, "-t", table, flag, chain], capture_output=True, check=False)


def _cgroup_dirs() -> list[Path]:
    """Our parent cgroup in every v1 hierarchy (cgroup v2: the one unified dir)."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT / CGROUP_PARENT]
    return [
        d / CGROUP_PARENT
        for d in sorted(CGROUP_ROOT.iterdir())
        if d.is_dir() and not d.is_symlink() and (d / "cgroup.procs").exists()
    ]


def create_cgroups() -> None:
    for d in _cgroup_dirs():
        d.mkdir(exist_ok=True)
        # cpuset children start empty: inherit the parent's cpus and mems
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (d / knob).exists() and not (d / knob).read_text().strip():
                (d / knob).write_text((d.parent / knob).read_text())


def remove_cgroups() -> None:
    """rmdir bottom-up; killing what is left in them first (a crashed node's containers)."""
    for top in _cgroup_dirs():
        if not top.exists():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                for pid in (d / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def create_bridge() -> None:
    """The bridge exists before the first pod, so PostgreSQL and the API server can listen on it."""
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    prefix = POD_CIDR.split("/")[1]
    subprocess.run(["ip", "addr", "add", f"{NODE_IP}/{prefix}", "dev", BRIDGE], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)


def delete_bridge() -> None:
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)


def unmount_under(directory: Path) -> None:
    """Unmount everything mounted below `directory`, deepest first (tmpfs of projected volumes,
    containerd's rootfs overlays and sandbox /dev/shm)."""
    prefix = str(directory.resolve()) + "/"
    mounts = [
        line.split()[1].encode().decode("unicode_escape")
        for line in Path("/proc/self/mounts").read_text().splitlines()
    ]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def kill_processes_mentioning(needle: str) -> None:
    """SIGKILL processes whose command line names `needle` (containerd shims of a dead node)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle.encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)


def remove_container_log_links(directory: Path) -> None:
    links = Path("/var/log/containers")
    if not links.is_dir():
        return
    prefix = str(directory)
    for link in links.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(prefix):
                link.unlink()


def containerd_config(d: Path, pause_image: str) -> str:
    """containerd 1.6 (config version 2): its own root/state/socket; CRI with our pause image.

    `restrict_oom_score_adj`: root here lacks CAP_SYS_RESOURCE, so lowering a sandbox's
    oom_score_adj would fail every RunPodSandbox.
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[{cri}]
  sandbox_image = "{pause_image}"
  restrict_oom_score_adj = true
  enable_selinux = false
  max_container_log_line_size = 16384
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d.parent}/cni/net.d"
"""


def cni_config(d: Path) -> dict[str, Any]:
    """A bridge on `BRIDGE` with host-local addresses; no masquerade (nothing leaves the machine)."""
    return {
        "cniVersion": "0.4.0",
        "name": "dbmigrate",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(d / "ipam"),
                },
            }
        ],
    }


def kubelet_config(d: Path, *, ca: Path, socket: Path, port: int, healthz_port: int) -> dict[str, Any]:
    """What it took to run kubelet 1.34 here: cgroupfs on cgroup v1, swap tolerated, no negative
    oom_score_adj (no CAP_SYS_RESOURCE), no iptables util chains, evictions only when truly short."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_PARENT}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "makeIPTablesUtilChains": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "podLogsDir": str(d / "pod-logs"),
        "resolvConf": "/etc/resolv.conf",
        "clusterDomain": "cluster.local",
        "serializeImagePulls": False,
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "rotateCertificates": False,
        "registerNode": True,
        "staticPodPath": "",
        "shutdownGracePeriod": "0s",
        "logging": {"verbosity": 1},
    }


def kube_proxy_config(
    kubeconfig: Path, node_name: str, healthz_port: int, metrics_port: int
) -> dict[str, Any]:
    """iptables mode; conntrack and localhost NodePorts left alone so no sysctl changes."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": node_name,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "oomScoreAdj": 0,
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "nodePortAddresses": [f"{NODE_IP}/32"],
    }


@dataclass
class MachineState:
    """What the node changes outside its data dir, as found before it started."""

    sysctls: dict[str, str]
    iptables: str

    @classmethod
    def capture(cls) -> MachineState:
        return cls(read_sysctls(), iptables_rules())

    def to_json(self) -> dict[str, Any]:
        return {"sysctls": self.sysctls, "iptables": self.iptables}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MachineState:
        return cls(dict(data["sysctls"]), str(data["iptables"]))


@dataclass
class NodeHandle:
    """The node's parts on disk, for `crictl`/`ctr` and for cleanup."""

    data_dir: Path
    saved: MachineState
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def containerd_socket(self) -> Path:
        return self.data_dir / "containerd" / "containerd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.containerd_socket}"

    def crictl(self, bin_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [
            str(bin_dir / "crictl"),
            "--runtime-endpoint",
            self.endpoint,
            "--image-endpoint",
            self.endpoint,
        ]
        return subprocess.run([*cmd, *args], capture_output=True, text=True, check=check, timeout=120)


def acquire(data_dir: Path) -> MachineState:
    """Claim the machine's one real node: clean up a dead one's leftovers, refuse a live one."""
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STATE_FILE.exists():
            old = json.loads(STATE_FILE.read_text())
            if any(alive(pid) for pid in old.get("pids", {}).values()):
                raise NodeBusy(
                    f"a local real node is already running (data dir {old['data_dir']}); "
                    "stop it first (`make demo-stop` or `python -m localcluster down`)"
                )
            cleanup(Path(old["data_dir"]), MachineState.from_json(old["saved"]))
        saved = MachineState.capture()
        STATE_FILE.write_text(json.dumps({"data_dir": str(data_dir), "saved": saved.to_json(), "pids": {}}))
        return saved


def record_pids(node: NodeHandle) -> None:
    STATE_FILE.write_text(
        json.dumps({"data_dir": str(node.data_dir), "saved": node.saved.to_json(), "pids": node.pids})
    )


def cleanup(data_dir: Path, saved: MachineState) -> None:
    """Put the machine back as it was found; safe to call twice and after a crash."""
    kill_processes_mentioning(str(data_dir))  # shims and containers' parents named by our paths
    remove_cgroups()
    unmount_under(data_dir)
    delete_bridge()
    remove_kube_chains()
    restore_sysctls(saved.sysctls)
    remove_container_log_links(data_dir)
    with contextlib.suppress(OSError):
        STATE_FILE.unlink()


def alive(pid: int) -> bool:
    """The process exists (ours or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_node_files(
    data_dir: Path, *, pause_image: str, ca: Path, kubelet_ports: tuple[int, int]
) -> dict[str, Path]:
    """containerd, CNI, kubelet and kube-proxy configs under data_dir/node; returns their paths."""
    node = data_dir / "node"
    (node / "containerd").mkdir(parents=True, exist_ok=True)
    (node / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
    (node / "kubelet").mkdir(parents=True, exist_ok=True)
    paths = {
        "containerd": node / "containerd" / "config.toml",
        "cni": node / "cni" / "net.d" / "10-dbmigrate.conflist",
        "kubelet": node / "kubelet" / "config.yaml",
    }
    paths["containerd"].write_text(containerd_config(node / "containerd", pause_image))
    paths["cni"].write_text(json.dumps(cni_config(node / "cni"), indent=1))
    socket = node / "containerd" / "containerd.sock"
    port, healthz = kubelet_ports
    paths["kubelet"].write_text(
        yaml.safe_dump(
            kubelet_config(node / "kubelet", ca=ca, socket=socket, port=port, healthz_port=healthz)
        )
    )
    return paths
