"""Configuration files of the node's components, as text: containerd (CRI with runc), the CNI
bridge network, the kubelet and kube-proxy. Every path lives under the cluster's work directory
so that nothing is written to the machine's own /etc or /var/lib."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from testbed.controlplane import free_port

#: The sandbox image containerd starts for each pod: hack/pause, imported under this name.
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
#: Debian's containernetworking-plugins install here.
CNI_BIN = "/usr/lib/cni"


def containerd_toml(root: Path, socket: Path, cni_conf: Path) -> str:
    """containerd 1.6, version 2 config. ``restrict_oom_score_adj``: a process here may not lower
    its oom_score_adj, and without it every sandbox fails with "can't get final child's PID from
    pipe"."""
    return f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni_conf}"
"""


def cni_conflist(bridge: str, subnet: str, ipam_dir: Path) -> str:
    """The bridge plugin with host-local IPAM; no masquerade (pods talk to the node and to each
    other, never leave the machine)."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "shardkeeper",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(ipam_dir),
                    },
                }
            ],
        },
        indent=1,
    )


def kubelet_yaml(*, work: Path, socket: Path, port: int, ca: Path, cgroup_root: str, dns_ip: str) -> str:
    """What this kernel needs: cgroupfs, cgroup v1 allowed, swap allowed. Image GC off: the images
    are imported, no registry could give them back. Eviction thresholds low: the disk is shared."""
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "port": port,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "podLogsDir": str(work / "pod-logs"),
        "resolvConf": "/etc/resolv.conf",
        "clusterDNS": [dns_ip],
        "clusterDomain": "cluster.local",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "rotateCertificates": False,
        "serializeImagePulls": False,
    }
    return yaml.safe_dump(config)


def kube_proxy_yaml(*, kubeconfig: Path, node: str, cluster_cidr: str, healthz: int, metrics: int) -> str:
    """iptables mode; conntrack sysctls left as the machine has them."""
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": cluster_cidr,
        "hostnameOverride": node,
        "healthzBindAddress": f"127.0.0.1:{healthz}",
        "metricsBindAddress": f"127.0.0.1:{metrics}",
        "conntrack": {"maxPerCore": 0, "min": 0},
    }
    return yaml.safe_dump(config)


def etcd_args(etcd: Path, work: Path, port: int, peer: int) -> list[str]:
    return [
        str(etcd),
        "--name=node",
        f"--data-dir={work / 'etcd'}",
        f"--listen-client-urls=http://127.0.0.1:{port}",
        f"--advertise-client-urls=http://127.0.0.1:{port}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=node=http://127.0.0.1:{peer}",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_args(
    binary: Path, p: Path, etcd_port: int, ip: str, port: int, service_range: str
) -> list[str]:
    """Node,RBAC authorization and NodeRestriction; static tokens (tokens.csv) for every component;
    a client certificate (group system:masters) for exec and logs through the kubelet."""
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=0.0.0.0",
        f"--advertise-address={ip}",
        f"--secure-port={port}",
        f"--cert-dir={p}",
        f"--tls-cert-file={p / 'apiserver.crt'}",
        f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        f"--token-auth-file={p / 'tokens.csv'}",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--service-cluster-ip-range={service_range}",
        "--allow-privileged=true",
        f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


def controller_manager_args(bin_dir: Path, p: Path, kc: dict[str, Path]) -> list[str]:
    """One ServiceAccount per controller (as kubeadm sets it), no leader election."""
    return [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kc['kube-controller-manager']}",
        f"--authentication-kubeconfig={kc['kube-controller-manager']}",
        f"--authorization-kubeconfig={kc['kube-controller-manager']}",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={p / 'sa.key'}",
        f"--root-ca-file={p / 'ca.crt'}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={free_port()}",
    ]


def scheduler_args(bin_dir: Path, kc: dict[str, Path]) -> list[str]:
    return [
        str(bin_dir / "kube-scheduler"),
        f"--kubeconfig={kc['kube-scheduler']}",
        f"--authentication-kubeconfig={kc['kube-scheduler']}",
        f"--authorization-kubeconfig={kc['kube-scheduler']}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={free_port()}",
    ]
