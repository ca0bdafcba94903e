"""A busy cluster makes the next operation wait its turn; ``consistency: cluster`` takes one
consistent cut of the whole cluster."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.backup_reader import ledger_seqs, materialize, read_backup
from tests.e2e.conftest import Env, backup_manifest


def test_a_second_backup_of_a_busy_cluster_waits_its_turn(env: Env) -> None:
    env.backend_env["SHARDKEEPER_MAX_BYTES_PER_SECOND"] = str(1_000_000)
    env.make_cluster(value_size=4096).fill({"articles": [0, 1, 2]}, keys=800)
    env.start_operator()
    env.apply(backup_manifest("first"))
    env.wait_phase("backup", "first", "TRANSFERRING", timeout=60)
    env.apply(backup_manifest("second"))

    queued = env.wait_phase("backup", "second", "QUEUED", timeout=30)
    complete = env.condition(queued, "Complete")
    assert complete["reason"] == "Queued"
    assert f"Backup {env.namespace}/first" in complete["message"]
    assert env.condition(queued, "Failed")["status"] == "False"
    assert "Queued" in [e["reason"] for e in env.events("second")]

    first = env.wait_phase("backup", "first", "SUCCESS", "FAILED", timeout=90)["status"]
    second = env.wait_phase("backup", "second", "SUCCESS", "FAILED", timeout=90)["status"]
    assert first["phase"] == second["phase"] == "SUCCESS"
    assert second["startedAt"] >= first["completedAt"]


class LedgerWriter:
    """One sequence of writes spread over every node (seq n goes to node n % nodes), each
    acknowledged before the next: what a client of a sharded database does."""

    def __init__(self, env: Env, collection: str = "ledger") -> None:
        assert env.cluster is not None
        self.urls = [f"{n.db_url}/collections/{collection}/records" for n in env.cluster.nodes]
        self.acked = 0
        self._stop = threading.Event()
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            self._session.put(f"{self.urls[seq % len(self.urls)]}/{seq}", timeout=120).raise_for_status()
            seq += 1
            self.acked = seq

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=130)
        return self.acked


def _ledger_backup(
    env: Env, tmp_path: Path, name: str, consistency: str
) -> tuple[set[int], dict[str, Any], int]:
    """The sequence numbers the backup holds, its nodes' status (pause, hold window), and how many
    writes were acknowledged by the end."""
    cluster = env.make_cluster()
    cluster.fill({"ledger": [0, 1, 2]}, keys=0)
    # Node 2 takes a second to reach its freeze: without a cluster-wide hold, the others are
    # frozen a second earlier and the backup misses what they were sent meanwhile.
    cluster.db(2, "POST", "/debug/prepare-delay", json={"seconds": 1})
    env.start_operator()
    writer = LedgerWriter(env)
    try:
        env.apply(backup_manifest(name, consistency=consistency))
        status = env.wait_phase("backup", name, "SUCCESS", "FAILED", timeout=90)["status"]
    finally:
        acked = writer.stop()
    assert status["phase"] == "SUCCESS"
    _, nodes = read_backup(env.backups / name)
    seqs: set[int] = set()
    for node_name, node in nodes.items():
        materialize(node, tmp_path / node_name)
        seqs |= ledger_seqs(tmp_path / node_name / "ledger", "ledger", cluster.value_size)
    return seqs, status["nodes"], acked


def test_cluster_consistency_is_one_cut_of_every_node(env: Env, tmp_path: Path) -> None:
    seqs, nodes, acked = _ledger_backup(env, tmp_path, "cut", "cluster")
    assert seqs, "the writer wrote nothing before the backup"
    assert seqs == set(range(max(seqs) + 1)), f"gaps: {sorted(set(range(max(seqs) + 1)) - seqs)[:10]}"
    assert max(seqs) < acked - 1  # and the writer carried on after the cut

    # Nodes 0 and 1 held their writes until node 2 had frozen, about a second after they had (its
    # prepare waited 1 s first; each node's own flush before its hold moves that by milliseconds).
    def at(stamp: str) -> dt.datetime:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    last = at(nodes["sampledb-2"]["hold"]["heldFrom"])
    for n in ("sampledb-0", "sampledb-1"):
        assert at(nodes[n]["hold"]["heldUntil"]) > last, (n, nodes[n]["hold"], last)
        assert nodes[n]["pauseMs"] >= 900, (n, nodes[n]["pauseMs"])


def test_node_consistency_alone_is_not_a_cluster_cut(env: Env, tmp_path: Path) -> None:
    """The control for the test above: the same writer and the same slow node, without the
    cluster-wide hold, leave holes in the sequence. So that test can tell the difference."""
    seqs, nodes, _ = _ledger_backup(env, tmp_path, "no-cut", "node")
    missing = set(range(max(seqs) + 1)) - seqs
    assert missing, "expected the per-node snapshots to miss writes made between them"
    assert nodes["sampledb-0"]["pauseMs"] < 1000


class WriteCounter:
    """Counts every write to each Backup of the namespace (each version a watch hands out)."""

    def __init__(self, env: Env) -> None:
        from kubernetes import client, config, watch

        self.api = client.CustomObjectsApi(config.new_client_from_config(str(env.cp.kubeconfig)))
        self.namespace = env.namespace
        self.writes: dict[str, int] = {}
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import urllib3

        try:
            for event in self._watch.stream(
                self.api.list_namespaced_custom_object,
                "shardkeeper.io",
                "v1alpha1",
                self.namespace,
                "backups",
                timeout_seconds=600,
            ):
                name = event["object"]["metadata"]["name"]
                self.writes[name] = self.writes.get(name, 0) + 1
        except urllib3.exceptions.HTTPError:
            pass  # the stream ends when the test stops watching

    def stop(self) -> None:
        self._watch.stop()


def test_twenty_backups_at_once_cost_each_a_bounded_number_of_writes(env: Env) -> None:
    """Writes per queued operation do not grow with its place in the queue: a waiting operation is
    written when it is queued, not again each time the queue advances."""
    env.make_cluster(replicas=1).fill({"articles": [0]}, keys=20)
    env.start_operator(SHARDKEEPER_TICK_SECONDS="0.5")
    counter = WriteCounter(env)
    names = [f"b{i:02}" for i in range(20)]
    env.apply("\n---\n".join(yaml.safe_dump(backup_manifest(n)) for n in names))
    for name in names:
        assert (
            env.wait_phase("backup", name, "SUCCESS", "FAILED", timeout=120)["status"]["phase"] == "SUCCESS"
        )
    time.sleep(1)
    counter.stop()
    writes = [counter.writes[n] for n in names]
    print(f"writes per Backup, in creation order: {writes} (total {sum(writes)})")
    # creation, finalizer, queued, started, preparing..success: a constant, whatever the place in line
    assert max(writes) <= 12, writes  # measured: 8 for the first, 9 for each queued one
    assert max(writes[10:]) <= max(writes[:10]) + 2, writes
