"""Configuration files of the node's components, as text: containerd (CRI with runc), the CNI
bridge network, the kubelet and kube-proxy. Every path lives under the cluster's work directory
so that nothing is written to the machine's own /etc or /var/lib."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

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


def kubelet_yaml(*, work: Path, socket: Path, port: int, ca: Path, cgroup_root: str) -> str:
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
