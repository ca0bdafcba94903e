"""Incremental backups end to end: a full backup, an incremental after a few changes, one with no
change; each restores value for value; the full one is never deleted while the others need it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.backup_reader import expected_contents
from tests.e2e.conftest import Env, backup_manifest, restore_manifest

LAYOUT = {"articles": [0, 1, 2], "users": [0, 1]}


def _backup(env: Env, name: str, **spec: Any) -> dict[str, Any]:
    env.apply(backup_manifest(name, **spec))
    done = env.wait_phase("backup", name, "SUCCESS", "FAILED", timeout=90)
    assert done["status"]["phase"] == "SUCCESS", done["status"].get("error")
    return done["status"]


def test_a_chain_of_incrementals_restores_and_keeps_its_base(env: Env, tmp_path: Path) -> None:
    source = env.make_cluster(value_size=1024)
    source.fill(LAYOUT, keys=3000)
    targets = {name: env.make_namespace() for name in ("full", "inc1", "inc2")}
    clusters = {name: env.make_cluster(namespace=ns) for name, ns in targets.items()}
    env.start_operator()

    full = _backup(env, "full", deletionPolicy="Delete")
    source.fill({"articles": [0]}, keys=150)  # about 5 % more: a new table on node 0
    inc1 = _backup(env, "inc1", incrementalBase="full")
    inc2 = _backup(env, "inc2", incrementalBase="inc1")
    stored = {n: sum(s["storedBytes"] for s in env.backups_descriptor(n)["nodes"].values()) for n in targets}
    assert inc1["bytesReused"] > 0.8 * full["bytesTotal"]
    # Nothing was written, but the workload's hold itself rewrites its small MANIFEST/OPTIONS files.
    assert inc2["bytesReused"] > 0.95 * inc2["bytesTotal"]
    assert stored["inc1"] < 0.2 * stored["full"] and stored["inc2"] < 0.05 * stored["full"]
    assert env.backups_descriptor("inc2")["references"] == ["full", "inc1"]

    # Deleting the full backup's object keeps its data: the incrementals need it.
    env.kubectl("delete", "backup", "full")
    retained = [e for e in env.events("full") if e["reason"] == "DataRetained"]
    assert retained and "['inc1', 'inc2']" in retained[-1]["message"]
    assert (env.backups / "full" / "backup_config.json").exists()

    for name, ns in targets.items():
        expected = expected_contents(env.backups, name, tmp_path / name)
        env.apply(restore_manifest(f"from-{name}", name), namespace=ns)
        done = env.wait_phase("restore", f"from-{name}", "SUCCESS", "FAILED", namespace=ns, timeout=120)
        assert done["status"]["phase"] == "SUCCESS", done["status"].get("error")
        target = clusters[name]
        for node, collections in expected.items():
            i = next(k for k, n in enumerate(target.nodes) if n.name == node)
            for collection, (records, digest) in collections.items():
                summary = target.summary(i, collection)
                assert (summary["keys"], summary["digest"]) == (records, digest), (name, node, collection)
    assert expected_contents(env.backups, "inc2", tmp_path / "again")["sampledb-0"]["articles"][0] == 3150
