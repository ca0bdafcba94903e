"""Cluster DNS: CoreDNS (built from its Go module by hack/build-coredns.sh) as a node process,
behind the ``kube-dns`` Service at 10.96.0.10 (kube-proxy maps it to the node), answering for
cluster.local from the API server (services, endpoints) and forwarding everything else to the
machine's resolvers. kopf reaches the API server as ``kubernetes.default.svc``: without cluster DNS
the operator cannot log in."""

from __future__ import annotations

from pathlib import Path

import yaml

DNS_IP = "10.96.0.10"
DNS_PORT = 1053
USER = "system:coredns"


def corefile(bind: str, kubeconfig: Path) -> str:
    return f""".:{DNS_PORT} {{
    bind {bind}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 30
}}
"""


def manifests(node_ip: str) -> str:
    """RBAC for CoreDNS's user, the kube-dns Service without a selector, and its EndpointSlice
    naming the node's CoreDNS."""
    docs = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {
                "clusterIP": DNS_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": DNS_PORT},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": DNS_PORT},
                ],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-node",
                "namespace": "kube-system",
                "labels": {"kubernetes.io/service-name": "kube-dns"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [node_ip], "conditions": {"ready": True}}],
            "ports": [
                {"name": "dns", "port": DNS_PORT, "protocol": "UDP"},
                {"name": "dns-tcp", "port": DNS_PORT, "protocol": "TCP"},
            ],
        },
    ]
    return yaml.safe_dump_all(docs)
