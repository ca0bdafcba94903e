"""A node's part in a restore: check, download and verify into staging, move into place, tell the workload.

    prepare    read this node's descriptor from the backend; refuse collections that already exist
               and a restore that does not fit on the volume                          -> PREPARED
    commit     download every chunk (bounded by cpuPercentage), verify every chunk and file sha256,
               unpack into <data>/.shardkeeper/restore/<id>/, sync                 -> TRANSFERRED
    finalize   move each collection into the data root with a rename                  -> FINALIZING
    complete   POST {hook}/restored                                                    -> SUCCESS

Nothing is visible to the workload before ``complete``. An abort (or a coordinator that never sends
the next step within the reservation) discards staging and takes back what ``finalize`` moved.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

import structlog

from shardkeeper import conventions as c
from shardkeeper.agent.backup import worker_count
from shardkeeper.agent.hook import WorkloadHook
from shardkeeper.agent.operations import Operation, in_thread
from shardkeeper.agent.settings import AgentSettings
from shardkeeper.agent.snapshot import local_collections
from shardkeeper.agent.throttle import Throttle
from shardkeeper.api.agent import NodePhase, PrepareRestore
from shardkeeper.api.common import Codec, Phase
from shardkeeper.api.descriptors import CollectionEntry, NodeDescriptor
from shardkeeper.archive.unpack import ExpectedChunk, ExpectedFile, check_entry_path, unpack_chunk
from shardkeeper.errors import ObjectNotFound, ShardkeeperError, SpecError
from shardkeeper.storage import BackupLayout, Storage

log = structlog.get_logger(__name__)

#: Room left on the volume besides the restored data (filesystem overhead, the workload's own writes).
SPACE_MARGIN = 0.05


class RestoreJob:
    def __init__(
        self,
        settings: AgentSettings,
        request: PrepareRestore,
        storage: Storage,
        hook: WorkloadHook | None,
        *,
        reservation: float,
    ) -> None:
        self.settings = settings
        self.request = request
        self.storage = storage
        self.hook = hook
        self.reservation = reservation
        self.layout = BackupLayout(request.backup_id)
        self.staging = settings.restore_dir / request.id
        self.collections: list[CollectionEntry] = []
        self.codec: Codec | None = None
        self.moved: list[str] = []

    # --- phase 1 -------------------------------------------------------------------------------

    async def prepare(self, op: Operation) -> None:
        req = self.request
        if req.node != self.settings.node:
            raise SpecError(f'this agent serves node "{self.settings.node}", not "{req.node}"')
        descriptor = await asyncio.to_thread(self._read_descriptor)
        wanted = set(req.collections)
        self.collections = [col for col in descriptor.collections if col.name in wanted]
        self.codec = descriptor.codec
        for col in self.collections:
            for f in col.files:
                check_entry_path(f.path, {col.name})  # a descriptor is data from the bucket, too
        op.collections = [col.name for col in self.collections]
        existing = sorted(
            set(op.collections) & set(local_collections(self.settings.data_root, c.AGENT_STATE_DIR))
        )
        if existing:
            raise SpecError(f'collections {existing} already exist on node "{req.node}"')
        needed = sum(col.bytes for col in self.collections)
        usable = await asyncio.to_thread(self.settings.usable_bytes)
        if needed * (1 + SPACE_MARGIN) > usable:
            raise SpecError(
                f'node "{req.node}" has {usable} bytes free for the restore, which needs {needed} '
                f"(+{SPACE_MARGIN:.0%} margin)"
            )
        op.bytes_total = needed
        op.files_total = sum(len(col.files) for col in self.collections)
        op.workers = worker_count(self.settings.cores, req.cpu_percentage)

    def _read_descriptor(self) -> NodeDescriptor:
        key = self.layout.node_descriptor(self.request.source_node)
        try:
            descriptor = NodeDescriptor.model_validate_json(self.storage.get_bytes(key))
        except ObjectNotFound:
            raise SpecError(
                f'backup "{self.request.backup_id}" has no node "{self.request.source_node}" at '
                f"{self.storage.url(key)}"
            ) from None
        descriptor.check_version()
        if descriptor.id != self.request.backup_id or descriptor.node != self.request.source_node:
            raise SpecError(
                f"{self.storage.url(key)} describes {descriptor.id}/{descriptor.node}, not this backup"
            )
        if descriptor.status is not Phase.SUCCESS:
            raise SpecError(
                f'node "{self.request.source_node}" of backup "{descriptor.id}" is {descriptor.status}'
            )
        return descriptor

    async def release(self, op: Operation) -> None:
        """A restore never holds the workload's writes."""

    # --- phase 2 and the steps after it ---------------------------------------------------------

    async def transfer(self, op: Operation) -> None:
        await in_thread(op, lambda: self._download(op))
        op.set_phase(NodePhase.TRANSFERRED)
        await op.wait_signal("finalize", self.reservation)
        await asyncio.to_thread(self._move_into_place)
        op.set_phase(NodePhase.FINALIZING)
        await op.wait_signal("complete", self.reservation)
        if self.hook is not None:
            await self.hook.restored(op.id, op.collections)

    def _download(self, op: Operation) -> None:
        codec = self.codec
        assert codec is not None
        self.staging.mkdir(parents=True, exist_ok=False)
        throttle = Throttle(self.settings.max_bytes_per_second, op.cancelled)

        def on_bytes(n: int) -> None:
            op.add_bytes(n)
            throttle.take(n)

        def restore_chunk(col: CollectionEntry, chunk: ExpectedChunk) -> None:
            with self.storage.reader(self.layout.chunk(self.request.source_node, chunk.key)) as source:
                written = unpack_chunk(
                    source,
                    codec=codec,
                    chunk=chunk,
                    target=self.staging,
                    allowed_roots={col.name},
                    on_bytes=on_bytes,
                    cancelled=op.cancelled,
                )
            op.add_files(len(written))

        jobs = []
        for col in self.collections:
            by_chunk: dict[int, dict[str, ExpectedFile]] = {}
            for f in col.files:
                by_chunk.setdefault(f.chunk, {})[f.path] = ExpectedFile(f.path, f.size, f.sha256, f.mode)
            for ch in col.chunks:
                jobs.append((col, ExpectedChunk(ch.key, ch.sha256, ch.size, by_chunk.get(ch.n, {}))))
        with ThreadPoolExecutor(op.workers or 1, thread_name_prefix=f"restore-{op.id}") as pool:
            futures: list[Future[None]] = [pool.submit(restore_chunk, col, chunk) for col, chunk in jobs]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                op.cancelled.set()
                for future in futures:
                    future.cancel()
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        for col in self.collections:  # a collection whose files are all empty has no chunk entries
            (self.staging / col.name).mkdir(exist_ok=True)
        os.sync()  # durable before it becomes visible: one call instead of an fsync per file

    def _move_into_place(self) -> None:
        root = self.settings.data_root
        try:
            for name in (col.name for col in self.collections):
                if (root / name).exists():
                    raise SpecError(
                        f'collection "{name}" appeared on node "{self.request.node}" during the restore'
                    )
                (self.staging / name).rename(root / name)
                self.moved.append(name)
        except OSError as exc:
            raise ShardkeeperError(f"moving restored collections into place failed: {exc}") from exc

    # --- the end, whichever it is ---------------------------------------------------------------

    async def discard(self, op: Operation, *, succeeded: bool) -> None:
        if not succeeded and self.moved:
            # Finalize had moved collections in, but the restore as a whole did not complete: take
            # them back. They did not exist before (prepare refused existing ones), so they are ours.
            await asyncio.to_thread(self._take_back)
        await asyncio.to_thread(shutil.rmtree, self.staging, True)

    def _take_back(self) -> None:
        for name in self.moved:
            shutil.rmtree(self.settings.data_root / name, ignore_errors=True)
            log.info("restore.taken_back", id=self.request.id, collection=name)
        self.moved.clear()
