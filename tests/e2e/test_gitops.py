"""GitOps behaviour: manifests kept in Git are re-applied again and again, deleted by pruning, and
judged healthy by Argo CD or Flux from the status alone."""

from __future__ import annotations

import json
import time
from typing import Any

import lupa
import pytest
import yaml

from testbed.controlplane import REPO
from tests.e2e.conftest import Env, backup_manifest, wait_until

HEALTH_LUA = REPO / "deploy" / "argocd" / "health.lua"
LAYOUT = {"articles": [0, 1, 2], "users": [0, 1]}


def argo_health(obj: dict[str, Any]) -> tuple[str, str]:
    """Runs the shipped health script the way Argo CD does: ``obj`` is the live object."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(HEALTH_LUA.read_text())
    return str(result["status"]), str(result["message"])


def _descriptor(env: Env, backup_id: str) -> dict[str, Any]:
    return json.loads((env.backups / backup_id / "backup_config.json").read_text())  # type: ignore[no-any-return]


def test_reapplying_a_finished_backup_changes_nothing_and_starts_nothing(env: Env) -> None:
    env.make_cluster().fill(LAYOUT, keys=300)
    env.start_operator()
    manifest = yaml.safe_dump(backup_manifest("from-git"))
    env.apply(manifest)
    done = env.wait_phase("backup", "from-git", "SUCCESS", "FAILED", timeout=90)
    assert done["status"]["phase"] == "SUCCESS"
    events_before = env.events("from-git")
    descriptor = env.backups / "from-git" / "backup_config.json"
    written_at = descriptor.stat().st_mtime_ns

    out = env.apply(manifest)  # what an Argo CD / Flux sync does, again and again
    assert "unchanged" in out
    server_side = env.kubectl(
        "apply", "--server-side", "--field-manager=argocd-controller", "-f", "-", input=manifest
    )
    assert "serverside-applied" in server_side
    time.sleep(5)  # several operator ticks

    after = env.get("backup", "from-git")
    assert after["metadata"]["generation"] == done["metadata"]["generation"]
    assert after["status"] == done["status"]
    assert [e["reason"] for e in env.events("from-git")] == [e["reason"] for e in events_before]
    assert descriptor.stat().st_mtime_ns == written_at
    assert env.agents_free()
    for i in range(3):  # no agent saw a second operation
        assert env.agent(i, "GET", "/v1/operations/from-git").json()["phase"] == "SUCCESS"
    assert argo_health(after) == ("Healthy", f"Succeeded: {after['status']['size']}")


def test_deletion_policy_retain_keeps_the_data_and_delete_removes_it(env: Env) -> None:
    env.make_cluster().fill(LAYOUT, keys=300)
    env.start_operator()
    env.apply(backup_manifest("kept"))  # Retain is the default
    env.apply(backup_manifest("dropped", deletionPolicy="Delete"))
    for name in ("kept", "dropped"):
        done = env.wait_phase("backup", name, "SUCCESS", "FAILED", timeout=120)
        assert done["status"]["phase"] == "SUCCESS", done["status"].get("error")
        assert env.stored(name)

    env.kubectl("delete", "backup", "kept", "--timeout=60s")
    env.kubectl("delete", "backup", "dropped", "--timeout=60s")
    assert _descriptor(env, "kept")["status"] == "SUCCESS"  # still restorable
    assert len(env.stored("kept")) > 3
    assert not (env.backups / "dropped").exists()
    deleted = [e for e in env.events("dropped") if e["reason"] == "DataDeleted"]
    assert deleted and "removed" in deleted[0]["message"], env.events("dropped")
    assert not [e for e in env.events("kept") if e["reason"] in ("DataDeleted", "DataRetained")]


def test_delete_never_touches_data_another_backup_wrote(env: Env) -> None:
    env.make_cluster().fill(LAYOUT, keys=300)
    env.start_operator()
    env.apply(backup_manifest("original"))
    assert env.wait_phase("backup", "original", "SUCCESS", "FAILED")["status"]["phase"] == "SUCCESS"
    stored = env.stored("original")

    # Same id, Delete policy: refused as AlreadyExists, and deleting it must keep the original's data.
    env.apply(backup_manifest("intruder", id="original", deletionPolicy="Delete"))
    refused = env.wait_phase("backup", "intruder", "SUCCESS", "FAILED", timeout=60)
    assert env.condition(refused, "Failed")["reason"] == "AlreadyExists"
    assert argo_health(refused) == ("Degraded", refused["status"]["error"])
    env.kubectl("delete", "backup", "intruder", "--timeout=60s")
    assert env.stored("original") == stored
    retained = [e for e in env.events("intruder") if e["reason"] == "DataRetained"]
    assert retained and f"written by {env.namespace}/original" in retained[0]["message"]


def test_a_resync_recreating_a_deleted_retain_backup_adopts_its_data(env: Env) -> None:
    """Argo CD / Flux re-create a Backup that was deleted with Retain: the new object adopts the
    backup its predecessor (same namespace and name) wrote, instead of failing AlreadyExists forever."""
    env.make_cluster().fill(LAYOUT, keys=300)
    env.start_operator()
    manifest = yaml.safe_dump(backup_manifest("resynced"))
    env.apply(manifest)
    done = env.wait_phase("backup", "resynced", "SUCCESS", "FAILED", timeout=90)
    assert done["status"]["phase"] == "SUCCESS"
    stored = env.stored("resynced")
    env.kubectl("delete", "backup", "resynced", "--timeout=60s")  # Retain: the data stays

    env.apply(manifest)  # the re-sync
    adopted = env.wait_phase("backup", "resynced", "SUCCESS", "FAILED", timeout=60)
    status = adopted["status"]
    assert status["phase"] == "SUCCESS", status.get("error")
    assert env.condition(adopted, "Complete")["reason"] == "Adopted"
    assert (status["collections"], status["size"]) == (done["status"]["collections"], done["status"]["size"])

    def adopted_events() -> list[dict[str, Any]]:
        return [e for e in env.events("resynced") if e["reason"] == "Adopted"]

    wait_until(
        lambda: bool(adopted_events()), timeout=10, what="the Adopted event"
    )  # posted in the background
    assert len(adopted_events()) == 1 and done["metadata"]["uid"] in adopted_events()[0]["message"]
    assert argo_health(adopted)[0] == "Healthy"
    assert env.stored("resynced") == stored  # nothing was backed up again
    for i in range(3):  # no agent saw the new object's uid
        assert env.agent(i, "GET", "/v1/operations/resynced").json()["uid"] == done["metadata"]["uid"]
    assert _descriptor(env, "resynced")["owner"]["uid"] == adopted["metadata"]["uid"]

    # Another object with that id: refused, saying who wrote it and how to proceed.
    env.apply(backup_manifest("other", id="resynced"))
    refused = env.wait_phase("backup", "other", "SUCCESS", "FAILED", timeout=60)
    assert env.condition(refused, "Failed")["reason"] == "AlreadyExists"
    assert f"written by Backup {env.namespace}/resynced" in refused["status"]["error"]
    assert "set spec.id to an id not in use" in refused["status"]["error"]


def test_changing_the_policy_of_a_finished_backup_is_observed_and_honoured(env: Env) -> None:
    env.make_cluster().fill(LAYOUT, keys=300)
    env.start_operator()
    env.apply(backup_manifest("later"))
    done = env.wait_phase("backup", "later", "SUCCESS", "FAILED", timeout=90)
    assert done["metadata"]["generation"] == done["status"]["observedGeneration"] == 1

    env.apply(backup_manifest("later", deletionPolicy="Delete"))  # allowed after creation
    observed = env.wait_for(
        "backup", "later", lambda o: o["status"].get("observedGeneration") == 2, timeout=30
    )
    assert observed["status"]["phase"] == "SUCCESS"
    assert all(c["observedGeneration"] == 2 for c in observed["status"]["conditions"])
    assert argo_health(observed)[0] == "Healthy"
    # Other fields stay immutable, and the message says which may change.
    refused = env.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(backup_manifest("later", include=["users"])), check=False
    )
    assert "spec.include is immutable: only spec.cancel and spec.deletionPolicy may change" in refused

    env.kubectl("delete", "backup", "later", "--timeout=60s")
    assert not (env.backups / "later").exists()


def test_argo_health_follows_a_backup_through_its_life(env: Env) -> None:
    """The health script on real objects as the API server served them, phase by phase."""
    env.backend_env["SHARDKEEPER_MAX_BYTES_PER_SECOND"] = "500000"
    env.make_cluster(value_size=4096).fill({"articles": [0, 1, 2]}, keys=800)

    env.apply(backup_manifest("watched"))
    fresh = env.get("backup", "watched")  # no operator yet: nobody has looked at it
    assert argo_health(fresh) == ("Progressing", "Waiting for the operator to pick it up")

    env.start_operator()
    running = env.wait_for(
        "backup", "watched", lambda o: o.get("status", {}).get("phase") == "TRANSFERRING", timeout=60
    )
    status, message = argo_health(running)
    assert status == "Progressing" and message.startswith("TRANSFERRING")
    assert env.condition(running, "Reconciling")["status"] == "True"

    env.apply(backup_manifest("watched", cancel=True))
    canceled = env.wait_phase("backup", "watched", "CANCELED", "SUCCESS", "FAILED", timeout=60)
    wait_until(
        lambda: env.get("backup", "watched")["status"].get("observedGeneration") == 2,
        timeout=30,
        what="the cancel to be observed",
    )
    canceled = env.get("backup", "watched")
    assert canceled["status"]["phase"] == "CANCELED"
    assert argo_health(canceled)[0] == "Suspended"
    assert env.condition(canceled, "Stalled")["status"] == "True"
    assert env.condition(canceled, "Reconciling")["status"] == "False"


def test_the_argocd_configmap_snippet_carries_the_tested_script() -> None:
    snippet = yaml.safe_load((REPO / "deploy" / "argocd" / "argocd-cm.yaml").read_text())
    script = HEALTH_LUA.read_text()
    for kind in ("Backup", "Restore"):
        assert snippet["data"][f"resource.customizations.health.shardkeeper.io_{kind}"] == script


@pytest.mark.parametrize(
    ("generation", "observed", "expected"),
    [(2, 1, "Progressing"), (2, 2, "Healthy"), (3, None, "Progressing")],
)
def test_argo_health_waits_for_the_operator_to_observe_a_spec_change(
    generation: int, observed: int | None, expected: str
) -> None:
    obj: dict[str, Any] = {
        "metadata": {"generation": generation},
        "status": {"phase": "SUCCESS", "size": "1 MiB", "conditions": []},
    }
    if observed is not None:
        obj["status"]["observedGeneration"] = observed
    assert argo_health(obj)[0] == expected
