"""The kind walkthrough (hack/kind-e2e.sh), for real: the image built here and run by a kubelet
under containerd/runc, the chart's Deployment, the sample StatefulSet with the chart's agent
sidecar on local persistent volumes, the token Secret mounted as a file, pods deleted mid-transfer
and replaced by their controllers, a Restore with nodeMapping into a second StatefulSet.

The tests run in order and share the cluster: each step builds on the one before (a walkthrough)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from testbed.helm import helm
from testbed.realnode.node import NodeCluster
from tests.cluster import walkthrough as w

CHART = Path(__file__).parents[2] / "helm" / "shardkeeper"
PODS = [f"sampledb-{i}" for i in range(3)]


@pytest.fixture(scope="module")
def demo(node: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Shared state of the walkthrough: values, logs of replaced operator pods."""
    backups = node.workdir / "backups"
    backups.mkdir(exist_ok=True)
    backups.chmod(0o777)
    return {"values": w.values(backups), "backups": backups, "logs": [], "tmp": tmp_path_factory.mktemp("w")}


def test_chart_installs_and_the_operator_deployment_runs(node: NodeCluster, demo: dict[str, Any]) -> None:
    node.kubectl("create", "namespace", w.NS)
    values = demo["tmp"] / "values.yaml"
    values.write_text(yaml.safe_dump(demo["values"]))
    out = helm(
        "upgrade",
        "--install",
        "shardkeeper",
        str(CHART),
        "-n",
        w.RELEASE_NS,
        "--create-namespace",
        "-f",
        str(values),
        "--wait",
        "--timeout",
        "5m",
        f"--kubeconfig={node.kubeconfig}",
        check=False,
    )
    assert out.returncode == 0, out.stderr
    dep = node.get("deployment", "-n", w.RELEASE_NS, "shardkeeper")
    assert dep["status"]["availableReplicas"] == 1
    pod = node.get("pods", "-n", w.RELEASE_NS, "-l", "app.kubernetes.io/name=shardkeeper")["items"][0]
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] and status["imageID"], status  # started by the kubelet from the imported image
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_sample_statefulset_with_the_chart_sidecar_runs_on_local_volumes(
    node: NodeCluster, demo: dict[str, Any]
) -> None:
    node.apply(w.statefulset("sampledb", demo["values"], demo["tmp"]), w.NS)
    node.kubectl("rollout", "status", "-n", w.NS, "statefulset/sampledb", "--timeout=300s", timeout=330)
    claims = node.get("pvc", "-n", w.NS)["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == [f"data-{p}" for p in PODS]
    assert {c["status"]["phase"] for c in claims} == {"Bound"}
    for pod in PODS:
        w.db(node, pod, "POST", "/collections/articles", {"count": w.RECORDS})
        assert w.db(node, pod, "GET", "/collections/articles/summary")["keys"] == w.RECORDS


def test_agent_token_comes_from_the_mounted_secret(node: NodeCluster) -> None:
    secret = node.get("secret", "-n", w.NS, "shardkeeper-agent-token")
    token = base64.b64decode(secret["data"]["token"]).decode()
    mounted = node.kubectl(
        "exec", "-n", w.NS, "sampledb-0", "-c", "shardkeeper-agent", "--", "cat", "/var/run/shardkeeper/token"
    ).stdout
    assert mounted == token
    url = f"http://{w.pod_ip(node, 'sampledb-0')}:8470/v1/operations/none"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 404


def test_db_pod_deleted_mid_transfer_fails_the_backup_and_comes_back(node: NodeCluster) -> None:
    node.apply(BACKUP.format(name="pod-deleted"), w.NS)
    w.wait_for(node, "backups.shardkeeper.io", "pod-deleted", w.transferring, 120, "TRANSFERRING")
    old_uid = node.get("pod", "-n", w.NS, "sampledb-1")["metadata"]["uid"]
    node.kubectl("delete", "pod", "-n", w.NS, "sampledb-1", "--wait=false")
    backup = w.finished(node, "backups", "pod-deleted")
    assert backup["status"]["phase"] == "FAILED", backup["status"]
    assert "sampledb-1" in backup["status"]["error"], backup["status"]["error"]
    print(f"pod-deleted: {backup['status']['error']}")
    # The StatefulSet controller recreates the pod, the kubelet starts it on the same volume.
    node.kubectl("rollout", "status", "-n", w.NS, "statefulset/sampledb", "--timeout=300s", timeout=330)
    assert node.get("pod", "-n", w.NS, "sampledb-1")["metadata"]["uid"] != old_uid
    assert w.db(node, "sampledb-1", "GET", "/collections/articles/summary")["keys"] == w.RECORDS


def test_operator_pod_deleted_mid_backup_and_the_backup_still_finishes(
    node: NodeCluster, demo: dict[str, Any]
) -> None:
    node.apply(BACKUP.format(name="operator-deleted"), w.NS)
    w.wait_for(node, "backups.shardkeeper.io", "operator-deleted", w.transferring, 120, "TRANSFERRING")
    demo["logs"].append(w.operator_log(node))
    node.kubectl(
        "delete", "pod", "-n", w.RELEASE_NS, "-l", "app.kubernetes.io/name=shardkeeper", "--wait=false"
    )
    backup = w.finished(node, "backups", "operator-deleted")
    assert backup["status"]["phase"] == "SUCCESS", backup["status"]
    node.kubectl(
        "rollout", "status", "-n", w.RELEASE_NS, "deployment/shardkeeper", "--timeout=120s", timeout=150
    )
    assert (demo["backups"] / "operator-deleted" / "backup_config.json").is_file()


def test_restore_with_node_mapping_into_a_second_statefulset(node: NodeCluster, demo: dict[str, Any]) -> None:
    node.apply(w.statefulset("replica", demo["values"], demo["tmp"]), w.NS)
    node.kubectl("rollout", "status", "-n", w.NS, "statefulset/replica", "--timeout=300s", timeout=330)
    node.apply(RESTORE, w.NS)
    restore = w.finished(node, "restores", "first-restore")
    assert restore["status"]["phase"] == "SUCCESS", restore["status"]
    for i in range(3):
        source = w.db(node, f"sampledb-{i}", "GET", "/collections/articles/summary")
        target = w.db(node, f"replica-{i}", "GET", "/collections/articles/summary")
        assert (target["keys"], target["digest"]) == (source["keys"], source["digest"]), i


def test_operator_log_has_no_403(node: NodeCluster, demo: dict[str, Any]) -> None:
    logs = [*demo["logs"], w.operator_log(node)]
    assert all(log.strip() for log in logs)
    for log in logs:
        assert " 403" not in log and '"403' not in log and "Forbidden" not in log, log[-3000:]


BACKUP = """apiVersion: shardkeeper.io/v1alpha1
kind: Backup
metadata: {{name: {name}}}
spec: {{backend: filesystem, cluster: sampledb}}
"""
RESTORE = """apiVersion: shardkeeper.io/v1alpha1
kind: Restore
metadata: {name: first-restore}
spec:
  backupId: operator-deleted
  backend: filesystem
  cluster: replica
  nodeMapping: {sampledb-0: replica-0, sampledb-1: replica-1, sampledb-2: replica-2}
"""
