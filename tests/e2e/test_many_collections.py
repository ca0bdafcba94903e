"""More collections than a status lists: the status lists the first 100 and counts them all, the
backup and the restore cover every one, also when the operator restarts between the start (where
the list is chosen) and the end (where it is written into the descriptor)."""

from __future__ import annotations

import json

from tests.e2e.conftest import Env, backup_manifest, restore_manifest

COUNT = 105  # a status lists 100 (COLLECTIONS_LISTED)
NAMES = [f"c{i:03d}" for i in range(COUNT)]


def test_more_collections_than_a_status_lists_back_up_and_restore_across_an_operator_restart(
    env: Env,
) -> None:
    namespace = env.make_namespace()
    target = env.make_cluster(namespace=namespace, value_size=2048)  # its checks know the values
    env.backend_env["SHARDKEEPER_MAX_BYTES_PER_SECOND"] = "200000"  # seconds per node: time to restart
    source = env.make_cluster(value_size=2048)
    source.fill({name: [i % 3] for i, name in enumerate(NAMES)}, keys=30)
    operator = env.start_operator()
    env.apply(backup_manifest("many"))
    env.wait_for(
        "backup",
        "many",
        lambda o: o.get("status", {}).get("phase") == "TRANSFERRING" and o["status"]["bytesDone"] > 0,
        timeout=60,
    )
    operator.stop(kill=True)  # the chosen list was only in this process's memory
    operator.start()
    done = env.wait_phase("backup", "many", "SUCCESS", "FAILED", timeout=120)["status"]
    assert done["phase"] == "SUCCESS", done.get("error")
    assert (done["collectionCount"], done["collections"]) == (COUNT, NAMES[:100])
    descriptor = json.loads((env.backups / "many" / "backup_config.json").read_text())
    assert descriptor["collections"] == NAMES
    preparing = [e["message"] for e in env.events("many") if e["reason"] == "Preparing"]
    assert preparing and preparing[0].endswith(
        f"{COUNT} collections ['c000', 'c001', 'c002', 'c003', "
        "'c004', 'c005', 'c006', 'c007', 'c008', 'c009', ... and 95 more]"
    )

    env.apply(restore_manifest("many-back", "many"), namespace=namespace)
    restored = env.wait_phase("restore", "many-back", "SUCCESS", "FAILED", namespace=namespace, timeout=120)
    status = restored["status"]
    assert status["phase"] == "SUCCESS", status.get("error")
    assert (status["collectionCount"], status["collections"]) == (COUNT, NAMES[:100])
    for i in range(3):
        assert sorted(target.db(i, "GET", "/collections")) == NAMES[i::3]
        for name in NAMES[i::3]:
            assert target.summary(i, name) == source.summary(i, name)
    record = json.loads((env.backups / "many" / "restore_config.json").read_text())
    assert record["collections"] == NAMES
