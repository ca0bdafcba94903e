"""The kinds the operator reconciles, and their objects as kopf hands them over, parsed into what
the reconcilers see (``operation_object``), or into a terminal FAILED outcome when they cannot be."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import BaseModel, ValidationError

from shardkeeper import conventions as c
from shardkeeper.api.backup import BackupSpec, BackupStatus
from shardkeeper.api.common import Phase, error_text, utcnow
from shardkeeper.api.restore import RestoreSpec, RestoreStatus
from shardkeeper.api.status import OperationStatusBase
from shardkeeper.coordinator.backup import BackupReconciler
from shardkeeper.coordinator.conditions import conditions_for
from shardkeeper.coordinator.objects import Event, OperationObject, Outcome
from shardkeeper.coordinator.operation import OperationReconciler
from shardkeeper.coordinator.queue import OpRef
from shardkeeper.coordinator.restore import RestoreReconciler


@dataclass(frozen=True)
class Kind:
    name: str
    plural: str
    spec: type[BaseModel]
    status: type[OperationStatusBase]
    reconciler: type[OperationReconciler[Any, Any]]
    index: str


KINDS = (
    Kind(c.BACKUP_KIND, c.BACKUP_PLURAL, BackupSpec, BackupStatus, BackupReconciler, "backups_by_cluster"),
    Kind(
        c.RESTORE_KIND, c.RESTORE_PLURAL, RestoreSpec, RestoreStatus, RestoreReconciler, "restores_by_cluster"
    ),
)


class Unparsable(Exception):
    """The object does not match its schema (it was admitted before a rule existed, or under an
    older CRD); the message names the field."""


def parse_model(model: type[BaseModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join([where, *(str(p) for p in first["loc"])])
        raise Unparsable(f"{field}: {error_text(first)}") from exc


def operation_object(
    kind: Kind,
    body: kopf.Body,
    peers: Sequence[OpRef] = (),
    failing_since: dt.datetime | None = None,
    status: dict[str, Any] | None = None,
) -> OperationObject[Any, Any]:
    """The object as the reconcilers see it (with ``status`` if given, fresher than the body's);
    ``Unparsable`` naming the field if it cannot be."""
    meta = body.get("metadata", {})
    deleting = meta.get("deletionTimestamp")
    return OperationObject(
        kind=kind.name,
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        generation=meta.get("generation"),
        created=meta.get("creationTimestamp", ""),
        spec=parse_model(kind.spec, body.get("spec", {}), "spec"),
        status=parse_model(kind.status, status if status is not None else body.get("status") or {}, "status"),
        peers=peers,
        deleting_since=dt.datetime.fromisoformat(deleting.replace("Z", "+00:00")) if deleting else None,
        failing_since=failing_since,
    )


def unparsable_outcome(kind: Kind, body: kopf.Body, problem: Unparsable) -> Outcome[Any]:
    """FAILED, reason ``InvalidSpec``, for an object that cannot be parsed: a terminal phase at
    once instead of an error every tick (and a queue held behind it)."""
    meta, now = body.get("metadata", {}), utcnow()
    message = f"{kind.name} {meta.get('namespace')}/{meta.get('name')} is invalid: {problem}"
    status = kind.status(phase=Phase.FAILED, error=message, completed_at=now)
    status.observed_generation = meta.get("generation")
    status.conditions = conditions_for(
        [],
        Phase.FAILED,
        error=message,
        failure_reason="InvalidSpec",
        generation=meta.get("generation"),
        now=now,
    )
    return Outcome(status=status, events=[Event("Warning", "Failed", message)])
