"""Status shared by Backup and Restore: phase, progress, per-node detail, conditions."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from shardkeeper.api.common import Condition, Model, Phase, listed

COLLECTIONS_LISTED = 100
"""How many collection names a status lists (``collections``); ``collectionCount`` counts them all."""
WARNINGS_LISTED = 10
"""How many warnings a node's status lists; a last line counts the rest (the node's descriptor in
the backup lists up to 100)."""
WARNING_MAX_BYTES = 512
"""The longest warning a status carries, in UTF-8 bytes (cut in the middle beyond)."""
MESSAGE_MAX_BYTES = 4096
"""The longest error a status carries, in UTF-8 bytes (cut in the middle beyond)."""


class HoldWindow(Model):
    """When a node's workload actually held writes for the snapshot (not when it was asked to)."""

    held_from: dt.datetime = Field(description="When writes were held (RFC 3339).")
    held_until: dt.datetime | None = Field(
        default=None, description="When writes resumed (RFC 3339); absent while held."
    )
    measured_by: Literal["workload", "agent"] = Field(
        description="workload: the workload's own report. agent: bounds the agent vouches for (writes "
        "were surely held from the prepare's answer until the release was sent)."
    )
    ended_by_itself: bool = Field(
        default=False, description="The workload ended the hold itself (its hold timeout), not the release."
    )


class NodeStatus(Model):
    """One node's part of the operation."""

    phase: str = Field(
        default="PENDING",
        description="The node's own phase: PENDING, then as the agent reports it (e.g. TRANSFERRING, "
        "SUCCESS, FAILED).",
    )
    source: str | None = Field(default=None, description="Restore: the backup's node restored onto this one.")
    pod_uid: str | None = Field(
        default=None,
        description="UID of the pod the operation started on; another UID means it was replaced.",
    )
    bytes_done: int = Field(default=0, description="Bytes of file data transferred so far (uncompressed).")
    bytes_total: int = Field(default=0, description="Bytes of file data to transfer (uncompressed).")
    files_done: int = Field(default=0, description="Files transferred so far.")
    files_total: int = Field(default=0, description="Files to transfer.")
    bytes_per_second: int | None = Field(
        default=None, description="Average transfer rate so far, in bytes per second (uncompressed)."
    )
    workers: int | None = Field(
        default=None, description="Size of the agent's worker pool (from cpuPercentage)."
    )
    pause_ms: float | None = Field(
        default=None,
        description="Backup: how long the workload actually held writes for the snapshot, in milliseconds "
        "(as the workload measured it, if it reports it; else from the prepare request to the release "
        "answer).",
    )
    hold: HoldWindow | None = Field(default=None, description="When this node's writes were held.")
    bytes_reused: int = Field(
        default=0, description="Incremental backup: bytes referenced in earlier backups, not uploaded."
    )
    warnings: list[str] = Field(
        default_factory=list,
        description=f"Entries left out of the backup on this node, and why: the first {WARNINGS_LISTED}, "
        "then a line counting the rest (the node's descriptor in the backup lists up to 100).",
    )
    unreachable_since: dt.datetime | None = Field(
        default=None, description="Set while the node's agent does not answer (RFC 3339)."
    )
    error: str | None = Field(default=None, description="Why the node failed, as its agent reported it.")


class OperationStatusBase(Model):
    phase: Phase | None = None
    backup_id: str | None = Field(default=None, description="Id of the backup in the backend.")
    path: str | None = Field(default=None, description="Where the backup is, as a URL or path.")
    collections: list[str] = Field(
        default_factory=list,
        description=f"Names of the collections the operation covers, sorted: the first "
        f"{COLLECTIONS_LISTED} (collectionCount has how many there are; the backup's descriptor lists "
        "them all), so the object stays small at any count.",
    )
    collection_count: int | None = Field(
        default=None, description="How many collections the operation covers."
    )
    size: str | None = Field(default=None, description="Uncompressed size of the data, e.g. '1.2 GiB'.")
    progress: str | None = Field(
        default=None, description="Share of the bytes transferred so far, e.g. '42%'; '100%' once done."
    )
    duration: str | None = Field(
        default=None,
        description="Time from startedAt to completedAt, e.g. '1m5s'; set once finished.",
    )
    bytes_done: int = Field(
        default=0, description="Bytes of file data transferred so far, all nodes (uncompressed)."
    )
    bytes_total: int = Field(
        default=0, description="Bytes of file data to transfer, all nodes (uncompressed)."
    )
    files_done: int = Field(default=0, description="Files transferred so far, all nodes.")
    files_total: int = Field(default=0, description="Files to transfer, all nodes.")
    bytes_per_second: int | None = Field(
        default=None, description="Transfer rate of all nodes together, in bytes per second."
    )
    bytes_reused: int = Field(
        default=0, description="Incremental backup: bytes referenced in earlier backups, not uploaded."
    )
    throughput: str | None = Field(
        default=None, description="Transfer rate of all nodes together, e.g. '85.1 MiB/s'."
    )
    started_at: dt.datetime | None = Field(
        default=None, description="When the operation left QUEUED and started (RFC 3339)."
    )
    completed_at: dt.datetime | None = Field(
        default=None, description="When the operation reached SUCCESS, FAILED or CANCELED (RFC 3339)."
    )
    error: str | None = Field(
        default=None,
        description="Why the operation failed or was canceled, naming the node, field or object.",
    )
    cleanup_pending: str | None = Field(
        default=None,
        description="What the end of the operation could not clean up in the backend yet (its final "
        "descriptor, partial uploads); retried with backoff until done.",
    )
    cleanup_attempts: int = Field(default=0, description="Attempts at that cleanup so far.")
    cleanup_retry_at: dt.datetime | None = Field(
        default=None, description="When the cleanup is tried next (RFC 3339)."
    )
    backend_unavailable_since: dt.datetime | None = Field(
        default=None, description="Set while the operator cannot reach the backend (RFC 3339)."
    )
    nodes: dict[str, NodeStatus] = Field(
        default_factory=dict, description="Per node (pod name): its phase, progress, pause and warnings."
    )
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation the operator last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Finished: True once SUCCESS, FAILED or CANCELED (wait on this one). Complete: True on "
        "SUCCESS only. Failed: True on FAILED or CANCELED, its reason says why. kstatus (Flux, Argo CD): "
        "Ready (True on SUCCESS), Reconciling (True while running), Stalled (True on FAILED or CANCELED).",
    )

    def list_collections(self, names: list[str]) -> None:
        """Records the operation's collections (sorted names): all of them in collectionCount, the
        first ``COLLECTIONS_LISTED`` in collections. A status is one etcd object (at most 1.5 MiB
        with everything else on it), so it holds summaries, never a list as long as the data."""
        self.collections = names[:COLLECTIONS_LISTED]
        self.collection_count = len(names) if names else None

    def collections_complete(self) -> bool:
        """Whether collections lists every collection (none was left out for length)."""
        return len(self.collections) == (self.collection_count or 0)

    def describe_collections(self) -> str:
        """The collections in a sentence, for messages and Events (whose note is at most 1 KiB):
        "2 collections ['a', 'b']", or "10000 collections ['a', ..., ... and 9990 more]"."""
        count = self.collection_count or len(self.collections)
        noun = "collection" if count == 1 else "collections"
        return f"{count} {noun} {listed(self.collections, total=count)}"

    def summarize(self) -> None:
        """Derives the summary fields (progress, duration) from the fields they summarize; ``wire``
        calls it, so they never disagree with them."""
        if self.collection_count is None and self.collections:  # a status written before the count
            self.collection_count = len(self.collections)
        if self.phase is Phase.SUCCESS:
            self.progress = "100%"
        elif self.bytes_total > 0:
            self.progress = f"{min(100, self.bytes_done * 100 // self.bytes_total)}%"
        else:
            self.progress = None
        if self.started_at is not None and self.completed_at is not None:
            self.duration = format_duration((self.completed_at - self.started_at).total_seconds())
        else:
            self.duration = None

    def wire(self) -> dict[str, object]:
        self.summarize()
        return super().wire()


def format_duration(seconds: float) -> str:
    """Seconds as kubectl shows ages: '45s', '2m5s', '1h3m', '2d4h' (whole units, rounded down)."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"
