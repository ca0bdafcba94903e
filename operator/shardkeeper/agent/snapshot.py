"""A node's snapshot through its workload's hold: ask the workload (the hook) to hold writes and
pause compaction, stage what it lists (``agent.staging``), and end the hold, at once or when the
whole cluster holds (cluster consistency); without a hook, stage what a walk finds. Also which
collections a node holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import structlog

from shardkeeper.agent.hold import Hold
from shardkeeper.agent.hook import HookError, Listing, WorkloadHook
from shardkeeper.agent.staging import (
    SKIPPED_LISTED,
    Frozen,
    SnapshotError,
    check_frozen,
    freeze_hookless,
    freeze_listed,
)
from shardkeeper.api.common import collection_name_problem, utcnow
from shardkeeper.api.hook import HeldWrites
from shardkeeper.archive.tree import shown

log = structlog.get_logger(__name__)

__all__ = [
    "SKIPPED_LISTED",
    "Frozen",
    "SnapshotError",
    "check_frozen",
    "freeze",
    "local_collections",
    "release",
    "resume",
    "stage",
    "unnamable_directories",
]


def local_collections(data_root: Path, state_dir_name: str) -> list[str]:
    """The collections a node holds: the top-level directories of its data root with a valid name
    (``collection_name_problem``), and top-level symbolic links, so that a backup refuses them by
    name instead of leaving them out. Hidden entries and the agent's own directory never count."""
    if not data_root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in os.scandir(data_root)
        if (entry.is_dir(follow_symlinks=False) or entry.is_symlink())
        and entry.name != state_dir_name
        and collection_name_problem(entry.name) is None
    )


def unnamable_directories(data_root: Path) -> list[str]:
    """Top-level directories that cannot be collections although they are not hidden (a name that
    is not UTF-8, or too long), shown escaped: a backup of everything refuses to leave them out."""
    if not data_root.is_dir():
        return []
    return sorted(
        shown(entry.name)
        for entry in os.scandir(data_root)
        if entry.is_dir(follow_symlinks=False)
        and not entry.name.startswith(".")
        and collection_name_problem(entry.name) is not None
    )


async def freeze(
    *,
    op_id: str,
    collections: list[str],
    data_root: Path,
    staging: Path,
    hook: WorkloadHook | None,
    immutable_patterns: tuple[str, ...],
    hold_timeout: float,
    resume_writes: bool = False,
    defer_listing: bool = False,
) -> Frozen:
    """Freezes the trees into ``staging``. With a hook, the workload still holds compaction (and,
    unless ``resume_writes`` and it resumed them, writes) when this returns: the caller ends the hold
    with ``release`` (at once, or when the whole cluster has frozen). With ``defer_listing`` a
    workload that supports it answers before listing: the result is ``deferred`` (writes held,
    nothing staged) until ``resume`` and ``stage``. Raises ``SnapshotError`` or
    ``UnsafeArchiveEntry`` naming the path."""
    await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=False)
    if hook is None:
        try:
            return await asyncio.to_thread(
                freeze_hookless, data_root, staging, collections, immutable_patterns
            )
        except OSError as exc:
            raise SnapshotError(f"could not freeze the file set: {exc}") from exc

    asked_at, asked_mono = utcnow(), time.perf_counter()
    prepare = asyncio.ensure_future(
        hook.prepare(
            op_id,
            collections,
            hold_timeout=hold_timeout,
            resume_writes=resume_writes,
            defer_listing=defer_listing,
        )
    )
    try:
        listed = await asyncio.shield(prepare)
        hold = Hold(listed=listed.held, asked_at=asked_at, asked_mono=asked_mono)
        if listed.count is None:  # deferred: the files come with the answer to resume
            return Frozen(root=staging, entries={}, hold=hold, deferred=True)
        frozen = await asyncio.to_thread(freeze_listed, data_root, staging, listed.files(), collections)
    except BaseException as exc:
        # The workload may be holding writes already; it must not stay paused because of us. If we
        # were interrupted (an abort), its prepare may still be running: a release sent now would
        # arrive first and be lost, so wait for the prepare (bounded by the hook timeout) first.
        with contextlib.suppress(BaseException):
            await asyncio.shield(prepare)
        with contextlib.suppress(HookError):
            await hook.release(op_id)
        if isinstance(exc, (OSError, HookError)):
            raise SnapshotError(f"could not freeze the file set: {exc}") from exc
        raise
    frozen.hold = hold
    return frozen


async def resume(frozen: Frozen, hook: WorkloadHook, op_id: str, node: str) -> Listing:
    """Ends the write hold of a ``deferred`` freeze (compaction stays paused until ``release``) and
    returns the files as they were at the hold, to ``stage``. Raises ``SnapshotError`` (the freeze
    stays ``deferred``: nothing can be staged, so the node's backup must fail); the caller then ends
    the whole hold with ``release``."""
    hold = frozen.hold
    if hold is None or not frozen.deferred:
        raise SnapshotError("nothing to resume: the listing was not deferred")
    sent_at = utcnow()
    try:
        listed = await hook.resume(op_id)
    except HookError as exc:
        hold.released(HeldWrites(), sent_at)
        raise SnapshotError(f"could not resume writes and list the files: {exc}") from exc
    hold.released(listed.held, sent_at)
    if listed.held.expired:
        raise SnapshotError(
            "the workload ended its hold by itself (its hold timeout) before the release: no cut"
        )
    frozen.deferred = False
    pause_ms = hold.pause_ms()
    log.info(
        "snapshot.resumed",
        id=op_id,
        node=node,
        files=listed.count,
        pause_ms=round(pause_ms, 2) if pause_ms is not None else None,
        measured_by=hold.window().measured_by,
    )
    return listed


def stage(frozen: Frozen, data_root: Path, listed: Listing, collections: list[str]) -> None:
    """Stages the files a ``resume`` listed into ``frozen`` (blocking: run it in a thread), reading
    them from ``listed`` (once). The workload still holds compaction, so every listed file is as it
    was at the hold. Raises ``SnapshotError`` or ``UnsafeArchiveEntry`` naming the path."""
    try:
        staged = freeze_listed(data_root, frozen.root, listed.files(), collections)
    except (OSError, HookError) as exc:
        raise SnapshotError(f"could not freeze the file set: {exc}") from exc
    frozen.entries, frozen.skipped = staged.entries, staged.skipped


async def release(frozen: Frozen, hook: WorkloadHook | None, op_id: str, node: str) -> Hold | None:
    """Ends the workload's hold, once; returns it, complete (None without a hook, or if it was
    released already)."""
    hold = frozen.hold
    if hold is None or hook is None or frozen.released:
        return None
    frozen.released = True
    sent_at = utcnow()
    try:
        answer = await hook.release(op_id)
        frozen.ended_by_itself = answer.expired
        hold.released(answer, sent_at)
    except HookError:
        hold.released(HeldWrites(), sent_at)
        raise
    finally:
        pause_ms = hold.pause_ms()
        log.info(
            "snapshot.released",
            id=op_id,
            node=node,
            files=frozen.count,
            pause_ms=round(pause_ms, 2) if pause_ms is not None else None,
            measured_by=hold.window().measured_by,
        )
    return hold
