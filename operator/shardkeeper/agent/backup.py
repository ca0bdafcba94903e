"""A node's part in a backup: check, freeze, then pack and upload, then describe what was uploaded."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

import structlog

from shardkeeper import conventions as c
from shardkeeper.agent import metrics
from shardkeeper.agent.hook import WorkloadHook
from shardkeeper.agent.operations import Operation, in_thread
from shardkeeper.agent.settings import AgentSettings
from shardkeeper.agent.snapshot import Frozen, freeze, local_collections, release
from shardkeeper.agent.throttle import Throttle
from shardkeeper.api.agent import NodePhase, PrepareBackup
from shardkeeper.api.common import Consistency, Phase, utcnow
from shardkeeper.api.descriptors import ChunkEntry, CollectionEntry, FileEntry, NodeDescriptor
from shardkeeper.archive.codecs import CODEC_FOR_LEVEL
from shardkeeper.archive.pack import Cancelled, PackedChunk, SourceFile, pack_chunk, plan_chunks
from shardkeeper.errors import ObjectNotFound, ShardkeeperError, SpecError, StorageError
from shardkeeper.storage import BackgroundWriter, BackupLayout, Storage

log = structlog.get_logger(__name__)
MB = 1_000_000


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
        #: The hold may last until the reservation expires, never longer.
        self.reservation = reservation
        self.started_at = utcnow()
        #: Only an operation that began uploading may delete what is under its node's prefix.
        self.uploading = False

    # --- phase 1 -------------------------------------------------------------------------------

    async def prepare(self, op: Operation) -> None:
        req = self.request
        if req.node != self.settings.node:
            raise SpecError(f'this agent serves node "{self.settings.node}", not "{req.node}"')
        held = set(local_collections(self.settings.data_root, c.AGENT_STATE_DIR))
        op.collections = [name for name in req.collections if name in held]
        await asyncio.to_thread(self._check_store)
        self.frozen = await freeze(
            op_id=req.id,
            collections=op.collections,
            data_root=self.settings.data_root,
            staging=self.staging,
            hook=self.hook,
            immutable_patterns=self.settings.immutable_patterns,
            hold_timeout=self.reservation,
        )
        op.bytes_total, op.files_total = self.frozen.bytes, self.frozen.count
        op.workers = worker_count(self.settings.cores, req.cpu_percentage)
        if req.consistency is Consistency.CLUSTER and self.frozen.hold_started is not None:
            op.held = True  # until the coordinator sees every node frozen and calls /release
        else:
            await self.release(op)

    async def release(self, op: Operation) -> None:
        if self.frozen is None:
            return
        pause_ms = await release(self.frozen, self.hook, op.id)
        if pause_ms is not None:
            op.pause_ms = pause_ms
            metrics.WRITE_PAUSE.labels(op.node).observe(pause_ms / 1000)
        op.held = False

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
        await self.release(op)
        self.uploading = True
        descriptor = await in_thread(op, lambda: self._upload(op))
        op.set_phase(NodePhase.TRANSFERRED)
        body = descriptor.model_dump_json(by_alias=True, exclude_none=True, indent=1).encode()
        await in_thread(op, lambda: self.storage.put_bytes(self.layout.node_descriptor(op.node), body))

    def _upload(self, op: Operation) -> NodeDescriptor:
        assert self.frozen is not None
        choice = CODEC_FOR_LEVEL[self.request.compression_level]
        target = self.request.chunk_size_mb * MB
        jobs: list[tuple[str, int, list[SourceFile]]] = []
        for collection in op.collections:
            for n, files in enumerate(plan_chunks(self.frozen.files[collection], target), start=1):
                jobs.append((collection, n, files))

        throttle = Throttle(self.settings.max_bytes_per_second, op.cancelled)

        def on_bytes(n: int) -> None:
            op.add_bytes(n)
            throttle.take(n)

        workers = op.workers or 1
        # CPU workers pack and compress; each chunk's bytes go to the backend on an I/O thread of its
        # own, and its commit overlaps the next chunk. A few chunks may be in flight, not more.
        in_flight = threading.BoundedSemaphore(workers + 1)
        commits: list[Future[None]] = []

        def upload(collection: str, n: int, files: list[SourceFile]) -> PackedChunk:
            key = self.layout.chunk(op.node, self.layout.chunk_key(collection, n))
            in_flight.acquire()
            writer = BackgroundWriter(self.storage.open_writer(key))
            try:
                packed = pack_chunk(
                    files,
                    root=self.frozen.root if self.frozen else self.staging,
                    writer=writer,
                    choice=choice,
                    on_bytes=on_bytes,
                    cancelled=op.cancelled,
                )
            except BaseException:
                writer.abort()
                in_flight.release()
                raise

            def committed_(_: Future[None]) -> None:
                in_flight.release()
                op.add_files(len(files))

            committed = writer.commit_later()
            committed.add_done_callback(committed_)
            commits.append(committed)
            return packed

        failed: list[Future[PackedChunk]] = []
        with ThreadPoolExecutor(workers, thread_name_prefix=f"pack-{op.id}") as pool:
            futures: dict[Future[PackedChunk], tuple[str, int]] = {
                pool.submit(upload, collection, n, files): (collection, n) for collection, n, files in jobs
            }
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                op.cancelled.set()  # stop the chunks still running
                for f in futures:
                    f.cancel()
        # Every commit must have ended before anyone cleans up what this operation wrote.
        wait(commits)
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        for commit in commits:
            commit.result()
        results = {where: future.result() for future, where in futures.items()}
        if op.cancelled.is_set():
            raise Cancelled

        collections = []
        for collection in op.collections:
            chunks: list[ChunkEntry] = []
            entries: list[FileEntry] = []
            n = 1
            while (collection, n) in results:
                packed = results[(collection, n)]
                chunks.append(
                    ChunkEntry(
                        n=n,
                        key=self.layout.chunk_key(collection, n),
                        sha256=packed.sha256,
                        size=packed.size,
                        raw_size=packed.raw_size,
                        files=len(packed.files),
                    )
                )
                entries.extend(
                    FileEntry(path=f.path, size=f.size, sha256=f.sha256, mode=f.mode, chunk=n)
                    for f in packed.files
                )
                n += 1
            collections.append(
                CollectionEntry(
                    name=collection, bytes=sum(f.size for f in entries), files=entries, chunks=chunks
                )
            )
        return NodeDescriptor(
            id=self.request.id,
            node=op.node,
            status=Phase.SUCCESS,
            started_at=self.started_at,
            completed_at=utcnow(),
            codec=choice.codec,
            compression_level=self.request.compression_level,
            collections=collections,
            bytes=sum(col.bytes for col in collections),
            stored_bytes=sum(ch.size for col in collections for ch in col.chunks),
            file_count=sum(len(col.files) for col in collections),
            pause_ms=op.pause_ms,
        )

    # --- the end, whichever it is ---------------------------------------------------------------

    async def discard(self, op: Operation, *, succeeded: bool) -> None:
        try:
            await self.release(op)
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


__all__ = ["BackupJob", "worker_count"]
