"""Restore, end to end: into another cluster with the same node names and, with nodeMapping, into one
with other names; every refusal happens before anything is written to a data directory."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from testbed.cluster import SampleCluster
from tests.backup_reader import expected_contents
from tests.e2e.conftest import Env, backup_manifest, restore_manifest, wait_until

LAYOUT = {"articles": [0, 1, 2], "users": [0, 1], "vectors": [2]}


def _source(env: Env, *, keys: int = 2000, writers: bool = True) -> SampleCluster:
    cluster = env.make_cluster()
    cluster.fill(LAYOUT, keys=keys)
    if writers:
        cluster.start_writers()
    return cluster


def _backup(env: Env, name: str = "nightly") -> None:
    env.apply(backup_manifest(name))
    done = env.wait_phase("backup", name, "SUCCESS", "FAILED", timeout=90)
    assert done["status"]["phase"] == "SUCCESS", done["status"].get("error")


def _data_untouched(cluster: SampleCluster) -> None:
    """No collection appeared, and nothing is left in the restore staging area."""
    for node in cluster.nodes:
        visible = [p.name for p in node.data.iterdir() if not p.name.startswith(".")]
        assert visible == [], f"{node.name} has {visible}"
        restore_dir = node.data / ".shardkeeper" / "restore"
        assert not restore_dir.exists() or not any(restore_dir.iterdir())


def _restored(
    cluster: SampleCluster, expected: dict[str, dict[str, tuple[int, str]]], mapping: dict[str, str]
) -> None:
    """Each target node serves exactly what its source node's backup holds, every key and value."""
    for source, collections in expected.items():
        target = next(i for i, n in enumerate(cluster.nodes) if n.name == mapping.get(source, source))
        served = sorted(cluster.db(target, "GET", "/collections"))
        assert served == sorted(collections)
        for collection, (records, digest) in collections.items():
            summary = cluster.summary(target, collection)
            assert (summary["keys"], summary["digest"]) == (records, digest), (source, collection)


def test_migration_to_same_names_and_to_other_names(env: Env, tmp_path: Path) -> None:
    source = _source(env)
    b_ns, c_ns = env.make_namespace(), env.make_namespace()
    same = env.make_cluster(namespace=b_ns)  # another namespace, the same pod names
    other = env.make_cluster(namespace=c_ns, name="target")  # other pod names
    env.start_operator()
    _backup(env)
    source.stop_writers()
    expected = expected_contents(env.backups, "nightly", tmp_path / "expected")

    env.apply(restore_manifest("from-nightly", "nightly"), namespace=b_ns)
    done = env.wait_phase("restore", "from-nightly", "SUCCESS", "FAILED", namespace=b_ns, timeout=90)
    status = done["status"]
    assert status["phase"] == "SUCCESS", status.get("error")
    assert status["collections"] == sorted(LAYOUT)
    assert {n: s["phase"] for n, s in status["nodes"].items()} == {
        f"sampledb-{i}": "SUCCESS" for i in range(3)
    }
    assert {n: s["source"] for n, s in status["nodes"].items()} == {
        f"sampledb-{i}": f"sampledb-{i}" for i in range(3)
    }
    assert status["bytesDone"] == status["bytesTotal"] > 0
    assert env.condition(done, "Complete")["status"] == "True"
    reasons = [e["reason"] for e in env.events("from-nightly", namespace=b_ns)]
    assert reasons == ["Started", "Preparing", "Transferring", "Finalizing", "Succeeded"]
    _restored(same, expected, {})
    record = json.loads((env.backups / "nightly" / "restore_config.json").read_text())
    assert (
        record["status"] == "SUCCESS"
        and record["restore"]["namespace"] == b_ns
        and record["cluster"] == "sampledb"
    )

    mapping = {"sampledb-0": "target-2", "sampledb-1": "target-0", "sampledb-2": "target-1"}
    env.apply(restore_manifest("moved", "nightly", cluster="target", nodeMapping=mapping), namespace=c_ns)
    done = env.wait_phase("restore", "moved", "SUCCESS", "FAILED", namespace=c_ns, timeout=90)
    assert done["status"]["phase"] == "SUCCESS", done["status"].get("error")
    assert {n: s["source"] for n, s in done["status"]["nodes"].items()} == {v: k for k, v in mapping.items()}
    _restored(other, expected, mapping)
    record = json.loads((env.backups / "nightly" / "restore_config.json").read_text())
    assert record["nodeMapping"] == mapping and record["cluster"] == "target"
    for node in [*same.nodes, *other.nodes]:
        assert not any((node.data / ".shardkeeper" / "restore").iterdir())
    assert env.agents_free()


def _refused(env: Env, target: SampleCluster, name: str, namespace: str, reason: str, **spec: Any) -> str:
    env.apply(restore_manifest(name, "nightly", cluster=target.name, **spec), namespace=namespace)
    done = env.wait_phase("restore", name, "SUCCESS", "FAILED", "CANCELED", namespace=namespace, timeout=60)
    assert done["status"]["phase"] == "FAILED", done["status"]
    assert env.condition(done, "Failed")["reason"] == reason
    # FAILED is on record before the nodes hear the abort: their cleanup ends after it.
    # Well within the reservation (60 s), whose expiry would free an agent that never heard it.
    wait_until(lambda: env.agents_free(target), timeout=20, what="the target's agents to end the restore")
    _data_untouched(target)
    return str(done["status"]["error"])


def test_topology_and_selection_refusals(env: Env) -> None:
    _source(env, keys=200, writers=False)
    ns = env.make_namespace()
    two = env.make_cluster(namespace=ns, name="two", replicas=2)
    renamed = env.make_cluster(namespace=ns, name="renamed")
    env.start_operator()
    _backup(env)

    error = _refused(env, two, "count", ns, "TopologyMismatch")
    assert 'node count mismatch: backup "nightly" has 3 nodes' in error
    assert "['sampledb-0', 'sampledb-1', 'sampledb-2']" in error and "['two-0', 'two-1']" in error

    error = _refused(env, renamed, "names", ns, "TopologyMismatch")
    assert "missing ['sampledb-0', 'sampledb-1', 'sampledb-2']" in error
    assert (
        "['renamed-0', 'renamed-1', 'renamed-2'] that the backup does not" in error and "nodeMapping" in error
    )

    error = _refused(env, renamed, "bad-map", ns, "InvalidSpec", nodeMapping={"ghost": "renamed-0"})
    assert "spec.nodeMapping names ['ghost']" in error

    error = _refused(
        env,
        renamed,
        "include",
        ns,
        "InvalidSpec",
        include=["articles", "nope"],
        nodeMapping={f"sampledb-{i}": f"renamed-{i}" for i in range(3)},
    )
    assert (
        'spec.include: collection "nope" matches no collection' in error
        and "['articles', 'users', 'vectors']" in error
    )

    env.apply(restore_manifest("missing", "no-such-backup", cluster="renamed"), namespace=ns)
    done = env.wait_phase("restore", "missing", "FAILED", "SUCCESS", namespace=ns, timeout=60)
    assert (
        done["status"]["error"]
        == f'backup id "no-such-backup" does not exist at "{env.backups / "no-such-backup"}"'
    )

    descriptor_path = env.backups / "nightly" / "backup_config.json"
    original = descriptor_path.read_text()
    for name, change, reason, words in (
        (
            "failed-backup",
            {"status": "FAILED"},
            "BackupNotRestorable",
            'backup "nightly" is FAILED, not SUCCESS',
        ),
        ("from-the-future", {"formatVersion": 99}, "UnsupportedFormat", "format version 99 is not known"),
    ):
        descriptor_path.write_text(json.dumps({**json.loads(original), **change}))
        error = _refused(env, renamed, name, ns, reason)
        assert words in error
    descriptor_path.write_text(original)


def test_existing_collection_is_refused_before_any_download(env: Env) -> None:
    _source(env, keys=200, writers=False)
    ns = env.make_namespace()
    target = env.make_cluster(namespace=ns, name="target")
    target.fill({"users": [1]}, keys=10)  # "users" already lives on one node of the target
    env.start_operator()
    _backup(env)
    # Take every chunk away: a restore that read any would fail with "not found" instead.
    chunks = list((env.backups / "nightly").rglob("chunk-*"))
    assert chunks
    for chunk in chunks:
        chunk.rename(chunk.with_name(chunk.name + ".away"))

    mapping = {f"sampledb-{i}": f"target-{i}" for i in range(3)}
    env.apply(restore_manifest("clash", "nightly", cluster="target", nodeMapping=mapping), namespace=ns)
    done = env.wait_phase("restore", "clash", "FAILED", "SUCCESS", namespace=ns, timeout=60)
    assert env.condition(done, "Failed")["reason"] == "CollectionExists"
    assert done["status"]["error"] == (
        'collections already exist in cluster "target": "users" on node "target-1"; '
        "a restore never overwrites a collection"
    )
    assert done["status"].get("nodes") in (None, {})  # no agent was even asked to prepare
    for node in target.nodes:
        visible = sorted(p.name for p in node.data.iterdir() if not p.name.startswith("."))
        assert visible == (["users"] if node.name == "target-1" else [])
    assert target.summary(1, "users")["keys"] == 10


def test_a_corrupted_chunk_fails_the_restore_and_nothing_becomes_visible(env: Env) -> None:
    _source(env, keys=500, writers=False)
    ns = env.make_namespace()
    target = env.make_cluster(namespace=ns)
    env.start_operator()
    _backup(env)
    descriptor = json.loads((env.backups / "nightly" / "sampledb-2" / "backup.json").read_text())
    key = next(c for c in descriptor["collections"] if c["name"] == "vectors")["chunks"][0]["key"]
    chunk = env.backups / "nightly" / "sampledb-2" / key
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))

    error = _refused(env, target, "corrupt", ns, "NodeFailed")
    assert error.startswith('node "sampledb-2": ')
    assert f"sampledb-2/{key}" in error and (
        "checksum" in error or "sha256" in error or "decompress" in error
    )
    op = f"/v1/operations/restore-{env.get('restore', 'corrupt', ns)['metadata']['uid']}"
    for i in (0, 1):  # the healthy nodes had verified (or were verifying) their data, and threw it away
        assert env.agent(i, "GET", op, cluster=target).json()["phase"] == "CANCELED"
    record = json.loads((env.backups / "nightly" / "restore_config.json").read_text())
    assert record["status"] == "FAILED"


def test_an_archive_entry_escaping_staging_is_refused(env: Env, tmp_path: Path) -> None:
    _source(env, keys=100, writers=False)
    ns = env.make_namespace()
    target = env.make_cluster(namespace=ns)
    env.start_operator()
    _backup(env)
    # Someone with write access to the bucket replaces node 0's "users" chunk with an archive whose
    # entry climbs out, and makes the descriptor agree with it (checksums and all).
    evil = b"owned\n"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("users/../../../../escaped")
        info.size = len(evil)
        tar.addfile(info, io.BytesIO(evil))
    stored = raw.getvalue()
    node_dir = env.backups / "nightly" / "sampledb-0"
    (node_dir / "chunk-99").write_bytes(stored)
    descriptor = json.loads((node_dir / "backup.json").read_text())
    descriptor["codec"] = "none"
    users = next(c for c in descriptor["collections"] if c["name"] == "users")
    users["chunks"] = [
        {
            "n": 1,
            "key": "chunk-99",
            "sha256": hashlib.sha256(stored).hexdigest(),
            "size": len(stored),
            "rawSize": len(stored),
            "files": 1,
        }
    ]
    users["entries"] = [
        {"path": "users", "type": "dir", "mode": 0o755, "chunk": 1},
        {
            "path": "users/../../../../escaped",
            "type": "file",
            "size": len(evil),
            "sha256": hashlib.sha256(evil).hexdigest(),
            "mode": 0o644,
            "chunk": 1,
        },
    ]
    (node_dir / "backup.json").write_text(json.dumps(descriptor))

    error = _refused(env, target, "escape", ns, "NodeFailed")
    # The descriptor is checked by the backup's own rule before a byte is downloaded.
    assert 'node "sampledb-0"' in error and "would be written outside the collection" in error
    assert not list(env.root.rglob("escaped"))


def test_not_enough_disk_space_is_refused(env: Env) -> None:
    _source(env, keys=2000, writers=False)
    ns = env.make_namespace()
    env.backend_env["SHARDKEEPER_DATA_CAPACITY_BYTES"] = str(200_000)  # the target's volumes are tiny
    target = env.make_cluster(namespace=ns)
    del env.backend_env["SHARDKEEPER_DATA_CAPACITY_BYTES"]
    env.start_operator()
    _backup(env)
    error = _refused(env, target, "too-big", ns, "InsufficientSpace")
    assert error.startswith("not enough disk space: ")
    assert 'node "sampledb-0" needs' in error and "and has 195.3 KiB free" in error


def test_cancel_mid_transfer_leaves_nothing(env: Env) -> None:
    _source(env, keys=1500, writers=False)
    ns = env.make_namespace()
    env.backend_env["SHARDKEEPER_MAX_BYTES_PER_SECOND"] = str(100_000)
    target = env.make_cluster(namespace=ns)
    del env.backend_env["SHARDKEEPER_MAX_BYTES_PER_SECOND"]
    env.start_operator()
    _backup(env)
    env.apply(restore_manifest("stop-it", "nightly"), namespace=ns)
    env.wait_for(
        "restore", "stop-it", lambda o: o.get("status", {}).get("bytesDone", 0) > 0, namespace=ns, timeout=60
    )
    env.apply(restore_manifest("stop-it", "nightly", cancel=True), namespace=ns)
    done = env.wait_phase("restore", "stop-it", "CANCELED", "SUCCESS", "FAILED", namespace=ns, timeout=60)
    assert done["status"]["phase"] == "CANCELED"
    _data_untouched(target)
    record = json.loads((env.backups / "nightly" / "restore_config.json").read_text())
    assert record["status"] == "CANCELED"


def test_operator_restart_mid_restore_resumes(env: Env, tmp_path: Path) -> None:
    cluster = env.make_cluster(value_size=4096)
    cluster.fill(LAYOUT, keys=800)
    ns = env.make_namespace()
    env.backend_env["SHARDKEEPER_MAX_BYTES_PER_SECOND"] = str(500_000)
    target = env.make_cluster(namespace=ns)
    del env.backend_env["SHARDKEEPER_MAX_BYTES_PER_SECOND"]
    operator = env.start_operator()
    _backup(env)
    expected = expected_contents(env.backups, "nightly", tmp_path / "expected")
    env.apply(restore_manifest("resumed", "nightly"), namespace=ns)
    env.wait_for(
        "restore",
        "resumed",
        lambda o: o.get("status", {}).get("phase") == "TRANSFERRING" and o["status"]["bytesDone"] > 0,
        namespace=ns,
        timeout=60,
    )
    operator.stop(kill=True)
    operator.start()
    done = env.wait_phase("restore", "resumed", "SUCCESS", "FAILED", namespace=ns, timeout=120)
    assert done["status"]["phase"] == "SUCCESS", done["status"].get("error")
    _restored(target, expected, {})


def test_a_restore_waits_for_a_backup_of_the_same_cluster(env: Env) -> None:
    _source(env, keys=300, writers=False)
    ns = env.make_namespace()
    env.backend_env["SHARDKEEPER_MAX_BYTES_PER_SECOND"] = str(300_000)
    target = env.make_cluster(namespace=ns)
    target.fill({"own": [0, 1, 2]}, keys=1000)  # the target has data of its own to back up, slowly
    env.start_operator()
    _backup(env)
    env.apply(backup_manifest("target-backup"), namespace=ns)
    env.wait_phase("backup", "target-backup", "TRANSFERRING", namespace=ns, timeout=60)
    env.apply(restore_manifest("after-backup", "nightly"), namespace=ns)
    queued = env.wait_phase("restore", "after-backup", "QUEUED", namespace=ns, timeout=30)
    assert f"Backup {ns}/target-backup" in env.condition(queued, "Complete")["message"]
    backup = env.wait_phase("backup", "target-backup", "SUCCESS", "FAILED", namespace=ns, timeout=120)[
        "status"
    ]
    restore = env.wait_phase("restore", "after-backup", "SUCCESS", "FAILED", namespace=ns, timeout=120)[
        "status"
    ]
    assert backup["phase"] == restore["phase"] == "SUCCESS"
    assert restore["startedAt"] >= backup["completedAt"]
