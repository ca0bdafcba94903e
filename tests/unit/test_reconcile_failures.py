"""Any exception while parsing an object or in a tick ends the operation FAILED with a reason; a
transient one only after its deadline. Real reconcilers and the real filesystem backend; the
cluster's discovery is the one seam replaced (it raises what the test needs)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import kopf
import pytest
from pydantic import SecretStr

from shardkeeper.api.backup import BackupSpec, BackupStatus
from shardkeeper.api.common import Phase, utcnow
from shardkeeper.coordinator.backup import BackupReconciler
from shardkeeper.coordinator.context import OperatorContext
from shardkeeper.coordinator.kinds import KINDS, Unparsable, operation_object, unparsable_outcome
from shardkeeper.coordinator.kube import ClusterView, KubernetesUnavailable
from shardkeeper.coordinator.objects import OperationObject
from shardkeeper.coordinator.settings import OperatorSettings
from shardkeeper.storage.filesystem import FilesystemStorage


def _ctx(tmp_path: Path, discover_raises: Exception) -> OperatorContext:
    async def discover(namespace: str, name: str) -> ClusterView:
        raise discover_raises

    return OperatorContext(
        settings=OperatorSettings(agent_token=SecretStr("t" * 24)),
        discover=discover,
        open_storage=lambda backend, path=None: FilesystemStorage(root=tmp_path, prefix=path or ""),
    )


def _backup(name: str = "nightly", failing_since: dt.datetime | None = None) -> OperationObject[Any, Any]:
    return OperationObject(
        kind="Backup",
        name=name,
        namespace="ns",
        uid="uid-1",
        generation=1,
        created="2026-11-30T00:00:00Z",
        spec=BackupSpec.model_validate({"backend": "filesystem", "cluster": "sampledb"}),
        status=BackupStatus(),
        failing_since=failing_since,
    )


def _reason(status: BackupStatus) -> str:
    return next(c.reason for c in status.conditions if c.type == "Failed")


@pytest.mark.parametrize("name", ["nightly.2026-11-30", "n" * 129])
async def test_a_name_that_is_not_a_backup_id_fails_invalid_spec_naming_the_field(
    tmp_path: Path, name: str
) -> None:
    outcome = await BackupReconciler(_ctx(tmp_path, AssertionError("not reached")), _backup(name)).tick()
    assert outcome.status.phase is Phase.FAILED
    assert _reason(outcome.status) == "InvalidSpec"
    assert "metadata.name" in (outcome.status.error or "") and "spec.id" in (outcome.status.error or "")
    assert [e.reason for e in outcome.events] == ["Failed"]


async def test_the_cleanup_after_the_end_never_posts_a_second_outcome(tmp_path: Path) -> None:
    from shardkeeper.errors import BackendNotConfigured

    def unconfigured(backend: Any, path: Any = None) -> Any:
        raise BackendNotConfigured('backend "filesystem" is not enabled')

    ctx = _ctx(tmp_path, AssertionError("not reached"))
    ctx.open_storage = unconfigured
    outcome = await BackupReconciler(ctx, _backup("nightly.2026-11-30")).tick()
    assert _reason(outcome.status) == "InvalidSpec"
    assert [e.reason for e in outcome.events] == ["Failed"]


async def test_an_unexpected_exception_in_a_tick_fails_the_operation_naming_it(tmp_path: Path) -> None:
    outcome = await BackupReconciler(_ctx(tmp_path, RuntimeError("boom")), _backup()).tick()
    assert outcome.status.phase is Phase.FAILED
    assert _reason(outcome.status) == "ReconcileError"
    assert "RuntimeError: boom" in (outcome.status.error or "")
    assert "Backup ns/nightly" in (outcome.status.error or "")


async def test_a_transient_error_is_retried_within_its_deadline_then_fails(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, KubernetesUnavailable("apiserver away"))
    with pytest.raises(KubernetesUnavailable):
        await BackupReconciler(ctx, _backup()).tick()
    recently = utcnow() - dt.timedelta(seconds=10)
    with pytest.raises(KubernetesUnavailable):
        await BackupReconciler(ctx, _backup(failing_since=recently)).tick()

    long_ago = utcnow() - dt.timedelta(seconds=ctx.settings.transient_error_seconds + 1)
    outcome = await BackupReconciler(ctx, _backup(failing_since=long_ago)).tick()
    assert outcome.status.phase is Phase.FAILED
    assert _reason(outcome.status) == "TransientErrorLimit"
    assert "apiserver away" in (outcome.status.error or "")


def test_an_object_that_does_not_parse_ends_failed_naming_the_field() -> None:
    body = kopf.Body(
        {
            "metadata": {"name": "b", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {"backend": "filesystem", "cluster": "Not_A_StatefulSet"},
        }
    )
    with pytest.raises(Unparsable) as raised:
        operation_object(KINDS[0], body)
    outcome = unparsable_outcome(KINDS[0], body, raised.value)
    assert outcome.status.phase is Phase.FAILED
    assert "spec.cluster" in (outcome.status.error or "")
    assert next(c.reason for c in outcome.status.conditions if c.type == "Failed") == "InvalidSpec"
    assert [e.reason for e in outcome.events] == ["Failed"]


def test_only_transient_errors_within_their_limit_are_retried() -> None:
    from shardkeeper.coordinator.objects import retry_later
    from shardkeeper.errors import AgentUnreachable

    assert retry_later(KubernetesUnavailable("away"), failing_for=10, limit=120)
    assert retry_later(AgentUnreachable("silent"), failing_for=0, limit=120)
    assert not retry_later(KubernetesUnavailable("away"), failing_for=121, limit=120)
    assert not retry_later(RuntimeError("bug"), failing_for=0, limit=120)
    assert not retry_later(KeyError("x"), failing_for=0, limit=120)
