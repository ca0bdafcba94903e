"""BackupSchedule end to end: a real operator creates Backups on the minute, and an operator killed
across a slot neither runs it twice nor skips it silently."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from testbed.controlplane import REPO
from tests.e2e.conftest import Env, wait_until

SCHEDULE_LABEL = "shardkeeper.io/schedule"


def schedule_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "shardkeeper.io/v1alpha1",
        "kind": "BackupSchedule",
        "metadata": {"name": name},
        "spec": {
            "schedule": "* * * * *",
            "template": {"backend": "filesystem", "cluster": "sampledb"},
            **spec,
        },
    }


def children(env: Env, schedule: str) -> list[dict[str, Any]]:
    out = env.kubectl("get", "backups", "-l", f"{SCHEDULE_LABEL}={schedule}", "-o", "json")
    return sorted(json.loads(out)["items"], key=lambda b: b["metadata"]["name"])


def slot_of(backup: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(backup["metadata"]["annotations"]["shardkeeper.io/scheduled-at"])


def parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def test_an_operator_killed_across_a_slot_runs_it_once_late_or_counts_a_miss(env: Env) -> None:
    cluster = env.make_cluster(replicas=2)
    cluster.fill({"articles": [0, 1]}, keys=200)
    env.start_operator()
    env.apply(schedule_manifest("minutely"))
    env.apply(schedule_manifest("strict", startingDeadlineSeconds=10))
    env.apply(schedule_manifest("broken", schedule="61 * * * *"))
    schedule = env.get("backupschedule", "minutely")

    # A cron expression the API server cannot check is refused by the operator, naming the field.
    broken = env.wait_for("backupschedule", "broken", lambda o: bool(o.get("status", {}).get("conditions")))
    stalled = env.condition(broken, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "InvalidSpec"
    assert "spec.schedule" in stalled["message"] and "61 * * * *" in stalled["message"]

    # The next slot at least 15 s away: the operator announces it, then is killed 5 s before it and
    # is back 20 s after. (A slot between the schedules' creation and this one runs as usual.)
    now = dt.datetime.now(dt.UTC)
    boundary = (now + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
    if (boundary - now).total_seconds() < 15:
        boundary += dt.timedelta(minutes=1)
    # When the boundary was pushed a minute on, the slot before it runs first: the operator can
    # announce the boundary only after that one, so wait until 6 s before the boundary at most.
    announce_within = (boundary - dt.datetime.now(dt.UTC)).total_seconds() - 6
    for name in ("minutely", "strict"):
        env.wait_for(
            "backupschedule",
            name,
            lambda o: parse(o.get("status", {}).get("nextScheduleTime", "1970-01-01T00:00:00Z")) == boundary,
            timeout=max(10.0, announce_within),
        )
    time.sleep(max(0.0, (boundary - dt.datetime.now(dt.UTC)).total_seconds() - 5))
    assert env.operator is not None
    env.operator.stop(kill=True)

    def at_boundary(schedule: str) -> list[dict[str, Any]]:
        return [b for b in children(env, schedule) if slot_of(b) == boundary]

    assert at_boundary("minutely") == [] and at_boundary("strict") == []
    time.sleep(max(0.0, (boundary - dt.datetime.now(dt.UTC)).total_seconds() + 20))
    env.start_operator()

    # No deadline: the slot runs once, late: one Backup named after its slot, owned by the schedule.
    wait_until(
        lambda: bool(at_boundary("minutely")), timeout=30, what="the slot missed while the operator was down"
    )
    [first] = at_boundary("minutely")
    name = first["metadata"]["name"]
    assert name == f"minutely-{boundary:%Y%m%dt%H%M%S}z"
    owner = first["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "BackupSchedule",
        "minutely",
        schedule["metadata"]["uid"],
        True,
    )
    assert first["spec"]["cluster"] == "sampledb" and "id" not in first["spec"]
    env.wait_phase("backup", name, "SUCCESS", timeout=60)
    assert env.stored(name), "the scheduled Backup's data is in the backend"
    status = env.wait_for(
        "backupschedule", "minutely", lambda o: o.get("status", {}).get("lastSuccessfulBackup") == name
    )["status"]
    assert parse(status["lastScheduleTime"]) == boundary and status["missedRuns"] == 0
    assert parse(status["nextScheduleTime"]) >= boundary + dt.timedelta(minutes=1)
    assert env.condition(env.get("backupschedule", "minutely"), "Ready")["status"] == "True"

    # With a 10 s deadline: a counted miss, and no run for that slot.
    strict = env.wait_for("backupschedule", "strict", lambda o: o.get("status", {}).get("missedRuns") == 1)
    assert parse(strict["status"]["lastMissedTime"]) == boundary
    assert at_boundary("strict") == []
    missed = [e for e in env.events("strict") if e["reason"] == "MissedSchedule"]
    assert len(missed) == 1 and "startingDeadlineSeconds" in missed[0]["message"]
    slots = [slot_of(b) for b in children(env, "minutely")]
    assert len(slots) == len(set(slots)), "one Backup per slot"


def live_children(env: Env, schedule: str) -> list[dict[str, Any]]:
    return [b for b in children(env, schedule) if not b["metadata"].get("deletionTimestamp")]


def test_keep_last_3_holds_exactly_three_backups_and_their_data_and_the_floor_survives_max_age(
    env: Env,
) -> None:
    cluster = env.make_cluster(replicas=2)
    cluster.fill({"articles": [0, 1]}, keys=200)
    # The schedule clock runs 6x: "every minute" is every 10 s, so five runs take about a minute.
    env.apply(schedule_manifest("rotating", retention={"keepLast": 3}))
    env.start_operator(SHARDKEEPER_SCHEDULE_CLOCK_RATE="6")

    seen: set[str] = set()

    def five_runs() -> bool:
        seen.update(b["metadata"]["name"] for b in children(env, "rotating"))
        return len(seen) >= 5

    wait_until(five_runs, timeout=150, what="five scheduled runs")

    # What the next success would push out is in status: the oldest of the three kept.
    def settled(o: dict[str, Any]) -> bool:
        seen.update(b["metadata"]["name"] for b in children(env, "rotating"))  # runs go on meanwhile
        kept = live_children(env, "rotating")
        done = len(kept) == 3 and all(b.get("status", {}).get("phase") == "SUCCESS" for b in kept)
        retention = o.get("status", {}).get("retention", {})
        return done and retention.get("nextToPrune") == [kept[0]["metadata"]["name"]]

    env.wait_for("backupschedule", "rotating", settled, timeout=60)
    env.kubectl("patch", "backupschedule", "rotating", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    status = env.wait_for(
        "backupschedule",
        "rotating",
        lambda o: (
            # The operator has seen the suspension (its metrics are set in the same tick) ...
            any(c["reason"] == "Suspended" for c in o.get("status", {}).get("conditions", []))
            # ... and the last run has finished and pushed the oldest out.
            and len(children(env, "rotating")) == 3
            and all(b.get("status", {}).get("phase") == "SUCCESS" for b in children(env, "rotating"))
            and o["status"].get("backups") == 3
        ),
        timeout=60,
    )["status"]
    seen.update(b["metadata"]["name"] for b in children(env, "rotating"))
    kept = [b["metadata"]["name"] for b in children(env, "rotating")]
    assert kept == sorted(seen)[-3:], "the newest three stay"
    for name in sorted(seen):
        assert bool(env.stored(name)) == (name in kept), f"backend data of {name}"
    assert status["retention"]["pruned"] == len(seen) - 3 and status["backups"] == 3
    pruned_events = [e for e in env.events("rotating") if e["reason"] == "Pruned"]
    assert len(pruned_events) == len(seen) - 3
    assert all("keepLast" not in e["message"] and "kept by no rule" in e["message"] for e in pruned_events)

    # The operator's /metrics says the same.
    assert env.operator is not None
    scraped = requests.get(f"http://127.0.0.1:{env.operator.metrics_port}/metrics", timeout=10).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
    }
    sched = (("namespace", env.namespace), ("schedule", "rotating"))
    ops = (("cluster", "sampledb"), ("kind", "backup"), ("namespace", env.namespace), ("result", "success"))
    assert samples[("shardkeeper_operations_total", (*ops, ("schedule", "rotating")))] == len(seen)
    assert samples[("shardkeeper_schedule_backups", sched)] == 3
    stored = sum(b["status"]["storedBytes"] for b in children(env, "rotating"))
    assert 0 < stored < samples[("shardkeeper_stored_bytes_total", (("cluster", "sampledb"), ops[2]))]
    assert samples[("shardkeeper_schedule_pruned_backups", sched)] == len(seen) - 3
    assert samples[("shardkeeper_schedule_suspended", sched)] == 1
    assert (
        samples[("shardkeeper_schedule_last_success_timestamp_seconds", sched)]
        == parse(status["lastSuccessfulTime"]).timestamp()
    )

    # Every agent's /metrics: one successful backup per run, the bytes it read, one pause per run.
    for node in cluster.nodes:
        text = requests.get(f"http://{node.ip}:8471/metrics", timeout=10).text
        agent = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        mine = (("kind", "backup"), ("node", node.name))
        assert agent[("shardkeeper_agent_operations_total", (*mine, ("result", "success")))] == len(seen)
        assert agent[("shardkeeper_agent_transferred_bytes_total", mine)] > 0
        assert agent[("shardkeeper_agent_write_pause_seconds_count", (("node", node.name),))] == len(seen)

    # maxAge 1m (10 s here) prunes all but the newest success: the minSuccessful floor.
    env.kubectl(
        "patch",
        "backupschedule",
        "rotating",
        "--type=merge",
        "-p",
        '{"spec":{"retention":{"keepLast":3,"maxAge":"1m","minSuccessful":1}}}',
    )
    wait_until(lambda: len(children(env, "rotating")) == 1, timeout=60, what="maxAge to prune two")
    time.sleep(15)  # 1.5 minutes of schedule time later, the floor is still there, with its data
    assert [b["metadata"]["name"] for b in children(env, "rotating")] == [kept[-1]]
    assert env.stored(kept[-1])
    assert all(not env.stored(name) for name in kept[:-1])

    # The CR-aware describe: a row per node of the kept Backup.
    described = subprocess.run(
        [sys.executable, "-m", "shardkeeper", "describe", "backup", kept[-1], "-n", env.namespace],
        env={**os.environ, "PYTHONPATH": str(REPO), "KUBECONFIG": str(env.cp.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert described.returncode == 0, described.stderr
    assert "Schedule:     rotating (slot " in described.stdout
    rows = described.stdout.split("\n\n")[1].splitlines()[1:]
    assert [row.split()[:2] for row in rows] == [[node.name, "SUCCESS"] for node in cluster.nodes]
