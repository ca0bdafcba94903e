"""The agent protocol: small JSON messages between the operator and each node's agent.

Data never travels this way; agents stream it to and from the backend themselves.
Every endpoint except ``/healthz`` requires ``Authorization: Bearer <token>``.

    GET  /healthz                        liveness, no auth
    GET  /v1/node                        NodeInfo
    PUT  /v1/operations/{id}             PrepareBackup -> OperationStatus (202; idempotent; 409 if busy)
    GET  /v1/operations/{id}             OperationStatus (404 if unknown); StatusQuery: a long poll
    POST /v1/operations/{id}/release     -> OperationStatus   (cluster consistency: end the write hold)
    POST /v1/operations/{id}/commit      -> OperationStatus
    POST /v1/operations/{id}/finalize    -> OperationStatus   (restore: move verified collections into place)
    POST /v1/operations/{id}/complete    -> OperationStatus   (restore: tell the workload; done)
    POST /v1/operations/{id}/abort       AbortRequest -> OperationStatus
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from shardkeeper.api.backup import (
    CHUNK_SIZE_DEFAULT_MB,
    CHUNK_SIZE_MAX_MB,
    CHUNK_SIZE_MIN_MB,
    CPU_PERCENTAGE_DEFAULT,
    CpuPercentage,
    StoragePath,
)
from shardkeeper.api.common import (
    Backend,
    BackupId,
    CompressionLevel,
    Consistency,
    Model,
)
from shardkeeper.api.status import HoldWindow

#: Bounds shared with the CR (``api.backup``): a token holder can ask no more than a Backup can.
#: A top-level directory of a node's data root, as agents list them: one path segment, not hidden.
CollectionName = Annotated[str, Field(pattern=r"^[^./\x00][^/\x00]*$", max_length=255)]
Uid = Annotated[str, Field(min_length=1, max_length=128)]
PodName = Annotated[str, Field(min_length=1, max_length=253)]


class NodePhase(StrEnum):
    """One node's part in an operation, as its agent reports it."""

    PREPARING = "PREPARING"
    PREPARED = "PREPARED"
    TRANSFERRING = "TRANSFERRING"
    TRANSFERRED = "TRANSFERRED"
    FINALIZING = "FINALIZING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in (NodePhase.SUCCESS, NodePhase.FAILED, NodePhase.CANCELED)


class StoreProbe(Model):
    """An object the operator wrote; an agent that can read it back shares the operator's store."""

    key: str
    nonce: str


class PrepareBackup(Model):
    kind: Literal["backup"] = "backup"
    id: BackupId
    uid: Uid = Field(
        description="Identifies the request's origin (the CR's uid); a retry with the same uid is a no-op."
    )
    node: PodName = Field(description="The pod name the operator believes this agent serves.")
    backend: Backend
    path: StoragePath | None = None
    collections: list[CollectionName] = Field(
        max_length=100_000, description="The cluster-wide selection; each agent backs up those it holds."
    )
    compression_level: CompressionLevel = CompressionLevel.DEFAULT
    chunk_size_mb: int = Field(default=CHUNK_SIZE_DEFAULT_MB, ge=CHUNK_SIZE_MIN_MB, le=CHUNK_SIZE_MAX_MB)
    cpu_percentage: CpuPercentage = CPU_PERCENTAGE_DEFAULT
    consistency: Consistency = Field(
        default=Consistency.NODE,
        description="cluster: keep the workload's write hold after freezing, until /release or commit.",
    )
    reservation_seconds: float = Field(
        default=60.0, gt=0, description="The agent aborts by itself if no commit arrives within this time."
    )
    probe: StoreProbe | None = None
    incremental_base: BackupId | None = Field(
        default=None, description="Reuse what this backup (same store and codec) already holds for this node."
    )


class PrepareRestore(Model):
    kind: Literal["restore"] = "restore"
    id: BackupId = Field(description="The operation id on the node (one per Restore).")
    uid: Uid
    node: PodName = Field(description="The pod name the operator believes this agent serves.")
    source_node: PodName = Field(description="The node of the backup whose data this node receives.")
    backup_id: BackupId
    backend: Backend
    path: StoragePath | None = None
    collections: list[CollectionName] = Field(
        max_length=100_000, description="The cluster-wide selection; each node restores those it has."
    )
    cpu_percentage: CpuPercentage = CPU_PERCENTAGE_DEFAULT
    reservation_seconds: float = Field(default=60.0, gt=0)


#: The body of ``PUT /v1/operations/{id}``, by its ``kind``.
Prepare = Annotated[PrepareBackup | PrepareRestore, Field(discriminator="kind")]


#: The longest an agent holds a status request open (``StatusQuery.timeout_seconds``).
STATUS_WAIT_MAX_SECONDS = 10.0


class StatusQuery(Model):
    """The query of ``GET /v1/operations/{id}``. With ``waitWhile``, a long poll: the agent answers
    once the operation's phase is no longer that one, or after ``timeoutSeconds`` (then with that
    phase still). The coordinator learns that a node prepared within a round trip, not at its next
    poll, so that a cluster-wide hold is released sooner. An agent without it answers at once."""

    wait_while: NodePhase | None = None
    timeout_seconds: float = Field(default=1.0, gt=0, le=STATUS_WAIT_MAX_SECONDS, allow_inf_nan=False)


class AbortRequest(Model):
    reason: str = Field(default="aborted by the coordinator", max_length=32768)


class OperationStatus(Model):
    id: str
    uid: str
    kind: Literal["backup", "restore"]
    node: str
    phase: NodePhase
    error: str | None = None
    collections: list[str] = Field(default_factory=list)
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    pause_ms: float | None = None
    held: bool = Field(default=False, description="The workload is holding writes for this operation.")
    hold: HoldWindow | None = Field(default=None, description="When the workload held writes.")
    warnings: list[str] = Field(
        default_factory=list, description="Entries left out of a backup and why (sockets, files gone)."
    )
    workers: int | None = None
    bytes_per_second: int | None = None
    bytes_reused: int = Field(
        default=0, description="Incremental: bytes referenced in the base, not uploaded."
    )
    started_at: dt.datetime
    updated_at: dt.datetime


class NodeInfo(Model):
    node: str
    collections: list[str]
    unnamed: list[str] = Field(
        default_factory=list,
        description="Top-level directories that cannot be collections (a name that is not UTF-8), escaped.",
    )
    free_bytes: int = Field(description="Bytes a restore may use on the data volume.")
    operation: OperationStatus | None = Field(
        default=None, description="The operation holding this node, if any."
    )


class ErrorBody(Model):
    error: str
    holder: OperationStatus | None = Field(
        default=None, description="With 409: the operation that holds the node, so callers can tell who."
    )
