"""Status shared by Backup and Restore: phase, progress, per-node detail, conditions."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from shardkeeper.api.common import Condition, Model, Phase


class HoldWindow(Model):
    """When a node's workload actually held writes for the snapshot (not when it was asked to)."""

    held_from: dt.datetime = Field(description="When writes were held.")
    held_until: dt.datetime | None = Field(
        default=None, description="When writes resumed; absent while held."
    )
    measured_by: Literal["workload", "agent"] = Field(
        description="workload: the workload's own report. agent: bounds the agent vouches for (writes "
        "were surely held from the prepare's answer until the release was sent)."
    )
    ended_by_itself: bool = Field(
        default=False, description="The workload ended the hold itself (its hold timeout), not the release."
    )


class NodeStatus(Model):
    phase: str = "PENDING"
    source: str | None = Field(default=None, description="Restore: the backup's node restored onto this one.")
    pod_uid: str | None = None
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    bytes_per_second: int | None = Field(default=None, description="Average transfer rate so far.")
    workers: int | None = Field(
        default=None, description="Size of the agent's worker pool (from cpuPercentage)."
    )
    pause_ms: float | None = Field(
        default=None,
        description="How long the workload actually held writes for the snapshot, in milliseconds (as the "
        "workload measured it, if it reports it; else from the prepare request to the release answer).",
    )
    hold: HoldWindow | None = Field(default=None, description="When this node's writes were held.")
    bytes_reused: int = Field(
        default=0, description="Incremental: bytes referenced in earlier backups, not uploaded."
    )
    warnings: list[str] = Field(
        default_factory=list, description="Entries left out of the backup on this node, and why."
    )
    unreachable_since: dt.datetime | None = Field(
        default=None, description="Set while the node's agent does not answer."
    )
    error: str | None = None


class OperationStatusBase(Model):
    phase: Phase | None = None
    backup_id: str | None = None
    path: str | None = Field(default=None, description="Where the backup is, as a URL or path.")
    collections: list[str] = Field(default_factory=list)
    size: str | None = Field(default=None, description="Uncompressed size of the data.")
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    bytes_per_second: int | None = None
    bytes_reused: int = Field(
        default=0, description="Incremental: bytes referenced in earlier backups, not uploaded."
    )
    throughput: str | None = Field(
        default=None, description="Transfer rate of all nodes together, e.g. '85.1 MiB/s'."
    )
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    error: str | None = None
    cleanup_pending: str | None = Field(
        default=None,
        description="What the end of the operation could not clean up in the backend yet (its final "
        "descriptor, partial uploads); retried with backoff until done.",
    )
    cleanup_attempts: int = Field(default=0, description="Attempts at that cleanup so far.")
    cleanup_retry_at: dt.datetime | None = Field(default=None, description="When the cleanup is tried next.")
    backend_unavailable_since: dt.datetime | None = Field(
        default=None, description="Set while the operator cannot reach the backend."
    )
    nodes: dict[str, NodeStatus] = Field(default_factory=dict)
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
