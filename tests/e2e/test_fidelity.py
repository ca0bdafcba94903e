"""SUCCESS means the exact tree comes back, through the real operator and agents (issue 10's inputs).

Hookless agents here: the agent walks the data itself, so any tree a test makes is what it backs up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import blake3

from tests.e2e.conftest import Env, backup_manifest, restore_manifest
from tests.trees import Spec, make_tree, tree_digest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "backups"

#: A collection shaped like what real engines leave on disk, with every input of issue 10.
TREE = [
    Spec(b"col", "dir", mode=0o750, mtime_ns=1_700_000_000_500_000_000),
    Spec(b"col/odd\\name.sst", "file", b"backslash" * 100, 0o640, 1_700_000_000_500_000_000),
    Spec(b"col/000001.sst", "file", os.urandom(50_000), 0o444, 1_700_000_001_000_000_001),
    Spec(b"col/CURRENT", "symlink", target=b"000001.sst", mtime_ns=1_700_000_002_000_000_000),
    Spec(b"col/wal", "dir", mode=0o750, mtime_ns=1_700_000_003_123_456_789),
    Spec(b"col/-leading dash\nand newline", "file", b"x", 0o600, 1_700_000_004_000_000_000),
    Spec(b"col/\xff\xfe not utf-8", "file", b"latin", 0o644, 1_700_000_005_000_000_000),
    Spec(
        b"col/preallocated.log", "sparse", os.urandom(4096), 0o644, 1_700_000_006_000_000_000, size=256 << 20
    ),
    Spec(b"col/vectors.bin", "file", os.urandom(4 << 20), 0o644, 1_700_000_007_000_000_000),
    Spec(b"col/vectors.bin.link", "hardlink", target=b"col/vectors.bin"),
    Spec(b"col/suid-helper", "file", b"#!/bin/sh\n", 0o755, 1_700_000_008_000_000_000),
    Spec(b"col/" + b"n" * 255, "file", b"a long name", 0o644, 1_700_000_009_000_000_000),
]
#: Collection names the CRD used to refuse although agents backed them up.
ODD_COLLECTIONS = ["my coll", "données", "-dash", "logs[2026]"]


def _run(
    env: Env, kind: str, name: str, manifest: dict[str, Any], namespace: str | None = None
) -> dict[str, Any]:
    env.apply(manifest, namespace=namespace)
    return env.wait_phase(kind, name, "SUCCESS", "FAILED", "CANCELED", namespace=namespace, timeout=120)[
        "status"
    ]


def test_a_database_tree_comes_back_exactly(env: Env) -> None:
    """Inputs 1, 2, 4, 5, 6 and 9, and collection names with spaces, unicode, a leading '-' and '['."""
    source = env.make_cluster(replicas=1, hook=False)
    ns = env.make_namespace()
    env.backend_env["SHARDKEEPER_DATA_CAPACITY_BYTES"] = str(64 << 20)  # the target's quota: 64 MiB
    target = env.make_cluster(replicas=1, hook=False, namespace=ns)
    del env.backend_env["SHARDKEEPER_DATA_CAPACITY_BYTES"]
    make_tree(source.nodes[0].data, TREE)
    for name in ODD_COLLECTIONS:
        (source.nodes[0].data / name).mkdir()
        (source.nodes[0].data / name / "f").write_text(name)
    env.start_operator()

    status = _run(env, "backup", "tree", backup_manifest("tree", include=["col", *ODD_COLLECTIONS]))
    assert status["phase"] == "SUCCESS", status.get("error")
    assert status["collections"] == sorted(["col", *ODD_COLLECTIONS])

    # Input 9: whoever can write the bucket marks a file setuid in the descriptor.
    node_descriptor = env.backups / "tree" / "sampledb-0" / "backup.json"
    described = json.loads(node_descriptor.read_text())
    col = next(c for c in described["collections"] if c["name"] == "col")
    helper = next(e for e in col["entries"] if e.get("path") == "col/suid-helper")
    assert helper["mode"] == 0o755
    helper["mode"] = 0o4755
    node_descriptor.write_text(json.dumps(described))

    status = _run(env, "restore", "tree", restore_manifest("tree", "tree"), namespace=ns)
    assert status["phase"] == "SUCCESS", status.get("error")

    restored = target.nodes[0].data
    assert tree_digest(restored / "col") == tree_digest(source.nodes[0].data / "col")
    sparse = (restored / "col" / "preallocated.log").stat()
    assert sparse.st_size == 256 << 20 and sparse.st_blocks * 512 <= 64 << 10  # holes kept
    assert (restored / "col" / "suid-helper").stat().st_mode & 0o7777 == 0o755  # never setuid
    for name in ODD_COLLECTIONS:
        assert (restored / name / "f").read_text() == name


def test_a_collection_that_is_a_symbolic_link_is_refused_by_name(env: Env, tmp_path: Path) -> None:
    """Input 3: never left out without a word; refused, naming it, and the way out."""
    cluster = env.make_cluster(replicas=1, hook=False)
    other_disk = tmp_path / "other-disk" / "articles"
    other_disk.mkdir(parents=True)
    (other_disk / "000001.sst").write_bytes(b"elsewhere")
    (cluster.nodes[0].data / "articles").symlink_to(other_disk)
    (cluster.nodes[0].data / "users").mkdir()
    env.start_operator()
    status = _run(env, "backup", "all", backup_manifest("all"))
    assert status["phase"] == "FAILED"
    assert 'collection "articles" is a symbolic link' in status["error"] and "exclude it" in status["error"]
    status = _run(env, "backup", "without", backup_manifest("without", exclude=["articles"]))
    assert status["phase"] == "SUCCESS", status.get("error")
    assert status["collections"] == ["users"]


def _rewrite_in_place_while_uploaded(env: Env, name: str, cluster: str, namespace: str) -> dict[str, Any]:
    """Backs up a 4 MB kv/state.db at 1 MB/s and rewrites part of it in place meanwhile, as SQLite or
    bbolt do; returns the Backup's final status."""
    manifest = backup_manifest(
        name, cluster=cluster, include=["kv"], config={"compressionLevel": "NoCompression"}
    )
    env.apply(manifest, namespace=namespace)
    env.wait_for("backup", name, lambda o: o.get("status", {}).get("bytesDone", 0) > 0, namespace=namespace)
    data = next(c for c in env.clusters if c.name == cluster).nodes[0].data
    with (data / "kv" / "state.db").open("r+b") as f:
        f.seek(1 << 20)
        f.write(b"\xee" * (2 << 20))
    return env.wait_phase("backup", name, "SUCCESS", "FAILED", namespace=namespace, timeout=120)["status"]


def test_hookless_files_rewritten_in_place_are_never_stored_torn(env: Env) -> None:
    """Input 7: by default a .db is copied, so the backup holds it as it was at the snapshot; a
    pattern that wrongly calls it immutable fails the backup, naming it, instead of storing torn bytes."""
    env.backend_env["SHARDKEEPER_MAX_BYTES_PER_SECOND"] = str(1_000_000)
    env.make_cluster(replicas=1, hook=False, name="copied")
    ns = env.make_namespace()
    env.backend_env["SHARDKEEPER_IMMUTABLE_PATTERNS"] = "*.db"
    env.make_cluster(replicas=1, hook=False, namespace=ns, name="linked")
    before = os.urandom(4 << 20)
    for cluster in env.clusters:
        (cluster.nodes[0].data / "kv").mkdir()
        (cluster.nodes[0].data / "kv" / "state.db").write_bytes(before)
    env.start_operator()

    status = _rewrite_in_place_while_uploaded(env, "copied", "copied", env.namespace)
    assert status["phase"] == "SUCCESS", status.get("error")
    described = json.loads((env.backups / "copied" / "copied-0" / "backup.json").read_text())
    entry = next(e for e in described["collections"][0]["entries"] if e.get("path") == "kv/state.db")
    assert entry["sha256"] == hashlib.sha256(before).hexdigest()  # as it was when it was frozen

    status = _rewrite_in_place_while_uploaded(env, "linked", "linked", ns)
    assert status["phase"] == "FAILED"
    assert '"kv/state.db" was written in place after the snapshot' in status["error"]
    assert "SHARDKEEPER_IMMUTABLE_PATTERNS" in status["error"]


def test_a_pax_record_of_length_zero_fails_the_restore_at_once(env: Env) -> None:
    """Input 8: the chunk reader parses untrusted bytes; a crafted record is refused, never looped on."""
    source = env.make_cluster(replicas=1, hook=False)
    (source.nodes[0].data / "col").mkdir()
    (source.nodes[0].data / "col" / "f").write_bytes(b"data")
    ns = env.make_namespace()
    target = env.make_cluster(replicas=1, hook=False, namespace=ns)
    env.start_operator()
    status = _run(
        env, "backup", "crafted", backup_manifest("crafted", config={"compressionLevel": "NoCompression"})
    )
    assert status["phase"] == "SUCCESS", status.get("error")
    node_dir = env.backups / "crafted" / "sampledb-0"
    described = json.loads((node_dir / "backup.json").read_text())
    chunk = described["collections"][0]["chunks"][0]
    record = b"0 path=x\n"
    header = bytearray(512)
    header[0:9] = b"pax-header"[:9]
    header[100:108] = b"0000644\0"
    header[124:136] = f"{len(record):011o}\0".encode()
    header[136:148] = b"00000000000\0"
    header[156:157] = b"x"
    header[257:263] = b"ustar\0"
    header[263:265] = b"00"
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    crafted = bytes(header) + record.ljust(512, b"\0") + (node_dir / chunk["key"]).read_bytes()
    (node_dir / chunk["key"]).write_bytes(crafted)
    chunk["blake3"], chunk["size"], chunk["rawSize"] = (
        blake3.blake3(crafted).hexdigest(),
        len(crafted),
        len(crafted),
    )
    (node_dir / "backup.json").write_text(json.dumps(described))

    started = time.monotonic()
    status = _run(env, "restore", "crafted", restore_manifest("crafted", "crafted"), namespace=ns)
    assert status["phase"] == "FAILED"
    assert "invalid PAX record length 0" in status["error"]
    assert time.monotonic() - started < 60
    assert not (target.nodes[0].data / "col").exists()


def test_a_backup_of_the_previous_format_still_restores(env: Env) -> None:
    """A backup written by shardkeeper 0.1.0 (format 1), kept as a fixture, restores value for value."""
    shutil.copytree(FIXTURES / "v1-fixture", env.backups / "v1-fixture")
    expected = json.loads((FIXTURES / "v1-fixture.expected.json").read_text())
    target = env.make_cluster(replicas=2, value_size=64)
    env.start_operator()
    status = _run(env, "restore", "from-v1", restore_manifest("from-v1", "v1-fixture"))
    assert status["phase"] == "SUCCESS", status.get("error")
    for i, node in enumerate(target.nodes):
        for collection, (keys, digest) in expected[node.name].items():
            summary = target.summary(i, collection)
            assert (summary["keys"], summary["digest"], summary["wrongValues"]) == (keys, digest, 0)
