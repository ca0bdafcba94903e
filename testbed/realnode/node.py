"""The single-node cluster: start in dependency order, wait for each part, stop and clean up.

Identities are real ones: each component has its own token (static token file) with the user the
bootstrap RBAC policy expects (system:node:<name>, system:kube-proxy, system:kube-controller-manager,
system:kube-scheduler); authorization is Node,RBAC with NodeRestriction. The API server advertises
the machine's own address; kube-proxy maps the ``kubernetes`` Service (10.96.0.1:443) to it.

One node cluster per machine at a time (a bridge, a pod subnet and iptables chains are global):
``start`` takes /tmp/shardkeeper-node.lock and ``stop`` releases it.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from testbed.binaries import Binaries
from testbed.controlplane import free_port, write_kubeconfig
from testbed.realnode import config, dns, storage, teardown
from testbed.realnode.pki import write_pki

NODE_LOCK = Path("/tmp/shardkeeper-node.lock")
SERVICE_IP = "10.96.0.1"


def host_ip() -> str:
    """The machine's primary IPv4 address (the source of its default route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.254", 9))
        return str(s.getsockname()[0])


@dataclass
class NodeCluster:
    workdir: Path
    images: list[Path] = field(default_factory=list)
    node_name: str = "shardkeeper-node"
    pod_subnet: str = "10.244.0.0/24"
    service_range: str = "10.96.0.0/24"
    bridge: str = "skcni0"
    cgroup_root: str = "/shardkeeper-node"
    port: int = 0
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _tokens: dict[str, str] = field(default_factory=dict)
    _lock: IO[bytes] | None = None
    _netns_before: set[str] = field(default_factory=set)

    # --- paths
    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    # --- lifecycle
    def start(self, *, timeout: float = 180.0) -> NodeCluster:
        self._lock = NODE_LOCK.open("wb")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._netns_before = teardown.netns_files()
        bins = Binaries.locate()
        node_bin = _node_binaries()
        for d in ("pki", "logs", "containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "pv"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        ip = host_ip()
        self.port = free_port()
        write_pki(
            self.pki,
            ips=["127.0.0.1", ip, SERVICE_IP],
            dns=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )
        users = {
            "admin": ("admin", "system:masters"),
            "kubelet": (f"system:node:{self.node_name}", "system:nodes"),
            "kube-proxy": ("system:kube-proxy", ""),
            "kube-controller-manager": ("system:kube-controller-manager", ""),
            "kube-scheduler": ("system:kube-scheduler", ""),
            "coredns": (dns.USER, ""),
        }
        lines = []
        for role, (user, group) in users.items():
            self._tokens[role] = secrets.token_hex(16)
            lines.append(f"{self._tokens[role]},{user},{user}" + (f',"{group}"' if group else ""))
        (self.pki / "tokens.csv").write_text("\n".join(lines) + "\n")
        (self.pki / "tokens.csv").chmod(0o600)
        server = f"https://127.0.0.1:{self.port}"
        kc = {
            role: write_kubeconfig(
                self.workdir / f"{role}.kubeconfig",
                server=server,
                ca=self.pki / "ca.crt",
                token=tok,
                user=role,
            )
            for role, tok in self._tokens.items()
        }
        etcd_port, peer, p = free_port(), free_port(), self.pki
        self._spawn("etcd", config.etcd_args(bins.etcd, self.workdir, etcd_port, peer))
        self._spawn(
            "kube-apiserver",
            config.apiserver_args(bins.kube_apiserver, p, etcd_port, ip, self.port, self.service_range),
        )
        self._wait(
            lambda: self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
            timeout,
            "kube-apiserver ready",
        )
        # kube-system appears a moment after /readyz
        self._wait(lambda: self.apply(dns.manifests(ip), check=False), 60, "the kube-dns Service")
        corefile = self.workdir / "Corefile"
        corefile.write_text(dns.corefile(ip, kc["coredns"]))
        self._spawn("coredns", [str(_built("build-coredns.sh") / "coredns"), "-conf", str(corefile)])
        self._wait(lambda: _listening(ip, dns.DNS_PORT), 60, "CoreDNS listening")
        (self.workdir / "containerd" / "config.toml").write_text(
            config.containerd_toml(self.workdir / "containerd", self.socket, self.workdir / "cni" / "net.d")
        )
        (self.workdir / "cni" / "net.d" / "10-shardkeeper.conflist").write_text(
            config.cni_conflist(self.bridge, self.pod_subnet, self.workdir / "cni" / "ipam")
        )
        self._spawn(
            "containerd", ["containerd", "--config", str(self.workdir / "containerd" / "config.toml")]
        )
        self._wait(lambda: self.ctr("version", check=False).returncode == 0, 60, "containerd up")
        for image in self.images:
            self.ctr("images", "import", str(image))
        self._spawn("kube-controller-manager", config.controller_manager_args(node_bin, p, kc))
        self._spawn("kube-scheduler", config.scheduler_args(node_bin, kc))
        teardown.make_cgroups(self.cgroup_root)
        kubelet_config = self.workdir / "kubelet" / "config.yaml"
        kubelet_config.write_text(
            config.kubelet_yaml(
                work=self.workdir,
                socket=self.socket,
                port=free_port(),
                ca=p / "ca.crt",
                cgroup_root=self.cgroup_root,
                dns_ip=dns.DNS_IP,
            )
        )
        self._spawn(
            "kubelet",
            [
                str(node_bin / "kubelet"),
                f"--config={kubelet_config}",
                f"--kubeconfig={kc['kubelet']}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--hostname-override={self.node_name}",
                f"--node-ip={ip}",
                "--v=1",
            ],
        )
        proxy_config = self.workdir / "kube-proxy.yaml"
        proxy_config.write_text(
            config.kube_proxy_yaml(
                kubeconfig=kc["kube-proxy"],
                node=self.node_name,
                cluster_cidr=self.pod_subnet,
                healthz=free_port(),
                metrics=free_port(),
            )
        )
        self._spawn("kube-proxy", [str(node_bin / "kube-proxy"), f"--config={proxy_config}"])
        self._wait(self._node_ready, timeout, f"node {self.node_name} Ready")
        self.apply(storage.local_volumes(self.workdir, self.node_name))
        self._wait(
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            timeout,
            "the default ServiceAccount (kube-controller-manager)",
        )
        return self

    def stop(self) -> list[str]:
        """Stops everything and cleans up; returns what could not be undone (empty: all clean)."""
        node_bin = _node_binaries()

        def drain() -> list[str]:
            for name in ("kube-controller-manager", "kube-scheduler"):
                self._terminate(name)
            if "kubelet" in self._procs and self._procs["kubelet"].poll() is None:
                self.kubectl(
                    "delete",
                    "pods",
                    "--all",
                    "--all-namespaces",
                    "--grace-period=0",
                    "--force",
                    "--wait=false",
                    check=False,
                )
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and self._running_tasks():
                    time.sleep(1)
            return []

        def stop_node() -> list[str]:
            self._terminate("kubelet")
            self._terminate("kube-proxy")
            teardown.run(str(node_bin / "kube-proxy"), "--cleanup")
            return []

        def kill_containers() -> list[str]:
            for task in self._running_tasks():
                self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
            time.sleep(1)
            self._terminate("containerd")
            teardown.kill_pids(teardown.pids_with(str(self.socket)))
            return [f"pid {pid}" for pid in teardown.pids_with(str(self.socket))]

        def control_plane() -> list[str]:
            self._terminate("coredns")
            self._terminate("kube-apiserver")
            self._terminate("etcd")
            return []

        def logs_links() -> list[str]:
            d = Path("/var/log/containers")
            for link in d.iterdir() if d.is_dir() else []:
                if link.is_symlink() and str(self.workdir) in os.readlink(link):
                    link.unlink()
            results = Path("/var/lib/cni/results")
            for f in results.iterdir() if results.is_dir() else []:
                if f.name.startswith("shardkeeper-"):
                    f.unlink()
            return []

        def bridge() -> list[str]:
            if teardown.run("ip", "link", "show", self.bridge).returncode == 0:
                teardown.run("ip", "link", "del", self.bridge)
            return [self.bridge] if teardown.run("ip", "link", "show", self.bridge).returncode == 0 else []

        left = teardown.steps(
            [
                ("drain", drain),
                ("node", stop_node),
                ("containers", kill_containers),
                ("control plane", control_plane),
                ("mounts", lambda: teardown.unmount_all(self.workdir)),
                ("netns", lambda: teardown.release_netns(teardown.netns_files() - self._netns_before)),
                ("bridge", bridge),
                ("iptables", teardown.iptables_chains_removed),
                ("cgroups", lambda: teardown.cgroups_removed(self.cgroup_root)),
                ("links", logs_links),
            ]
        )
        if not teardown.mounts_under(self.workdir):
            for d in ("containerd", "kubelet", "etcd", "pv"):
                shutil.rmtree(self.workdir / d, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        return left

    # --- helpers
    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(Binaries.locate().kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out

    def get(self, *args: str) -> Any:
        return yaml.safe_load(self.kubectl("get", "-o", "yaml", *args).stdout)

    def apply(self, manifest: str, namespace: str | None = None, *, check: bool = True) -> bool:
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=manifest, check=check).returncode == 0

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = teardown.run("ctr", "--address", str(self.socket), "-n", "k8s.io", *args, timeout=300)
        if check and out.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {out.stderr.strip()}")
        return out

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def _running_tasks(self) -> list[str]:
        out = self.ctr("tasks", "ls", check=False)
        return [
            ln.split()[0] for ln in out.stdout.splitlines()[1:] if ln.split() and ln.split()[-1] == "RUNNING"
        ]

    def _node_ready(self) -> bool:
        out = self.kubectl(
            "get",
            "node",
            self.node_name,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False,
        )
        return out.stdout.strip() == "True"

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self._procs[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _terminate(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def _wait(self, ok: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self._procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0]} exited while waiting for {what}:\n{self.log(dead[0])[-3000:]}")
            if ok():
                return
            time.sleep(1)
        raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _node_binaries() -> Path:
    env = os.environ
    return (
        Path(env["SHARDKEEPER_K8S_NODE_BIN"])
        if "SHARDKEEPER_K8S_NODE_BIN" in env
        else _built("build-k8s.sh", "node")
    )


def _built(script: str, *args: str) -> Path:
    """The bin directory a cached ``hack/build-*.sh`` prints (building it first if missing)."""
    out = subprocess.run(
        [str(Path(__file__).resolve().parents[2] / "hack" / script), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"hack/{script} failed:\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])
