"""A Backup, end to end: kubectl apply -> two-phase commit over real agents -> files in the backend."""

from __future__ import annotations

import re
from pathlib import Path

import requests

from tests.backup_reader import check_collection, materialize, read_backup
from tests.e2e.conftest import Env, backup_manifest

LAYOUT = {"articles": [0, 1, 2], "users": [0, 1], "vectors": [2]}


def test_backup_reaches_success_with_every_frozen_file_checksummed(env: Env, tmp_path: Path) -> None:
    cluster = env.make_cluster()
    cluster.fill(LAYOUT, keys=3000)
    cluster.start_writers()
    env.start_operator()
    before = {n.name: cluster.db(i, "GET", "/stats")["acked"] for i, n in enumerate(cluster.nodes)}

    env.kubectl("apply", "-f", str(Path("examples/backup.yaml").resolve()))
    waited = env.cp.kubectl(
        "wait", "--for=condition=Complete", "backup/first-backup", "-n", env.namespace, "--timeout=120s"
    )
    assert "condition met" in waited.stdout

    after = cluster.stop_writers()
    backup = env.get("backup", "first-backup")
    status = backup["status"]
    assert status["phase"] == "SUCCESS"
    assert status["collections"] == sorted(LAYOUT)
    assert status["observedGeneration"] == backup["metadata"]["generation"]
    assert {n: s["phase"] for n, s in status["nodes"].items()} == {n.name: "SUCCESS" for n in cluster.nodes}
    assert status["bytesDone"] == status["bytesTotal"] > 0
    assert status["path"] == str(env.backups / "first-backup")

    descriptor, nodes = read_backup(env.backups / "first-backup")
    assert descriptor["status"] == "SUCCESS"
    assert descriptor["codec"] == "gzip"
    for i, node in enumerate(cluster.nodes):
        stats = cluster.db(i, "GET", "/stats")
        # Exactly the files the workload froze at prepare, no more, no fewer, same sizes.
        listed = stats["prepared"]["first-backup"]
        assert {p: len(c) for p, c in nodes[node.name].files.items()} == listed
        # And they are a consistent database: each collection a gap-free prefix of what was written,
        # taken while the writers kept going (the backup is behind what they wrote afterwards).
        materialize(nodes[node.name], tmp_path / node.name)
        held = sorted(c for c, idx in LAYOUT.items() if i in idx)
        assert [c["name"] for c in nodes[node.name].descriptor["collections"]] == held
        for collection in held:
            records = check_collection(
                tmp_path / node.name / collection, collection, node.name, cluster.value_size
            )
            assert before[node.name][collection] <= records < after[node.name][collection]

    # Staging is gone and every agent is free again.
    for node in cluster.nodes:
        assert not any((node.data / ".shardkeeper" / "staging").iterdir())
        info = requests.get(
            f"{node.agent_url}/v1/node",
            headers={"Authorization": f"Bearer {env.token_file.read_text()}"},
            timeout=5,
        ).json()
        assert "operation" not in info

    events = env.events("first-backup")
    reasons = [e["reason"] for e in events]
    for reason in ("Started", "Transferring", "Succeeded"):
        assert reason in reasons
    # Posted by shardkeeper (not "kopf"), and `kubectl describe` lists them in the order they were
    # posted, also those posted in the same second.
    assert {e.get("reportingComponent") for e in events} == {"shardkeeper.io/operator"}
    described = env.kubectl("describe", "backups.shardkeeper.io", "first-backup")
    listed = described.split("\nEvents:", 1)[1].splitlines()
    listed_reasons = [line.split()[1] for line in listed if "shardkeeper.io/operator" in line]
    assert listed_reasons == reasons, described
    assert "kopf" not in "\n".join(listed)

    header, row = env.kubectl("get", "backups.shardkeeper.io", "first-backup").splitlines()
    assert header.split() == [
        "NAME",
        "PHASE",
        "CLUSTER",
        "BACKEND",
        "COLLECTIONS",
        "SIZE",
        "PROGRESS",
        "DURATION",
        "AGE",
        "ERROR",
    ]
    cells = row.split()
    assert cells[:5] == ["first-backup", "SUCCESS", cluster.name, "filesystem", str(len(LAYOUT))]
    assert cells[7] == "100%" and re.fullmatch(r"\d+(s|m\d*s?)", cells[8]), row


def test_one_agent_refusing_prepare_fails_the_backup_and_frees_every_agent(env: Env) -> None:
    cluster = env.make_cluster()
    cluster.fill(LAYOUT, keys=200)
    token = env.token_file.read_text()
    headers = {"Authorization": f"Bearer {token}"}
    # Another coordinator holds node 1 (reserved for 120 s, never committed).
    busy = cluster.nodes[1]
    foreign = {
        "kind": "backup",
        "id": "someone-else",
        "uid": "foreign",
        "node": busy.name,
        "backend": "filesystem",
        "collections": ["articles"],
        "reservationSeconds": 120,
    }
    resp = requests.put(
        f"{busy.agent_url}/v1/operations/someone-else", json=foreign, headers=headers, timeout=10
    )
    assert resp.status_code == 202, resp.text
    env.start_operator()

    env.apply(backup_manifest("refused"))
    backup = env.wait_phase("backup", "refused", "FAILED", "SUCCESS")
    status = backup["status"]
    assert status["phase"] == "FAILED"
    assert busy.name in status["error"] and "busy" in status["error"] and "someone-else" in status["error"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "PrepareRefused"
    assert not status.get("nodes")  # no node was asked to prepare

    # Refused before any node was asked to prepare (after the grace for a lagging index): nothing
    # stored, no node touched; the busy one still holds only its own reservation.
    stored = sorted(p.relative_to(env.backups).as_posix() for p in env.backups.rglob("*") if p.is_file())
    assert stored == []
    for node in cluster.nodes:
        op = requests.get(f"{node.agent_url}/v1/operations/refused", headers=headers, timeout=5)
        assert op.status_code == 404
        assert not any((node.data / ".shardkeeper" / "staging").glob("refused*"))
    for i in (0, 2):
        assert cluster.db(i, "GET", "/stats")["holding"] == []
    requests.post(f"{busy.agent_url}/v1/operations/someone-else/abort", json={}, headers=headers, timeout=60)
    infos = [requests.get(f"{n.agent_url}/v1/node", headers=headers, timeout=5).json() for n in cluster.nodes]
    assert all("operation" not in info for info in infos)
