"""What a tick writes in its middle (a decision on record before anyone acts on it) and at its end.

A status written in the middle of a tick is followed at once by the Events decided so far, so an
operator that dies later in the tick loses neither; the tick's last write is a merge patch against
what the middle one wrote, so a field set there and gone by the end is removed. Real reconcilers and
the real filesystem backend; the API server's status write and Event post are the seams (recorded),
and discovery raises what the test needs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from shardkeeper.api.agent import NodePhase
from shardkeeper.api.backup import BackupSpec, BackupStatus
from shardkeeper.api.common import Codec, CompressionLevel, Phase
from shardkeeper.api.descriptors import NodeDescriptor
from shardkeeper.api.status import NodeStatus
from shardkeeper.coordinator.backup import BackupReconciler
from shardkeeper.coordinator.context import OperatorContext
from shardkeeper.coordinator.handlers import interrupted
from shardkeeper.coordinator.kube import ClusterView, merge_patch
from shardkeeper.coordinator.objects import Event, OperationObject, Stop
from shardkeeper.coordinator.settings import OperatorSettings
from shardkeeper.coordinator.twophase import Decision, NodeView, Step
from shardkeeper.errors import SpecError
from shardkeeper.storage.filesystem import FilesystemStorage
from shardkeeper.storage.repository import BackupRepository

NODES = ["db-0", "db-1"]
STARTED = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


class ApiServer:
    """The two calls a tick makes to the API server, recorded in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.on_status: list[Any] = []
        """Called after each status write (a deletion arriving then, say)."""

    async def publish_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(("status", patch))
        for hook in self.on_status:
            hook()

    async def post_events(self, events: list[Event]) -> None:
        self.calls.append(("events", [e.reason for e in events]))


def _ctx(tmp_path: Path, api: ApiServer, discover_raises: Exception) -> OperatorContext:
    async def discover(namespace: str, name: str) -> ClusterView:
        raise discover_raises

    return OperatorContext(
        settings=OperatorSettings(agent_token=SecretStr("t" * 24)),
        discover=discover,
        publish_status=api.publish_status,
        open_storage=lambda backend, path=None: FilesystemStorage(root=tmp_path, prefix=path or ""),
    )


def _backup(phase: Phase) -> OperationObject[Any, Any]:
    status = BackupStatus(
        phase=phase,
        started_at=STARTED,
        nodes={n: NodeStatus(phase=NodePhase.SUCCESS.value) for n in NODES},
    )
    status.list_collections(["articles"])
    return OperationObject(
        kind="Backup",
        name="nightly",
        namespace="ns",
        uid="uid-1",
        generation=1,
        created="2026-11-30T12:00:00Z",
        spec=BackupSpec.model_validate({"backend": "filesystem", "cluster": "sampledb"}),
        status=status,
    )


def _reconciler(tmp_path: Path, phase: Phase, api: ApiServer, *, nodes_uploaded: bool) -> BackupReconciler:
    rec = BackupReconciler(_ctx(tmp_path, api, SpecError("the StatefulSet is gone")), _backup(phase))
    rec.post_events = api.post_events
    storage = FilesystemStorage(root=tmp_path, prefix="")
    rec._write_descriptor(storage, Phase.STARTED, collections=["articles"])
    if nodes_uploaded:
        for node in NODES:
            BackupRepository(storage).write_node(
                NodeDescriptor(
                    id="nightly",
                    node=node,
                    status=Phase.SUCCESS,
                    started_at=STARTED,
                    codec=Codec.ZSTD,
                    compression_level=CompressionLevel.ZSTD_BEST_SPEED,
                    collections=[],
                    bytes=0,
                    stored_bytes=0,
                    file_count=0,
                )
            )
    return rec


def _stored_phase(tmp_path: Path) -> str:
    descriptor = BackupRepository(FilesystemStorage(root=tmp_path, prefix="")).global_descriptor("nightly")
    assert descriptor is not None
    return descriptor.status.value


async def test_transferred_is_on_record_with_its_event_before_the_success_is_written(tmp_path: Path) -> None:
    api = ApiServer()
    rec = _reconciler(tmp_path, Phase.TRANSFERRING, api, nodes_uploaded=True)
    recorded: list[str] = []
    api.on_status.append(lambda: recorded.append(_stored_phase(tmp_path)))

    await rec._act(Decision(Step.RECORD_TRANSFERRED, Phase.TRANSFERRED), {})
    await rec.posted()

    assert [(kind, patch["phase"] if kind == "status" else patch) for kind, patch in api.calls] == [
        ("status", "TRANSFERRED"),
        ("events", ["Transferred"]),
    ]
    assert recorded == ["STARTED"]  # the record came before the SUCCESS descriptor
    assert rec.status.phase is Phase.SUCCESS and _stored_phase(tmp_path) == "SUCCESS"
    assert [e.reason for e in rec.events] == ["Succeeded"]  # left for the end of the tick, once
    assert merge_patch(rec.written, rec.status.wire())["phase"] == "SUCCESS"


@pytest.mark.parametrize("how", ["deleted", "canceled"])
async def test_a_backup_deleted_or_canceled_while_transferred_is_recorded_is_canceled_not_finished(
    tmp_path: Path, how: str
) -> None:
    api = ApiServer()
    rec = _reconciler(tmp_path, Phase.TRANSFERRING, api, nodes_uploaded=True)
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True

    api.on_status.append(interrupt)  # the user acts while the record is being written
    rec.interrupted = lambda: interrupted

    await rec._act(Decision(Step.RECORD_TRANSFERRED, Phase.TRANSFERRED), {})
    await rec.posted()

    assert rec.status.phase is Phase.TRANSFERRED and _stored_phase(tmp_path) == "STARTED"
    assert ("events", ["Transferred"]) in api.calls and rec.events == []
    assert all((tmp_path / "nightly" / node / "backup.json").exists() for node in NODES)
    # Then it is canceled from the status the tick left, as in any unfinished phase: by the delete
    # handler, or by the next tick, which reads spec.cancel.
    obj = _backup(Phase.TRANSFERRED)
    if how == "deleted":
        after = await BackupReconciler(rec.ctx, obj).delete()
    else:
        obj.spec.cancel = True
        after = await BackupReconciler(rec.ctx, obj).tick()
    assert after.status.phase is Phase.CANCELED
    assert _stored_phase(tmp_path) == "CANCELED"
    assert not any((tmp_path / "nightly" / node).exists() for node in NODES)


async def test_an_operator_restarted_after_recording_transferred_finishes_the_backup(tmp_path: Path) -> None:
    api = ApiServer()
    rec = _reconciler(tmp_path, Phase.TRANSFERRED, api, nodes_uploaded=True)

    decision = rec._decide([NodeView(n, NodePhase.SUCCESS) for n in NODES])
    assert decision.step is Step.FINISH
    await rec._act(decision, {})

    assert rec.status.phase is Phase.SUCCESS and _stored_phase(tmp_path) == "SUCCESS"
    assert [e.reason for e in rec.events] == ["Succeeded"]  # no second Transferred
    assert api.calls == []  # nothing is written in the middle: the end of the tick writes it


async def test_after_a_restart_in_transferred_missing_node_descriptors_fail_it_naming_the_nodes(
    tmp_path: Path,
) -> None:
    api = ApiServer()
    rec = _reconciler(tmp_path, Phase.TRANSFERRED, api, nodes_uploaded=False)

    with pytest.raises(Stop):
        await rec._act(Decision(Step.FINISH, Phase.SUCCESS), {})

    assert rec.status.phase is Phase.FAILED
    assert "node descriptors of ['db-0', 'db-1'] are missing" in (rec.status.error or "")
    assert _stored_phase(tmp_path) == "STARTED"


async def test_a_field_the_middle_write_added_and_the_tick_dropped_is_removed_at_its_end(
    tmp_path: Path,
) -> None:
    api = ApiServer()
    rec = _reconciler(tmp_path, Phase.TRANSFERRING, api, nodes_uploaded=False)
    rec.ctx.discover = _raising(RuntimeError("boom"))

    outcome = await rec.tick()  # crashes: FAILED on record (cleanup pending), then the cleanup is done
    await rec.posted()

    assert outcome.status.phase is Phase.FAILED
    middle = [patch for kind, patch in api.calls if kind == "status"]
    assert len(middle) == 1 and middle[0]["phase"] == "FAILED" and middle[0]["cleanupPending"]
    assert ("events", ["Failed"]) in api.calls
    assert outcome.status.cleanup_pending is None
    assert merge_patch(rec.written, outcome.status.wire())["cleanupPending"] is None
    assert "Failed" not in [e.reason for e in outcome.events]  # posted once, in the middle


def _raising(exc: Exception) -> Any:
    async def discover(namespace: str, name: str) -> ClusterView:
        raise exc

    return discover


async def test_posting_the_events_never_holds_up_the_step_that_follows_the_record(tmp_path: Path) -> None:
    api = ApiServer()
    rec = _reconciler(tmp_path, Phase.TRANSFERRING, api, nodes_uploaded=True)
    events_api_back = asyncio.Event()

    async def slow_post(events: list[Event]) -> None:
        await events_api_back.wait()  # the events API is slow
        await api.post_events(events)

    rec.post_events = slow_post

    await rec._act(Decision(Step.RECORD_TRANSFERRED, Phase.TRANSFERRED), {})

    assert rec.status.phase is Phase.SUCCESS and _stored_phase(tmp_path) == "SUCCESS"
    assert [kind for kind, _ in api.calls] == ["status"]  # the Event is still on its way
    events_api_back.set()
    await rec.posted()
    assert api.calls[-1] == ("events", ["Transferred"])


def _body(*, cancel: bool = False, deleting: bool = False) -> dict[str, Any]:
    metadata = {"deletionTimestamp": "2026-11-30T12:00:00Z"} if deleting else {}
    return {"metadata": metadata, "spec": {"cancel": cancel}}


def test_an_interruption_is_a_deletion_or_a_cancel_the_tick_had_not_read() -> None:
    assert not interrupted(_body(), cancel_read=False)
    assert interrupted(_body(deleting=True), cancel_read=False)
    assert interrupted(_body(deleting=True), cancel_read=True)
    assert interrupted(_body(cancel=True), cancel_read=False)  # set while the tick ran
    # Already read: the tick decided on it (a restore finalizing carries on), so it stops nothing.
    assert not interrupted(_body(cancel=True), cancel_read=True)
