"""What a user watches: phases, progress and events; and what a user does: cancel, delete, reuse ids."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
from typing import Any

import urllib3
from kubernetes import client, config, watch

from tests.e2e.conftest import Env, backup_manifest, wait_until


def _slow_cluster(env: Env, replicas: int = 3, *, bytes_per_second: int = 1_000_000) -> None:
    """~4 MB per node, transferred at ``bytes_per_second`` per node: long enough to watch."""
    env.backend_env["SHARDKEEPER_MAX_BYTES_PER_SECOND"] = str(bytes_per_second)
    cluster = env.make_cluster(replicas=replicas, value_size=4096)
    cluster.fill({"articles": list(range(replicas))}, keys=1000)


class StatusWatch:
    """Records every version of a Backup's status the API server hands out (every write)."""

    def __init__(self, env: Env, name: str) -> None:
        api = config.new_client_from_config(str(env.cp.kubeconfig))
        self.objects = client.CustomObjectsApi(api)
        self.env, self.name = env, name
        self.versions: list[dict[str, Any]] = []
        self.error: Exception | None = None
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._watch.stream(
                self.objects.list_namespaced_custom_object,
                "shardkeeper.io",
                "v1alpha1",
                self.env.namespace,
                "backups",
                field_selector=f"metadata.name={self.name}",
                timeout_seconds=120,
            ):
                self.versions.append(event["object"].get("status") or {})
        except urllib3.exceptions.HTTPError as exc:  # the stream ends when the test stops watching
            self.error = exc

    def stop(self) -> None:
        self._watch.stop()


def test_phases_progress_and_events_while_transferring(env: Env) -> None:
    # Slow enough that progress is written (at most every 5 s, the default) while it runs.
    _slow_cluster(env, bytes_per_second=300_000)
    env.start_operator(SHARDKEEPER_PROGRESS_INTERVAL_SECONDS="5")
    watcher = StatusWatch(env, "watched")
    env.apply(backup_manifest("watched"))

    mid = env.wait_for(
        "backup",
        "watched",
        lambda o: o.get("status", {}).get("phase") == "TRANSFERRING" and o["status"]["bytesDone"] > 0,
        timeout=60,
    )["status"]
    assert mid["bytesDone"] < mid["bytesTotal"]
    assert mid["filesTotal"] > 0
    assert mid["throughput"].endswith("/s") and mid["bytesPerSecond"] > 0
    for node in mid["nodes"].values():
        assert node["phase"] == "TRANSFERRING" and node["bytesTotal"] > 0 and node["pauseMs"] > 0
    assert env.condition(env.get("backup", "watched"), "Complete")["reason"] == "Transferring"

    done = env.wait_phase("backup", "watched", "SUCCESS", "FAILED", timeout=120)["status"]
    watcher.stop()
    assert done["phase"] == "SUCCESS" and done["bytesDone"] == done["bytesTotal"]

    # Every phase showed on the CR, in order, and each change was an Event.
    seen = [v["phase"] for v in watcher.versions if v.get("phase")]
    phases = [p for i, p in enumerate(seen) if i == 0 or p != seen[i - 1]]
    assert phases == ["STARTED", "TRANSFERRING", "TRANSFERRED", "SUCCESS"]
    reasons = [e["reason"] for e in env.events("watched")]
    assert reasons == ["Started", "Preparing", "Transferring", "Transferred", "Succeeded"]

    # Progress-only writes are rate-limited to one per 5 s: the transfer took seconds with progress
    # changing every tick, yet only phase changes were written at once.
    seconds = _seconds(done["startedAt"], done["completedAt"])
    assert seconds >= 3
    transferring = [v for v in watcher.versions if v.get("phase") == "TRANSFERRING"]
    progress_only = [
        new
        for old, new in itertools.pairwise(transferring)
        if _without_progress(old) == _without_progress(new)
    ]
    assert len(progress_only) <= seconds / 5 + 1, (len(progress_only), seconds)


PROGRESS = {"bytesDone", "filesDone", "bytesPerSecond", "throughput"}


def _without_progress(status: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in status.items() if k not in PROGRESS}
    out["nodes"] = {
        n: {k: v for k, v in s.items() if k not in PROGRESS} for n, s in status.get("nodes", {}).items()
    }
    return out


def _assert_agents_canceled(env: Env, op_id: str) -> None:
    """Every agent's share of ``op_id`` ended, and the cancel stopped at least one mid-transfer. A
    node whose share finished before the cancel reached it reports SUCCESS: its upload is removed
    with the rest (checked by the caller)."""
    phases = [env.agent(i, "GET", f"/v1/operations/{op_id}").json()["phase"] for i in range(3)]
    assert "CANCELED" in phases and set(phases) <= {"CANCELED", "SUCCESS"}, phases


def _seconds(start: str, end: str) -> float:
    parse = dt.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def test_cancel_mid_transfer_stops_everything_and_the_id_can_be_reused(env: Env) -> None:
    _slow_cluster(env, bytes_per_second=300_000)  # ~13 s per node: the cancel lands mid-transfer
    env.start_operator()
    env.apply(backup_manifest("tonight"))
    env.wait_for("backup", "tonight", lambda o: o.get("status", {}).get("bytesDone", 0) > 0, timeout=60)

    env.apply(backup_manifest("tonight", cancel=True))
    canceled = env.wait_phase("backup", "tonight", "CANCELED", "SUCCESS", "FAILED", timeout=60)
    assert canceled["status"]["phase"] == "CANCELED"
    assert env.condition(canceled, "Failed")["reason"] == "Canceled"
    assert "Canceled" in [e["reason"] for e in env.events("tonight")]
    _assert_agents_canceled(env, "tonight")
    for node in env.cluster.nodes:  # type: ignore[union-attr]
        assert not (node.data / ".shardkeeper" / "staging" / "tonight").exists()
    assert env.agents_free()
    # Transfers stopped and partial uploads are gone: only the CANCELED descriptor remains.
    assert env.stored("tonight") == ["backup_config.json"]
    assert json.loads((env.backups / "tonight" / "backup_config.json").read_text())["status"] == "CANCELED"

    # A canceled id may be used again.
    env.apply(backup_manifest("tonight-again", id="tonight"))
    again = env.wait_phase("backup", "tonight-again", "SUCCESS", "FAILED", timeout=90)
    assert again["status"]["phase"] == "SUCCESS"
    assert json.loads((env.backups / "tonight" / "backup_config.json").read_text())["status"] == "SUCCESS"

    # Any other existing id is refused, naming where it is.
    env.apply(backup_manifest("tonight-twice", id="tonight"))
    refused = env.wait_phase("backup", "tonight-twice", "SUCCESS", "FAILED", timeout=30)
    assert refused["status"]["error"].startswith(
        f'backup "tonight" already exists at "{env.backups / "tonight"}" (SUCCESS, written by '
        f"Backup {env.namespace}/tonight-again): set spec.id to an id not in use"
    ), refused["status"]["error"]
    assert env.condition(refused, "Failed")["reason"] == "AlreadyExists"
    assert json.loads((env.backups / "tonight" / "backup_config.json").read_text())["status"] == "SUCCESS"


def test_deleting_a_running_backup_cancels_it(env: Env) -> None:
    _slow_cluster(env, bytes_per_second=300_000)  # ~13 s per node: the delete lands mid-transfer
    env.start_operator()
    env.apply(backup_manifest("doomed"))
    env.wait_for("backup", "doomed", lambda o: o.get("status", {}).get("bytesDone", 0) > 0, timeout=60)

    env.kubectl("delete", "backup", "doomed", "--timeout=60s")
    assert "NotFound" in env.kubectl("get", "backup", "doomed", check=False)
    _assert_agents_canceled(env, "doomed")
    assert env.agents_free()
    assert env.stored("doomed") == ["backup_config.json"]
    assert json.loads((env.backups / "doomed" / "backup_config.json").read_text())["status"] == "CANCELED"


def test_deleting_a_backup_in_its_first_second_cancels_it_promptly_with_one_terminal_event(env: Env) -> None:
    """Delete races the first tick (prepare under way): CANCELED, never FAILED, exactly one terminal
    Event, the object gone promptly, and every agent free; repeated at a few delays into that first
    second, where the race falls differently."""
    _slow_cluster(env)
    env.start_operator()
    # The operator is watching (an object created and deleted before its watch starts is never
    # seen, by any controller): a first Backup gets a phase.
    env.apply(backup_manifest("warm-up", cancel=True))
    env.wait_phase("backup", "warm-up", "CANCELED", timeout=60)
    for i, delay in enumerate((0.0, 0.0, 0.2, 0.5, 0.9)):
        name = f"early-{i}"
        env.apply(backup_manifest(name))
        time.sleep(delay)
        started = time.monotonic()
        env.kubectl("delete", "backup", name, "--timeout=60s")
        gone_after = time.monotonic() - started
        print(f"deleted {delay:.1f}s after creation: gone {gone_after:.1f}s after kubectl delete")
        assert "NotFound" in env.kubectl("get", "backup", name, check=False)

        def terminal(name: str = name) -> list[str]:
            ends = ("Canceled", "Failed", "Succeeded")
            return [e["reason"] for e in env.events(name) if e["reason"] in ends]

        wait_until(lambda: bool(terminal()), timeout=10, what=f"a terminal event for {name}")
        time.sleep(1)  # events are posted in the background: a second one would be there by now
        assert terminal() == ["Canceled"], (delay, [(e["reason"], e["message"]) for e in env.events(name)])
        assert gone_after < 10, (delay, gone_after)  # measured 0.1-1.8 s; kopf polled every 60 s before
        wait_until(env.agents_free, timeout=30, what="every agent free")
        stored = env.stored(name)
        if stored:  # the id was claimed before the delete: its descriptor says so
            assert stored == ["backup_config.json"], stored
            assert json.loads((env.backups / name / "backup_config.json").read_text())["status"] == "CANCELED"
