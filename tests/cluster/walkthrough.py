"""The pieces of the walkthrough: the chart's values for this node, the sample StatefulSet with the
agent sidecar rendered from the chart's named template, and reads of pods and operations."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from testbed.helm import render_with_agent
from testbed.realnode.node import NodeCluster

NS, RELEASE_NS = "demo", "shardkeeper-system"
#: Per-node transfer limit of the sample agents, bytes/s: the ~1.6 MB each node stores (RocksDB
#: compresses the 2.8 MB of values) then take ~16 s, long enough to delete a pod mid-transfer.
THROTTLE = 100_000
RECORDS, VALUE_SIZE = 700, 4096


def values(backups: Path) -> dict[str, Any]:
    """The kind walkthrough's values (deploy/kind/values.yaml) with this run's backup directory."""
    v: dict[str, Any] = yaml.safe_load((Path(__file__).parents[2] / "deploy/kind/values.yaml").read_text())
    v["backups"]["filesystem"]["volume"]["hostPath"]["path"] = str(backups)
    v["backups"]["filesystem"]["envconfig"]["BACKUP_FILESYSTEM_PATH"] = "/var/lib/shardkeeper-backups"
    v["operator"] = {"agentUnreachableSeconds": 15}
    return v


def statefulset(name: str, chart_values: dict[str, Any], workdir: Path) -> str:
    """The sample database with the chart's ``shardkeeper.agent.container``/``.volumes``, as a user's
    chart renders them; the database container is deploy/kind/sampledb.yaml's."""
    rendered = render_with_agent(chart_values, workdir=workdir, hook_url="http://127.0.0.1:8480/hook")
    sts = rendered.find("StatefulSet", "sampledb")
    sts["metadata"] = {"name": name}
    spec = sts["spec"]
    spec["serviceName"] = name
    spec["selector"] = {"matchLabels": {"app": name}}
    pod = spec["template"]
    pod["metadata"] = {"labels": {"app": name}}
    pod["spec"]["securityContext"] = {"fsGroup": 65532}
    db, agent = pod["spec"]["containers"]
    db.update(
        image="shardkeeper-sampledb:dev",
        imagePullPolicy="Never",
        args=[
            "--node",
            "$(POD_NAME)",
            "--data-root",
            "/var/lib/sampledb",
            "--listen",
            "0.0.0.0:8480",
            "--value-size",
            str(VALUE_SIZE),
        ],
        env=[{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        ports=[{"name": "db", "containerPort": 8480}],
        securityContext={"runAsUser": 65532, "runAsGroup": 65532, "allowPrivilegeEscalation": False},
    )
    agent["env"].append({"name": "SHARDKEEPER_MAX_BYTES_PER_SECOND", "value": str(THROTTLE)})
    return yaml.safe_dump(sts)


def pod_ip(node: NodeCluster, pod: str) -> str:
    return str(node.get("pod", "-n", NS, pod)["status"]["podIP"])


def db(node: NodeCluster, pod: str, method: str, path: str, body: Any = None) -> Any:
    """The sample database's own API, from this machine straight to the pod's address."""
    r = requests.request(method, f"http://{pod_ip(node, pod)}:8480{path}", json=body, timeout=60)
    r.raise_for_status()
    return r.json() if r.content else None


def wait_for(node: NodeCluster, kind: str, name: str, ok: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = node.get(kind, "-n", NS, name)
        if ok(obj):
            return obj
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s; last: {json.dumps(obj.get('status'))}")


def transferring(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(status.get("phase") == "TRANSFERRING")


def finished(node: NodeCluster, kind: str, name: str, timeout: str = "300s") -> dict[str, Any]:
    """``kubectl wait --for=condition=Finished`` (the README's command), then the object."""
    node.kubectl(
        "wait",
        "-n",
        NS,
        "--for=condition=Finished",
        f"{kind}.shardkeeper.io/{name}",
        f"--timeout={timeout}",
        timeout=400,
    )
    got: dict[str, Any] = node.get(f"{kind}.shardkeeper.io", "-n", NS, name)
    return got


def operator_log(node: NodeCluster) -> str:
    return node.kubectl("logs", "-n", RELEASE_NS, "deploy/shardkeeper", "--tail=-1").stdout
