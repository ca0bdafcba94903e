"""The fault matrix: every fault in every phase that lasts long enough to be hit, with the same
invariants after each (issue 11). One case per phase runs in ``make test``; ``-m slow`` runs all.

Faults: the operator SIGKILLed and restarted; node 1's agent SIGKILLed and restarted; node 1's
agent SIGSTOPped past the unreachable deadline, then SIGCONTed; ``kubectl delete``; ``spec.cancel``.
Phases: a Backup QUEUED (behind another), STARTED (a node slow to freeze), TRANSFERRING; a Restore
TRANSFERRING and FINALIZING (its workloads slow to load). TRANSFERRED and a Restore's STARTED last
one tick or less here: the operator-restart tests of ``test_resilience.py`` cover them.

After each case: a terminal phase (or the object gone) within its bound; no collection half-visible
on any node; every agent free; no workload holding writes; no staging left; the backend's
descriptor agrees with the CR. The times are printed, for the note.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from testbed.cluster import SampleCluster
from tests.e2e.conftest import Env, backup_manifest, restore_manifest, wait_until

UNREACHABLE = 6  # SHARDKEEPER_AGENT_UNREACHABLE_SECONDS for these tests
FAULTS = ["operator-kill", "agent-kill", "agent-stop", "delete", "cancel"]
PHASES = [
    "backup-QUEUED",
    "backup-STARTED",
    "backup-TRANSFERRING",
    "restore-TRANSFERRING",
    "restore-FINALIZING",
]
# make test runs one fault per phase (a diagonal); -m slow runs the other 20.
CI = {(p, FAULTS[i % len(FAULTS)]) for i, p in enumerate(PHASES)}
TERMINAL = {"SUCCESS", "FAILED", "CANCELED"}
#: What each fault may end in, by phase kind (an operator restart resumes; a dead or hung agent fails
#: the operation it serves; cancel cancels, except a restore already finalizing, which finishes; a
#: deleted one goes, and a restore already finalizing is finished first).
OUTCOMES = {
    "operator-kill": {"SUCCESS"},
    "agent-kill": {"FAILED"},
    "agent-stop": {"FAILED"},
    "delete": {"gone"},
    "cancel": {"CANCELED"},
}
#: Seconds from the fault to a terminal phase (or the object gone), at most; a queued Backup also
#: waits for the one ahead of it. The agent-stop bound includes the time it is stopped.
BOUNDS = {
    "operator-kill": 90,
    "agent-kill": 20,
    "agent-stop": UNREACHABLE + 4 + 10,
    "delete": 30,
    "cancel": 30,
}
#: A restore finalizing when canceled or deleted is finished: it waits for its workloads to load.
RESTORED_DELAY = 25


def _cases() -> list[Any]:
    return [
        pytest.param(p, f, marks=() if (p, f) in CI else (pytest.mark.slow,), id=f"{p}-{f}")
        for p in PHASES
        for f in FAULTS
    ]


def _status(env: Env, kind: str, name: str, ns: str) -> dict[str, Any] | None:
    out = env.kubectl("get", kind, name, "-o", "json", check=False, namespace=ns)
    try:
        return json.loads(out)  # type: ignore[no-any-return]
    except json.JSONDecodeError:
        return None  # NotFound: deleted


def _agent_pid(cluster: SampleCluster, i: int) -> int:
    assert cluster.nodes[i].agent is not None
    return cluster.nodes[i].agent.pid


def _inject(
    env: Env, fault: str, cluster: SampleCluster, kind: str, name: str, ns: str, manifest: Any
) -> None:
    if fault == "operator-kill":
        assert env.operator is not None
        env.operator.stop(kill=True)
        time.sleep(1)
        env.operator.start()
    elif fault == "agent-kill":
        cluster.kill_agent(1)
        cluster.start_agent(1)
    elif fault == "agent-stop":
        pid = _agent_pid(cluster, 1)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(UNREACHABLE + 4)
        os.kill(pid, signal.SIGCONT)
    elif fault == "delete":
        env.kubectl("delete", kind, name, "--wait=false", namespace=ns)
    else:
        manifest["spec"]["cancel"] = True
        env.apply(manifest, namespace=ns)


def _clean(env: Env) -> None:
    """Every agent free, no workload holding writes, no staging left, on every cluster."""
    for cluster in env.clusters:
        for i, node in enumerate(cluster.nodes):

            def free(i: int = i, cluster: SampleCluster = cluster) -> bool:
                return "operation" not in env.agent(i, "GET", "/v1/node", cluster=cluster).json()

            wait_until(free, timeout=90, what=f"{node.name}'s agent to be free")
            assert cluster.db(i, "GET", "/stats")["holding"] == [], node.name
            for leftover in ("staging", "restore"):
                where = node.data / ".shardkeeper" / leftover
                assert not where.exists() or not any(where.iterdir()), f"{node.name}: {leftover} left"


@pytest.mark.parametrize(("phase", "fault"), _cases())
def test_every_fault_in_every_phase_ends_clean(env: Env, phase: str, fault: str) -> None:
    kind, at = phase.split("-")
    env.backend_env["SHARDKEEPER_MAX_BYTES_PER_SECOND"] = str(400_000)
    source = env.make_cluster(value_size=4096)
    source.fill({"articles": [0, 1, 2], "users": [0, 1]}, keys=300)
    ns = env.namespace
    target = None
    if kind == "restore":
        ns = env.make_namespace()
        target = env.make_cluster(namespace=ns)  # the same pod names, in another namespace
    env.start_operator(
        SHARDKEEPER_AGENT_UNREACHABLE_SECONDS=str(UNREACHABLE), SHARDKEEPER_RESERVATION_SECONDS="30"
    )

    if kind == "backup":
        cluster, name = source, "subject"
        manifest = backup_manifest(name)
        if at == "QUEUED":
            env.apply(backup_manifest("blocker"))
            env.wait_phase("backup", "blocker", "TRANSFERRING", timeout=60)
        if at == "STARTED":
            source.db(1, "POST", "/debug/prepare-delay", json={"seconds": 15})
        env.apply(manifest)
        env.wait_for(
            "backup",
            name,
            lambda o: (
                o.get("status", {}).get("phase") == at
                and (at != "TRANSFERRING" or o["status"]["bytesDone"] > 0)
            ),
            timeout=60,
        )
    else:
        assert target is not None
        env.apply(backup_manifest("base"))
        env.wait_phase("backup", "base", "SUCCESS", timeout=120)
        cluster, name = target, "subject"
        if at == "FINALIZING":
            for i in range(3):
                target.db(i, "POST", "/debug/restored-delay", json={"seconds": RESTORED_DELAY})
        manifest = restore_manifest(name, "base")
        env.apply(manifest, namespace=ns)
        env.wait_for(
            "restore",
            name,
            lambda o: o.get("status", {}).get("phase") == at and o["status"].get("bytesDone", 0) > 0,
            namespace=ns,
            timeout=90,
        )

    started = time.monotonic()
    _inject(env, fault, cluster, kind, name, ns, manifest)
    finishes = kind == "restore" and at == "FINALIZING" and fault in ("cancel", "delete")
    deadline = (
        time.monotonic() + BOUNDS[fault] + (60 if at == "QUEUED" else 0) + (RESTORED_DELAY if finishes else 0)
    )
    obj = _status(env, kind, name, ns)

    def ended(status: dict[str, Any]) -> bool:
        # FAILED or CANCELED is published before the end is recorded in the backend, in the same
        # tick or a retry (``cleanupPending`` says which is left): the test waits for both.
        return status.get("phase") in TERMINAL and not status.get("cleanupPending")

    while obj is not None and (fault == "delete" or not ended(obj.get("status", {}))):
        assert time.monotonic() < deadline, json.dumps(obj.get("status"), indent=1)
        time.sleep(0.5)
        obj = _status(env, kind, name, ns)
    elapsed = time.monotonic() - started
    print(f"\nfault matrix: {phase} / {fault}: terminal after {elapsed:.1f} s")
    outcome = "gone" if obj is None else obj["status"]["phase"]
    allowed = OUTCOMES[fault]
    if kind == "restore" and at == "FINALIZING" and fault == "cancel":
        allowed = {"SUCCESS"}  # from FINALIZING a restore is finished, not undone
    if kind == "backup" and at == "QUEUED" and fault in ("agent-kill", "agent-stop"):
        allowed = {"SUCCESS"}  # the fault hit the running blocker; the queued one runs afterwards
    assert outcome in allowed, (outcome, obj and obj.get("status"))

    _clean(env)
    if kind == "backup" and obj is not None:
        descriptor = env.backups / "subject" / "backup_config.json"
        if descriptor.exists():
            assert json.loads(descriptor.read_text())["status"] == obj["status"]["phase"]
        else:  # canceled while queued: it never claimed the id
            assert obj["status"]["phase"] == "CANCELED" and not obj["status"].get("nodes")
    if target is not None:
        visible = [
            sorted(p.name for p in n.data.iterdir() if not p.name.startswith(".")) for n in target.nodes
        ]
        if outcome == "SUCCESS" or finishes:
            record = json.loads((env.backups / "base" / "restore_config.json").read_text())
            assert record["status"] == "SUCCESS", record
            assert visible == [["articles", "users"], ["articles", "users"], ["articles"]]
        else:
            assert visible == [[], [], []], visible  # nothing half-restored anywhere
