"""A node's part in a backup: check, freeze, then pack and upload, then describe what was uploaded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from typing import Protocol

import structlog

from shardkeeper import conventions as c
from shardkeeper.agent import metrics
from shardkeeper.agent.hook import Listing, WorkloadHook
from shardkeeper.agent.memory import release_free_memory
from shardkeeper.agent.operations import Operation, in_thread
from shardkeeper.agent.settings import AgentSettings
from shardkeeper.agent.snapshot import (
    SKIPPED_LISTED,
    Frozen,
    SnapshotError,
    check_frozen,
    freeze,
    local_collections,
    release,
    resume,
    stage,
)
from shardkeeper.agent.throttle import Throttle
from shardkeeper.api.agent import NodePhase, PrepareBackup
from shardkeeper.api.common import Consistency, Phase, utcnow
from shardkeeper.api.descriptors import NodeDescriptor, Skipped
from shardkeeper.archive.codecs import CODEC_FOR_LEVEL
from shardkeeper.archive.reuse import Reuse
from shardkeeper.archive.source import SourceTree
from shardkeeper.archive.transfer import upload
from shardkeeper.archive.tree import shown
from shardkeeper.conventions import DESCRIPTOR_FORMAT_VERSION, INCREMENTAL_FORMAT_VERSION
from shardkeeper.errors import ObjectNotFound, ShardkeeperError, SpecError, StorageError
from shardkeeper.storage import BackupLayout, Storage
from shardkeeper.storage.repository import BackupRepository, EntrySpool

log = structlog.get_logger(__name__)
MB = 1_000_000
MiB = 1 << 20
#: What a restore of a node holds in memory: the agent's own, and per entry the entry in columns
#: (``archive.described``) and ``check_tree``'s index of paths while it runs, each path's bytes
#: twice; a link's target once more, in a dict. Measured (``benchmarks/README.md``, "What a
#: restore holds, by the length of its paths"): ~120 B plus 2 B per path byte for a file or a
#: directory, and for a link ~150 B plus 1 B per target byte more; a real agent: 100.5 MB at
#: 100,101 entries, 217.4 MB at 1,001,001 of 20-byte paths. The constants carry a margin (the
#: estimate 1.05-1.13 times the measurement). A backup holds about as much, in other shapes
#: (183-227 MB for that million, incremental included): it alone would not show when a node
#: outgrows what its restore fits in.
RESTORE_BASE_BYTES = 100 * MiB
RESTORE_BYTES_PER_ENTRY = 140
RESTORE_BYTES_PER_PATH_BYTE = 2
RESTORE_BYTES_PER_LINK = 150
RESTORE_BYTES_PER_TARGET_BYTE = 1


def restore_memory_needed(entries: int, path_bytes: int, links: int, target_bytes: int) -> int:
    """Bytes a restore of a node needs: ``entries`` entries whose paths take ``path_bytes`` bytes
    (UTF-8) in all, ``links`` of them links whose targets take ``target_bytes``."""
    return (
        RESTORE_BASE_BYTES
        + entries * RESTORE_BYTES_PER_ENTRY
        + path_bytes * RESTORE_BYTES_PER_PATH_BYTE
        + links * RESTORE_BYTES_PER_LINK
        + target_bytes * RESTORE_BYTES_PER_TARGET_BYTE
    )


class EntryCounts(Protocol):
    """What ``restore_memory_needed`` takes, as ``EntrySpool`` counts it."""

    entries: int
    path_bytes: int
    links: int
    target_bytes: int


def restore_memory_warning(spool: EntryCounts, limit: int | None) -> str | None:
    """The warning a backup whose node descriptor is ``spool`` gets when its restore would need
    more memory than ``limit`` bytes (the agent's container limit; None: no limit), else None."""
    needed = restore_memory_needed(spool.entries, spool.path_bytes, spool.links, spool.target_bytes)
    if limit is None or needed <= limit:
        return None
    return (
        f"a restore of this node needs about {-(-needed // MiB)} MiB of memory ({spool.entries} "
        f"entries, {-(-spool.path_bytes // MiB)} MiB of paths: it holds every entry of the node), "
        f"above this agent's limit of {limit // MiB} MiB: raise agent.resources.limits.memory "
        "before you need the restore"
    )


def worker_count(cores: int, cpu_percentage: int) -> int:
    """The seed's rule: max(1, cores * percentage / 100), rounded down."""
    return max(1, cores * cpu_percentage // 100)


class BackupJob:
    def __init__(
        self,
        settings: AgentSettings,
        request: PrepareBackup,
        storage: Storage,
        hook: WorkloadHook | None,
        *,
        reservation: float,
    ) -> None:
        self.settings = settings
        self.request = request
        self.storage = storage
        self.hook = hook
        self.layout = BackupLayout(request.id)
        self.staging = settings.staging_dir / request.id
        self.frozen: Frozen | None = None
        #: Incremental: the base holds this node (checked at prepare; its files are read at the
        #: transfer, against the listing). False: a full copy.
        self.base_found = False
        #: The hold may last until the reservation expires, never longer.
        self.reservation = reservation
        self.started_at = utcnow()
        #: Only an operation that began uploading may delete what is under its node's prefix.
        self.uploading = False
        #: The resume of a deferred listing (its files), once asked: later releases and the
        #: transfer await it.
        self._resuming: asyncio.Future[Listing] | None = None

    # --- phase 1 -------------------------------------------------------------------------------

    async def prepare(self, op: Operation) -> None:
        req = self.request
        if req.node != self.settings.node:
            raise SpecError(f'this agent serves node "{self.settings.node}", not "{req.node}"')
        held = set(local_collections(self.settings.data_root, c.AGENT_STATE_DIR))
        op.collections = [name for name in req.collections if name in held]
        await asyncio.to_thread(self._check_store)
        if req.incremental_base:
            self.base_found = await asyncio.to_thread(self._check_base, req.incremental_base)
        self.frozen = await freeze(
            op_id=req.id,
            collections=op.collections,
            data_root=self.settings.data_root,
            staging=self.staging,
            hook=self.hook,
            immutable_patterns=self.settings.immutable_patterns,
            hold_timeout=self.reservation,
            # Node consistency: writes need no hold beyond the workload's flush and listing.
            resume_writes=req.consistency is Consistency.NODE,
            # Cluster consistency: writes stay held until every node is; the listing and staging
            # wait until then too, if the workload can, so the hold does not grow with the files.
            defer_listing=req.consistency is Consistency.CLUSTER,
        )
        op.workers = worker_count(self.settings.cores, req.cpu_percentage)
        hold = self.frozen.hold
        if hold is not None:
            op.hold = hold.window()
        if self.frozen.deferred:
            op.held = True  # until the coordinator sees every node held and calls /release
            return
        self._staged(op)
        if req.consistency is Consistency.CLUSTER and hold is not None and not hold.writes_resumed:
            op.held = True  # until the coordinator sees every node frozen and calls /release
        else:
            await self._end_staged_hold(op)
        await asyncio.to_thread(check_frozen, self.frozen)

    def _staged(self, op: Operation) -> None:
        frozen = self.frozen
        assert frozen is not None
        op.bytes_total, op.files_total = frozen.bytes, frozen.count
        op.warnings = [f"{shown(p)}: {why}" for p, why in frozen.skipped[:SKIPPED_LISTED]]

    async def release(self, op: Operation) -> None:
        """The coordinator's release (cluster consistency: every node holds writes): writes resume.
        After a deferred listing only writes do, once (a repeated release waits for the same
        resume, and raises its failure again), and the files are staged when the transfer begins
        (compaction stays paused until then); otherwise the whole hold ends here."""
        frozen = self.frozen
        if frozen is None:
            return
        if self._resuming is None and not frozen.deferred:
            await self._end_hold(op)
            return
        await self._resumed(op, frozen)

    async def _resumed(self, op: Operation, frozen: Frozen) -> Listing:
        """The files of the deferred listing: resumes writes the first time, then the same answer
        (or failure) every time. Staging reads the files (once: ``stage``): only the transfer does."""
        if self._resuming is None:
            self._resuming = asyncio.ensure_future(self._resume(op, frozen))
        return await asyncio.shield(self._resuming)

    async def _resume(self, op: Operation, frozen: Frozen) -> Listing:
        assert self.hook is not None
        try:
            listed = await resume(frozen, self.hook, op.id, op.node)
        finally:
            op.held = False
            if frozen.hold is not None:
                op.hold = frozen.hold.window()
        self._record_pause(op)
        return listed

    async def _stage_pending(self, op: Operation) -> None:
        """Stages what the resume listed, then ends the compaction hold, then checks the tree as a
        restore would (``check_frozen``). Without a successful resume nothing was listed: raises."""
        frozen = self.frozen
        assert frozen is not None
        if self._resuming is None and not frozen.deferred:
            return  # staged at prepare
        listed = await self._resumed(op, frozen)  # resumed now if the release never came
        collections = op.collections
        await in_thread(op, lambda: stage(frozen, self.settings.data_root, listed, collections))
        self._staged(op)
        await self._end_staged_hold(op)
        await asyncio.to_thread(check_frozen, frozen)

    async def _end_staged_hold(self, op: Operation) -> None:
        """Ends the hold that kept the files as listed while they were staged (writes had resumed):
        if the workload says it had ended it by itself (its hold timeout) before, a listed file may
        have changed or gone before it was staged, so the node fails."""
        await self._end_hold(op)
        if self.frozen is not None and self.frozen.ended_by_itself:
            raise SnapshotError(
                "the workload ended its hold by itself (its hold timeout) before the files were "
                "staged: they may have changed; a longer hold timeout (the reservation) would avoid it"
            )

    async def _end_hold(self, op: Operation) -> None:
        """Ends the workload's whole hold (writes, if still held, and compaction), once."""
        if self.frozen is None:
            return
        try:
            hold = await release(self.frozen, self.hook, op.id, op.node)
        finally:
            op.held = False
            if self.frozen.hold is not None:
                op.hold = self.frozen.hold.window()
        if hold is not None:
            self._record_pause(op)

    def _record_pause(self, op: Operation) -> None:
        """The write pause, once it is known: on the operation and in the metric (once)."""
        hold = self.frozen.hold if self.frozen is not None else None
        pause_ms = hold.pause_ms() if hold is not None else None
        if pause_ms is not None and op.pause_ms is None:
            op.pause_ms = pause_ms
            metrics.WRITE_PAUSE.labels(op.node).observe(pause_ms / 1000)

    def _check_base(self, base_id: str) -> bool:
        """Whether the base backup holds this node (a node it lacks gets a full copy); raises
        ``SpecError`` if it cannot be a base (not SUCCESS, another codec), ``CorruptDescriptor`` if
        an entry is invalid: here, before the workload holds its writes, not at the transfer (a
        million entries: ~10 s, streamed)."""
        base = BackupRepository(self.storage).node_head(base_id, self.request.node, validate_entries=True)
        if base is None:
            log.info("backup.no_base_for_node", id=self.request.id, base=base_id, node=self.request.node)
            return False
        self._check_base_head(base_id, base)
        return True

    def _check_base_head(self, base_id: str, base: NodeDescriptor) -> None:
        if base.status is not Phase.SUCCESS:
            raise SpecError(f'base backup "{base_id}" is {base.status} on node "{self.request.node}"')
        codec = CODEC_FOR_LEVEL[self.request.compression_level].codec
        if base.codec is not codec:
            raise SpecError(f'base backup "{base_id}" was written as {base.codec}, this one would be {codec}')

    def _read_base(self, trees: dict[str, SourceTree]) -> Reuse | None:
        """The base's files at the paths of ``trees`` (this backup's listing), read as a stream."""
        base_id = self.request.incremental_base
        if not self.base_found or base_id is None:
            return None
        found = BackupRepository(self.storage).node_entries(
            base_id, self.request.node, lambda: Reuse(base_id, trees)
        )
        if found is None:
            raise SpecError(f'base backup "{base_id}" no longer holds node "{self.request.node}"')
        head, reuse = found
        self._check_base_head(base_id, head)
        reuse.finish(head)
        release_free_memory()  # what reading the base freed
        return reuse

    def _check_store(self) -> None:
        probe = self.request.probe
        if self.storage.exists(self.layout.node_descriptor(self.request.node)):
            raise SpecError(
                f'backup "{self.request.id}" already exists for node "{self.request.node}" at '
                f"{self.storage.url(self.layout.node_dir(self.request.node))}"
            )
        if probe is not None:
            try:
                seen = self.storage.get_bytes(probe.key)
            except ObjectNotFound:
                seen = None
            if seen != probe.nonce.encode():
                raise StorageError(
                    f"this agent cannot read the operator's probe at {self.storage.url(probe.key)}: "
                    f"the operator and every agent must see the same {self.request.backend} store"
                )
        if os.environ.get("BACKUP_SKIP_ACCESS_CHECK", "").lower() not in ("1", "true", "yes"):
            key = self.layout.probe(f"access-{self.request.node}")
            self.storage.put_bytes(key, b"shardkeeper access check")
            self.storage.delete(key)

    # --- phase 2 -------------------------------------------------------------------------------

    async def transfer(self, op: Operation) -> None:
        await self._stage_pending(op)
        await self._end_hold(op)
        await asyncio.to_thread(release_free_memory)  # what staging freed (out of every hold)
        self.uploading = True
        with EntrySpool(self.staging) as spool:
            descriptor = await in_thread(op, lambda: self._upload(op, spool))
            op.set_phase(NodePhase.TRANSFERRED)
            repository = BackupRepository(self.storage)
            await in_thread(op, lambda: repository.write_node_spooled(descriptor, spool))
        warning = restore_memory_warning(spool, self.settings.memory_limit_bytes)
        if warning is not None:
            log.warning("backup.restore_needs_more_memory", id=op.id, node=op.node, warning=warning)
            op.warnings.append(warning)

    def _upload(self, op: Operation, spool: EntrySpool) -> NodeDescriptor:
        """Uploads the frozen trees; returns the node descriptor, its entries in ``spool``."""
        frozen = self.frozen
        assert frozen is not None
        choice = CODEC_FOR_LEVEL[self.request.compression_level]
        throttle = Throttle(self.settings.max_bytes_per_second, op.cancelled)

        def on_bytes(logical: int, read: int) -> None:
            op.add_bytes(logical)
            throttle.take(read)

        trees = {name: frozen.entries[name] for name in op.collections}
        uploaded = upload(
            trees,
            root=frozen.root,
            storage=self.storage,
            layout=self.layout,
            node=op.node,
            choice=choice,
            chunk_bytes=self.request.chunk_size_mb * MB,
            workers=op.workers or 1,
            on_bytes=on_bytes,
            on_entries=op.add_files,
            cancelled=op.cancelled,
            spool=spool,
            reuse=self._read_base(trees),
        )
        collections = uploaded.collections
        references = {ch.backup for col in collections for ch in col.chunks if ch.backup}
        op.bytes_reused = uploaded.bytes_reused
        return NodeDescriptor(
            format_version=INCREMENTAL_FORMAT_VERSION if references else DESCRIPTOR_FORMAT_VERSION,
            base=self.request.incremental_base,
            bytes_reused=uploaded.bytes_reused,
            id=self.request.id,
            node=op.node,
            status=Phase.SUCCESS,
            started_at=self.started_at,
            completed_at=utcnow(),
            codec=choice.codec,
            compression_level=self.request.compression_level,
            collections=collections,
            bytes=sum(col.bytes for col in collections),
            stored_bytes=sum(ch.size for col in collections for ch in col.chunks if not ch.backup),
            file_count=uploaded.files,
            pause_ms=op.pause_ms,
            skipped=[Skipped(path=shown(p), reason=why) for p, why in frozen.skipped[:SKIPPED_LISTED]],
            skipped_count=len(frozen.skipped),
        )

    # --- the end, whichever it is ---------------------------------------------------------------

    async def discard(self, op: Operation, *, succeeded: bool) -> None:
        if self._resuming is not None:  # its release would overtake it: let it answer first
            with contextlib.suppress(Exception):
                await asyncio.shield(self._resuming)
        try:
            await self._end_hold(op)
        except ShardkeeperError as exc:
            log.warning("backup.release_failed", id=op.id, error=str(exc))
        await asyncio.to_thread(shutil.rmtree, self.staging, True)
        if not succeeded and self.uploading:
            try:
                removed = await asyncio.to_thread(self.storage.delete_prefix, self.layout.node_dir(op.node))
                if removed:
                    log.info("backup.partial_upload_removed", id=op.id, objects=removed)
            except StorageError as exc:
                log.warning("backup.partial_upload_left", id=op.id, error=str(exc))


__all__ = ["BackupJob", "EntryCounts", "restore_memory_needed", "restore_memory_warning", "worker_count"]
