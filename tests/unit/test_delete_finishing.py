"""The delete handler of a Restore deleted while FINALIZING, driven directly: it ticks the restore
to its end rather than dropping it. Real handler, reconciler and filesystem backend; discovery
(the API server), the status write and the Event post are the seams."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import kopf
import pytest
from pydantic import SecretStr

from shardkeeper.api.common import utcnow
from shardkeeper.coordinator import events as k8s_events
from shardkeeper.coordinator import handlers
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
    await _delete_handler(ctx)(body=_body(deleted_ago), memo=memo)

    last = memo["shardkeeper-last-status"]
    assert last["phase"] == "FAILED" and "failing for" in last["error"], last
    assert posted == ["Failed"], posted  # no CleanupIncomplete: nothing was dropped
    assert len(asked) >= 3  # retried, not given up at the first error
    assert asked[-1] - asked[0] >= 0.3
    record = json.loads((tmp_path / "nightly" / "restore_config.json").read_text())
    assert record["status"] == "FAILED"
