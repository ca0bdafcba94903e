"""Scale in nodes: the same tiny Backup on a 3-node and a 30-node sample cluster, through the real
operator on the real control plane.

Per run: seconds from ``kubectl apply`` to SUCCESS, the writes to the Backup object (every
ADDED/MODIFIED event a watch on it sees: the operator's status patches and kopf's annotation and
finalizer patches), the Events posted about it, and the CPU seconds the operator and the agents
spent during the run (from /proc: utime + stime), per node. Medians of ``--repeat`` runs.

With ``--collections N``: N collections of ``--collection-kb`` each (two files: a table and a
small manifest, random bytes from a seeded generator), spread over the nodes in turn, on agents
without a workload hook (they walk and hard-link the files themselves); also the size of the
Backup's status (issue 15, goal 4: 10,000 collections of ~100 KB on 3 nodes in <= 2 min, status
under 256 KiB).

With ``--restore``: one such Backup, then ``--repeat`` Restores of it into a second cluster with
the same pod names in another namespace (agents without a hook; the restored collection is removed
between runs), each timed from ``kubectl apply`` to SUCCESS, with its writes and Events.

``python -m benchmarks.nodes --nodes 3 30 --repeat 3``
``python -m benchmarks.nodes --nodes 3 --collections 10000 --collection-kb 100 --repeat 3``
``python -m benchmarks.nodes --nodes 3 30 --repeat 3 --restore``
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

from kubernetes import client, watch

from benchmarks.common import cpu_seconds, load, table
from testbed.cluster import SampleCluster
from testbed.controlplane import ControlPlane, api_client
from testbed.operator import OperatorProcess

NAMESPACE = "bench"
TARGET_NAMESPACE = "bench-target"


class _WriteCounter:
    """Counts the writes to one Backup or Restore: every event a watch on it delivers but DELETED."""

    def __init__(
        self, api: client.ApiClient, name: str, plural: str = "backups", namespace: str = NAMESPACE
    ) -> None:
        self.count = 0
        self._stopping = False
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self._objects = client.CustomObjectsApi(api)
        self._name = name
        self._plural, self._namespace = plural, namespace
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stream = self._watch.stream(  # type: ignore[no-untyped-call]
            self._objects.list_namespaced_custom_object,
            "shardkeeper.io",
            "v1alpha1",
            self._namespace,
            self._plural,
            field_selector=f"metadata.name={self._name}",
            timeout_seconds=600,
        )
        try:
            for event in stream:
                if event["type"] in ("ADDED", "MODIFIED"):
                    self.count += 1
        except Exception:  # the stream cut by stop()
            if not self._stopping:
                raise

    def stop(self) -> int:
        time.sleep(1.0)  # the last patches of the tick that ended it
        self._stopping = True
        self._watch.stop()  # type: ignore[no-untyped-call]
        return self.count


def _run(
    cp: ControlPlane,
    cluster: SampleCluster,
    operator: OperatorProcess,
    name: str,
    restore_of: str | None = None,
) -> dict[str, Any]:
    """One Backup of ``cluster`` named ``name``; or, with ``restore_of``, one Restore of that
    backup into ``cluster`` (the target)."""
    api = api_client(cp.kubeconfig)
    kind, plural = ("Restore", "restores") if restore_of else ("Backup", "backups")
    namespace = cluster.namespace
    counter = _WriteCounter(api, name, plural, namespace)
    time.sleep(0.5)  # the watch is open before the object exists
    agents = [n.agent.pid if n.agent else None for n in cluster.nodes]
    op_pid = getattr(operator.proc, "pid", None)
    cpu_agents, cpu_operator = sum(cpu_seconds(p) for p in agents), cpu_seconds(op_pid)
    spec: dict[str, Any] = {"backend": "filesystem", "cluster": cluster.name}
    if restore_of:
        spec["backupId"] = restore_of
    manifest = {
        "apiVersion": "shardkeeper.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    started = time.monotonic()
    cp.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    objects = client.CustomObjectsApi(api)
    while True:
        obj = cast(
            "dict[str, Any]",
            objects.get_namespaced_custom_object("shardkeeper.io", "v1alpha1", namespace, plural, name),
        )
        phase = obj.get("status", {}).get("phase")
        if phase in ("SUCCESS", "FAILED", "CANCELED"):
            break
        if time.monotonic() - started > 600:
            raise TimeoutError(f"{name} still {phase} after 600 s")
        time.sleep(0.05)
    seconds = time.monotonic() - started
    if phase != "SUCCESS":
        raise RuntimeError(f"{name} ended {phase}: {obj['status'].get('error')}")
    writes = counter.stop()
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    nodes = len(cluster.nodes)
    return {
        "seconds": seconds,
        "writes": writes,
        "events": len(events.items),
        "agent_cpu_per_node": (sum(cpu_seconds(p) for p in agents) - cpu_agents) / nodes,
        "operator_cpu": cpu_seconds(op_pid) - cpu_operator,
        "collections": obj["status"].get("collectionCount", 0),
        "status_kib": len(json.dumps(obj["status"])) / 1024,
    }


def _write_collections(cluster: SampleCluster, count: int, size: int) -> None:
    """``count`` collections of ``size`` bytes (a table and a 4 KiB manifest), node by node in turn."""
    rng = random.Random(15)
    manifest = min(4096, size // 2)
    for k in range(count):
        folder = cluster.nodes[k % len(cluster.nodes)].data / f"c{k:05d}"
        folder.mkdir()
        (folder / "000001.sst").write_bytes(rng.randbytes(size - manifest))
        (folder / "MANIFEST-000001").write_bytes(rng.randbytes(manifest))


def measure(
    nodes: int, repeat: int, work: Path, collections: int = 0, collection_kb: int = 100, restore: bool = False
) -> dict[str, Any]:
    token = work / "agent-token"
    token.write_text(secrets.token_hex(24))
    backups = work / "backups"
    backups.mkdir()
    backend = {"BACKUP_FILESYSTEM_PATH": str(backups)}
    cp = ControlPlane(work / "control-plane").start()
    cluster = SampleCluster(
        cp,
        namespace=NAMESPACE,
        root=work / "nodes",
        token_file=token,
        agent_env=backend,
        replicas=nodes,
        hook=not collections,
    )
    target = SampleCluster(
        cp,
        namespace=TARGET_NAMESPACE,
        root=work / "target",
        token_file=token,
        agent_env=backend,
        replicas=nodes,
        hook=False,
    )
    operator: OperatorProcess | None = None
    try:
        cluster.create()
        if collections:
            _write_collections(cluster, collections, collection_kb * 1000)
        else:
            cluster.fill({"tiny": list(range(nodes))}, keys=50)
        if restore:
            target.create()
        namespaces = [NAMESPACE, TARGET_NAMESPACE] if restore else [NAMESPACE]
        operator = OperatorProcess(cp, work / "operator", token, namespaces, env=backend).start()
        if not restore:
            runs = [_run(cp, cluster, operator, f"n{nodes}-{i}") for i in range(repeat)]
        else:
            _run(cp, cluster, operator, f"n{nodes}")
            runs = []
            for i in range(repeat):
                runs.append(_run(cp, target, operator, f"r{nodes}-{i}", restore_of=f"n{nodes}"))
                for node in target.nodes:  # the next restore finds the collections absent again
                    for restored in node.data.iterdir():
                        if not restored.name.startswith("."):
                            shutil.rmtree(restored)
    finally:
        if operator is not None:
            operator.stop()
        target.stop()
        cluster.stop()
        cp.stop()
    row: dict[str, Any] = {"nodes": nodes}
    for key in runs[0]:
        row[key] = statistics.median(r[key] for r in runs)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, nargs="+", default=[3, 30])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--collections", type=int, default=0, help="0: one tiny sample-database collection")
    parser.add_argument("--collection-kb", type=int, default=100)
    parser.add_argument("--restore", action="store_true", help="time Restores of one Backup instead")
    args = parser.parse_args()
    rows = []
    for nodes in args.nodes:
        work = Path(tempfile.mkdtemp(prefix=f"shardkeeper-nodes-{nodes}-"))
        try:
            rows.append(measure(nodes, args.repeat, work, args.collections, args.collection_kb, args.restore))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"{nodes} nodes done ({load()})", flush=True)
    base_seconds = rows[0]["seconds"]
    for row in rows:
        row["vs_first"] = f"{row['seconds'] / base_seconds:.2f}"
        row["writes_per_node"] = f"{row['writes'] / row['nodes']:.1f}"
        for key in ("seconds", "agent_cpu_per_node", "operator_cpu", "status_kib"):
            row[key] = f"{row[key]:.2f}"
    columns = ["nodes", "seconds", "vs_first", "writes", "writes_per_node", "events"]
    columns += ["agent_cpu_per_node", "operator_cpu", "collections", "status_kib"]
    print(table(rows, columns))
    print(load())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
