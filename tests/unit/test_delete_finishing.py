"""The delete handler of a Restore deleted while FINALIZING, driven directly: it ticks the restore
to its end rather than dropping it. Real handler, reconciler and filesystem backend; discovery
(the API server), the status write and the Event post are the seams."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import kopf
import pytest
from pydantic import SecretStr

from shardkeeper.api.agent import NodePhase, OperationStatus
from shardkeeper.api.common import utcnow
from shardkeeper.coordinator import events as k8s_events
from shardkeeper.coordinator import handlers
from shardkeeper.coordinator.agents import NodeEndpoint
from shardkeeper.coordinator.context import OperatorContext
from shardkeeper.coordinator.kinds import KINDS
from shardkeeper.coordinator.kube import ClusterView, KubernetesUnavailable
from shardkeeper.coordinator.settings import OperatorSettings
from shardkeeper.storage.filesystem import FilesystemStorage


def _delete_handler(ctx: OperatorContext) -> Any:
    registry = kopf.OperatorRegistry()
    for kind in KINDS:
        handlers._register_kind(registry, ctx, kind)
    return next(h.fn for h in registry._changing.get_all_handlers() if h.id == "delete_restore")


def _body(deleted_ago: float) -> kopf.Body:
    deleted = (utcnow() - dt.timedelta(seconds=deleted_ago)).isoformat().replace("+00:00", "Z")
    raw: Any = {
        "metadata": {
            "name": "late",
            "namespace": "ns",
            "uid": "u1",
            "generation": 1,
            "creationTimestamp": "2026-11-30T00:00:00Z",
            "deletionTimestamp": deleted,
        },
        "spec": {"backend": "filesystem", "cluster": "sampledb", "backupId": "nightly"},
        "status": {
            "phase": "FINALIZING",
            "startedAt": "2026-11-30T00:00:01Z",
            "nodes": {"sampledb-0": {"phase": "FINALIZING", "source": "sampledb-0"}},
        },
    }
    return kopf.Body(raw)


@pytest.mark.parametrize("deleted_ago", [10.0, 600.0])
async def test_an_api_server_blip_while_finishing_is_retried_then_fails_the_restore_by_its_own_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deleted_ago: float
) -> None:
    """However long ago the deletion was (the operator may have been down), a transient error is
    retried tick after tick from when it began, and past ``transientErrorSeconds`` the restore
    FAILS (abort, record): the object never goes with the restore neither finished nor aborted."""
    posted: list[str] = []

    async def post(body: Any, *, type_: str, reason: str, note: str, action: str) -> None:
        posted.append(reason)

    monkeypatch.setattr(k8s_events, "post", post)
    asked: list[float] = []

    async def discover(namespace: str, name: str) -> ClusterView:
        asked.append(utcnow().timestamp())
        raise KubernetesUnavailable("the API server blinked")

    written: list[dict[str, Any]] = []

    async def publish_status(plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        written.append(patch)

    ctx = OperatorContext(
        settings=OperatorSettings(
            agent_token=SecretStr("t" * 24), tick_seconds=0.05, transient_error_seconds=0.3
        ),
        discover=discover,
        publish_status=publish_status,
        open_storage=lambda backend, path=None: FilesystemStorage(root=tmp_path, prefix=path or ""),
    )
    memo = kopf.Memo()
    await asyncio.wait_for(_delete_handler(ctx)(body=_body(deleted_ago), memo=memo), 30)

    last = memo["shardkeeper-last-status"]
    assert last["phase"] == "FAILED" and "failing for" in last["error"], last
    assert posted == ["Failed"], posted  # no CleanupIncomplete: nothing was dropped
    assert len(asked) >= 3  # retried, not given up at the first error
    assert asked[-1] - asked[0] >= 0.3
    record = json.loads((tmp_path / "nightly" / "restore_config.json").read_text())
    assert record["status"] == "FAILED"


class Agents:
    """Fake agents (the operator's AgentClient seam): each node in a phase; after ``complete`` its
    workload takes ``load_polls`` status answers to load (then SUCCESS); every step is recorded."""

    def __init__(self, phases: dict[str, NodePhase], load_polls: int = 3) -> None:
        self.phases = dict(phases)
        self.calls: list[tuple[str, str]] = []
        self._loading: dict[str, int] = {}
        self._load_polls = load_polls

    def _status(self, node: str) -> OperationStatus:
        now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)  # fixed: an answer changes only with its phase
        return OperationStatus(
            id="op",
            uid="u1",
            kind="restore",
            node=node,
            phase=self.phases[node],
            started_at=now,
            updated_at=now,
        )

    async def status(self, ep: NodeEndpoint, op_id: str, **_: Any) -> OperationStatus:
        if ep.name in self._loading:
            self._loading[ep.name] += 1
            if self._loading[ep.name] >= self._load_polls:
                self.phases[ep.name] = NodePhase.SUCCESS
        return self._status(ep.name)

    async def step(self, ep: NodeEndpoint, op_id: str, step: str) -> OperationStatus:
        self.calls.append((step, ep.name))
        if step == "complete" and self.phases[ep.name] is NodePhase.FINALIZING:
            self._loading.setdefault(ep.name, 0)
        return self._status(ep.name)

    async def abort(self, ep: NodeEndpoint, op_id: str, reason: str, **_: Any) -> OperationStatus:
        self.calls.append((f"abort: {reason}", ep.name))
        self.phases[ep.name] = NodePhase.CANCELED
        return self._status(ep.name)


def _with_agents(tmp_path: Path, agents: Agents, written: list[dict[str, Any]]) -> OperatorContext:
    async def discover(namespace: str, name: str) -> ClusterView:
        return ClusterView(
            replicas=2, nodes=[NodeEndpoint(n, f"pod-{n}", "http://agent") for n in agents.phases]
        )

    async def publish_status(plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        written.append(patch)

    ctx = OperatorContext(
        settings=OperatorSettings(agent_token=SecretStr("t" * 24), tick_seconds=0.05),
        discover=discover,
        publish_status=publish_status,
        open_storage=lambda backend, path=None: FilesystemStorage(root=tmp_path, prefix=path or ""),
    )
    ctx._agents = agents  # type: ignore[assignment]
    return ctx


def _finalizing(phases: dict[str, NodePhase]) -> kopf.Body:
    raw: Any = _body(1.0)
    raw = {**raw, "status": {**raw["status"], "startedAt": utcnow().isoformat()}}
    raw["status"]["nodes"] = {
        n: {"phase": p.value, "source": n, "podUid": f"pod-{n}"} for n, p in phases.items()
    }
    return kopf.Body(raw)


async def test_deleted_while_a_node_is_still_transferred_it_is_canceled_and_nothing_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """db-0 has not moved its collections yet, so no workload has been told to load anything: the
    deletion cancels, aborting every node with the reason, and never sends finalize or complete."""
    posted: list[str] = []

    async def post(body: Any, *, type_: str, reason: str, note: str, action: str) -> None:
        posted.append(reason)

    monkeypatch.setattr(k8s_events, "post", post)
    agents = Agents({"db-0": NodePhase.TRANSFERRED, "db-1": NodePhase.FINALIZING})
    memo = kopf.Memo()
    ctx = _with_agents(tmp_path, agents, [])
    await asyncio.wait_for(_delete_handler(ctx)(body=_finalizing(agents.phases), memo=memo), 30)

    last = memo["shardkeeper-last-status"]
    assert last["phase"] == "CANCELED" and last["error"].startswith("canceled: the Restore was deleted"), last
    assert sorted(agents.calls) == sorted((f"abort: {last['error']}", n) for n in ("db-0", "db-1")), (
        agents.calls
    )  # no finalize, no complete
    assert posted == ["Canceled"]


async def test_deleted_once_every_node_has_moved_it_is_finished_then_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted: list[str] = []

    async def post(body: Any, *, type_: str, reason: str, note: str, action: str) -> None:
        posted.append(reason)

    monkeypatch.setattr(k8s_events, "post", post)
    agents = Agents({"db-0": NodePhase.FINALIZING, "db-1": NodePhase.SUCCESS}, load_polls=8)
    memo = kopf.Memo()
    written: list[dict[str, Any]] = []
    handler = _delete_handler(_with_agents(tmp_path, agents, written))
    await asyncio.wait_for(handler(body=_finalizing(agents.phases), memo=memo), 30)

    assert memo["shardkeeper-last-status"]["phase"] == "SUCCESS"
    assert ("complete", "db-0") in agents.calls and not any(c.startswith("abort") for c, _ in agents.calls)
    assert posted == ["FinishingBeforeDeletion", "Succeeded"]
    assert written and written[0]["phase"] == "FINALIZING"  # the status while Terminating
    record = json.loads((tmp_path / "nightly" / "restore_config.json").read_text())
    assert record["status"] == "SUCCESS"
