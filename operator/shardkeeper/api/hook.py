"""The workload hook: how an agent asks its database for a consistent set of files.

The workload serves three endpoints next to the agent (usually on localhost in the same pod):

    POST {hook}/prepare   HookPrepare -> HookFileList   hold writes, pause compaction, flush, and list
                                                        the files that make up the collections
    POST {hook}/resume    HookResume -> HookFileList    optional: resume writes (compaction stays
                                                        paused) and list the files held at prepare
    POST {hook}/release   HookRelease                   resume writes and compaction
    POST {hook}/restored  HookRestored                  collections were moved into place: load them

Between ``prepare`` (or ``resume``) and ``release`` the agent hard-links the immutable files into
its staging area and copies the mutable ones.

Two holds, two lengths. *Compaction* (anything that deletes or rewrites listed files) stays paused
from ``prepare`` to ``release``. *Writes* need to be held only while the workload flushes and fixes
its file set: with ``resumeWritesAfterListing`` (node consistency) a workload may resume writes before
it answers, provided every listed file stays as listed until ``release`` (immutable ones are not
deleted; an append-only file gives ``size``, the length that belongs to the snapshot, as RocksDB's
``GetLiveFiles`` does for its MANIFEST). Without it (cluster consistency) writes stay held until
``release``. A workload that ignores the flag holds writes until ``release``: slower, still correct.

Cluster consistency holds every node's writes at once, so each node's hold lasts until the slowest
node has fixed its file set. With ``deferListing`` the agent asks for the shortest hold: a workload
that supports it answers ``prepare`` as soon as writes are held and its file set is fixed, without
``files``; when the whole cluster is held the agent calls ``resume``, and the workload resumes writes
(compaction stays paused until ``release``) and lists the files as they were at the hold, under the
same rule as ``resumeWritesAfterListing``. Listing and staging then happen after writes resume, so
the hold does not grow with the number of files. A workload that ignores the flag answers ``prepare``
with its files, as before, and is never asked to ``resume``.

A workload reports when writes were actually held (``heldFrom``/``heldUntil``, its wall clock, and
``heldMs``, measured on a monotonic clock); the agent otherwise records its own conservative bounds.
"""

from __future__ import annotations

import datetime as dt

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from shardkeeper.api.common import Model


class HookPrepare(Model):
    id: str
    collections: list[str]
    hold_timeout_seconds: float = Field(
        description="If no release arrives within this time, the workload must release by itself."
    )
    resume_writes_after_listing: bool = Field(
        default=False,
        description="The workload may resume writes once its file set is fixed (compaction stays paused "
        "until release); false: hold writes until release.",
    )
    defer_listing: bool = Field(
        default=False,
        description="The workload may answer once writes are held and its file set is fixed, without "
        "files; it lists them in the answer to resume. Ignoring it (answering with files) is correct.",
    )


class HeldWrites(Model):
    """When the workload held writes, by its own clocks; every field optional (older workloads)."""

    held_from: dt.datetime | None = Field(default=None, description="When writes were held (UTC).")
    held_until: dt.datetime | None = Field(
        default=None, description="When writes resumed (UTC); absent while they are still held."
    )
    held_ms: float | None = Field(
        default=None, ge=0, description="How long writes were held, in milliseconds (monotonic clock)."
    )
    expired: bool = Field(
        default=False, description="Release: the hold had already ended by itself (holdTimeoutSeconds)."
    )

    def hold_only(self) -> HeldWrites:
        """These fields alone: what a hold keeps of an answer that also lists files (a million of
        them, otherwise kept for the whole backup)."""
        return HeldWrites.model_validate(self.model_dump(include=set(HeldWrites.model_fields)))


@dataclass(frozen=True, slots=True, config=ConfigDict(extra="ignore"))
class HookFile:
    """One listed file. A dataclass with slots, not a model: a workload may list a million files,
    and a model takes ~550 bytes each where this takes ~120 (``benchmarks/README.md``, goal 4). Its
    field names are the same in camelCase."""

    path: str = Field(description="Relative to the data root; the first segment is the collection.")
    immutable: bool = Field(description="True if the workload will never modify this file in place.")
    size: int | None = Field(
        default=None,
        ge=0,
        description="An append-only file: only its first size bytes belong to the snapshot (copied, "
        "not linked). Absent: the whole file.",
    )


class HookFileList(HeldWrites):
    files: list[HookFile] | None = Field(
        default=None,
        description="The snapshot's files. Absent only in an answer to a prepare with deferListing: "
        "the files come with the answer to resume.",
    )


class HookResume(Model):
    id: str


class HookRelease(Model):
    id: str


class HookRestored(Model):
    id: str
    collections: list[str]
