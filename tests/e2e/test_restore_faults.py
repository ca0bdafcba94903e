"""Restores facing corrupt objects in the bucket and agents that die at the worst moment (issue 11)."""

from __future__ import annotations

import json
import time
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Env, backup_manifest, restore_manifest, wait_until

LAYOUT = {"articles": [0, 1, 2], "users": [0, 1]}


def _backup(env: Env, name: str = "nightly") -> None:
    env.apply(backup_manifest(name))
    done = env.wait_phase("backup", name, "SUCCESS", "FAILED", timeout=90)
    assert done["status"]["phase"] == "SUCCESS", done["status"].get("error")


def _failed(env: Env, name: str, namespace: str) -> dict[str, Any]:
    done = env.wait_phase("restore", name, "SUCCESS", "FAILED", "CANCELED", namespace=namespace, timeout=60)
    assert done["status"]["phase"] == "FAILED", done["status"]
    return done


def test_corrupt_descriptors_fail_the_restore_naming_the_object(env: Env) -> None:
    env.make_cluster().fill(LAYOUT, keys=50)
    ns = env.make_namespace()
    env.make_cluster(namespace=ns)
    env.start_operator()
    _backup(env)
    global_descriptor = env.backups / "nightly" / "backup_config.json"
    good = global_descriptor.read_bytes()

    global_descriptor.write_bytes(b"{not json at all")
    env.apply(restore_manifest("not-json", "nightly"), namespace=ns)
    done = _failed(env, "not-json", ns)
    assert env.condition(done, "Failed")["reason"] == "CorruptDescriptor"
    assert str(global_descriptor) in done["status"]["error"]

    global_descriptor.write_bytes(good)
    node_descriptor = env.backups / "nightly" / "sampledb-1" / "backup.json"
    node_descriptor.write_text(json.dumps({"formatVersion": 2, "collections": "not a list"}))
    env.apply(restore_manifest("other-shape", "nightly"), namespace=ns)
    done = _failed(env, "other-shape", ns)
    assert env.condition(done, "Failed")["reason"] == "CorruptDescriptor"
    assert f"{node_descriptor} is corrupt" in done["status"]["error"]
    assert "Traceback" not in env.operator.logs()  # type: ignore[union-attr]


def test_an_agent_killed_while_finalizing_takes_back_what_it_had_moved(env: Env) -> None:
    """Every target node has moved its collections into place and waits for its workload to load them
    when node 1's agent is killed and restarted: the Restore fails, the others take theirs back on
    abort, and node 1's restarted agent takes back what its journal says it had moved."""
    env.make_cluster().fill(LAYOUT, keys=200)
    ns = env.make_namespace()
    target = env.make_cluster(namespace=ns)
    env.start_operator()
    _backup(env)
    for i in range(3):
        target.db(i, "POST", "/debug/restored-delay", json={"seconds": 45})
    env.apply(restore_manifest("interrupted", "nightly"), namespace=ns)
    env.wait_for(
        "restore",
        "interrupted",
        lambda o: (
            o.get("status", {}).get("phase") == "FINALIZING"
            and all(n.get("phase") == "FINALIZING" for n in o["status"]["nodes"].values())
        ),
        namespace=ns,
        timeout=90,
    )
    assert (target.nodes[1].data / "articles").is_dir()  # moved into place, waiting for the workload
    target.kill_agent(1)
    target.start_agent(1)
    started = time.monotonic()
    done = _failed(env, "interrupted", ns)
    assert "no longer knows this operation" in done["status"]["error"]
    assert time.monotonic() - started < 30
    # FAILED is on record before the nodes hear the abort: give the take-back its moment.
    for node in target.nodes:
        journal = node.data / ".shardkeeper" / "journal"

        def taken_back(node: Any = node, journal: Any = journal) -> bool:
            visible = [p.name for p in node.data.iterdir() if not p.name.startswith(".")]
            return not visible and (not journal.exists() or not any(journal.iterdir()))

        wait_until(taken_back, timeout=30, what=f"{node.name} to take back what it had moved")


def test_a_restore_deleted_while_finalizing_is_finished_first(env: Env) -> None:
    """From FINALIZING on a restore is finished, not undone: deleted when node 0's workload has loaded
    its collections and the others' are still loading, the Restore goes only once every node serves
    its collections, and nothing is taken back on any node (an abort could not take node 0's back)."""
    env.make_cluster().fill(LAYOUT, keys=200)
    ns = env.make_namespace()
    target = env.make_cluster(namespace=ns)
    env.start_operator()
    _backup(env)
    for i in (1, 2):
        target.db(i, "POST", "/debug/restored-delay", json={"seconds": 6})
    env.apply(restore_manifest("late", "nightly"), namespace=ns)
    env.wait_for(
        "restore",
        "late",
        lambda o: o.get("status", {}).get("nodes", {}).get("sampledb-0", {}).get("phase") == "SUCCESS",
        namespace=ns,
        timeout=90,
    )
    assert env.get("restore", "late", namespace=ns)["status"]["phase"] == "FINALIZING"
    env.kubectl("delete", "restore", "late", "--wait=false", namespace=ns)

    def gone() -> bool:
        return "NotFound" in env.kubectl("get", "restore", "late", check=False, namespace=ns)

    wait_until(gone, timeout=60, what="the Restore to go")
    expected = {
        "sampledb-0": ["articles", "users"],
        "sampledb-1": ["articles", "users"],
        "sampledb-2": ["articles"],
    }
    for i, node in enumerate(target.nodes):
        assert sorted(target.db(i, "GET", "/collections")) == expected[node.name], node.name
        for collection in expected[node.name]:
            assert target.summary(i, collection)["keys"] > 0, (node.name, collection)
        assert not any((node.data / ".shardkeeper" / "restore").iterdir()), node.name
    reasons = [e["reason"] for e in env.events("late", namespace=ns)]
    assert reasons[-2:] == ["FinishingBeforeDeletion", "Succeeded"], reasons
    assert "Canceled" not in reasons
    record = json.loads((env.backups / "nightly" / "restore_config.json").read_text())
    assert record["status"] == "SUCCESS" and record["restore"]["namespace"] == ns
    assert env.agents_free()
    # Counted like any restore that ends, although it ended in the delete handler.
    assert env.operator is not None
    scraped = requests.get(f"http://127.0.0.1:{env.operator.metrics_port}/metrics", timeout=10).text
    counted = [
        s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
        if s.name == "shardkeeper_operations_total" and s.labels.get("namespace") == ns
    ]
    assert counted == [1.0], counted
