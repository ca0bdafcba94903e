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
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import structlog

from shardkeeper import conventions as c
from shardkeeper.agent.backup import worker_count
from shardkeeper.agent.hook import WorkloadHook
from shardkeeper.agent.journal import MoveJournal
from shardkeeper.agent.operations import Operation, in_thread
from shardkeeper.agent.settings import AgentSettings
from shardkeeper.agent.snapshot import local_collections
from shardkeeper.agent.throttle import Throttle
from shardkeeper.api.agent import NodePhase, PrepareRestore
from shardkeeper.api.common import Codec, Phase
from shardkeeper.api.descriptors import CollectionEntry, EntryType, NodeDescriptor
from shardkeeper.archive.described import DescribedNode, DescribedTree
from shardkeeper.archive.transfer import download
from shardkeeper.archive.tree import check_tree, set_times
from shardkeeper.errors import ShardkeeperError, SpecError
from shardkeeper.storage import BackupLayout, Storage
from shardkeeper.storage.repository import BackupRepository

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
        self.collections: list[tuple[CollectionEntry, DescribedTree]] = []
        """The collections restored, each with its entries (held in columns: a million take ~170 MB)."""
        self.codec: Codec | None = None
        self.moved: list[str] = []
        self.journal = MoveJournal(settings.journal_dir, request.id)
        self.dirs_listed = True

    # --- phase 1 -------------------------------------------------------------------------------

    async def prepare(self, op: Operation) -> None:
        req = self.request
        if req.node != self.settings.node:
            raise SpecError(f'this agent serves node "{self.settings.node}", not "{req.node}"')
        descriptor, self.collections = await asyncio.to_thread(self._read_descriptor)
        self.codec = descriptor.codec
        self.dirs_listed = descriptor.format_version >= 2
        for col, tree in self.collections:  # a descriptor is data from the bucket, too: the backup's rule
            await asyncio.to_thread(check_tree, col.name, tree, dirs_listed=self.dirs_listed)
        op.collections = [col.name for col, _ in self.collections]
        existing = sorted(
            set(op.collections) & set(local_collections(self.settings.data_root, c.AGENT_STATE_DIR))
        )
        if existing:
            raise SpecError(f'collections {existing} already exist on node "{req.node}"')
        # A file (or anything but a directory or link) in a collection's place is no collection, yet
        # the rename into place would fail on it: refused now, not after the whole download.
        root = self.settings.data_root
        occupied = await asyncio.to_thread(lambda: [n for n in op.collections if os.path.lexists(root / n)])
        if occupied:
            raise SpecError(
                f'{[str(root / name) for name in occupied]} on node "{req.node}" '
                "stand where the restored collections go, and are not collections (a restore "
                "replaces nothing): move them away first"
            )
        needed = sum(col.allocated for col, _ in self.collections)
        usable = await asyncio.to_thread(self.settings.usable_bytes)
        if needed * (1 + SPACE_MARGIN) > usable:
            raise SpecError(
                f'node "{req.node}" has {usable} bytes free for the restore, which needs {needed} '
                f"(+{SPACE_MARGIN:.0%} margin; allocated bytes: holes and hard links take none)"
            )
        op.bytes_total = sum(col.bytes for col, _ in self.collections)
        op.files_total = sum(len(tree) for _, tree in self.collections)
        op.workers = worker_count(self.settings.cores, req.cpu_percentage)

    def _read_descriptor(self) -> tuple[NodeDescriptor, list[tuple[CollectionEntry, DescribedTree]]]:
        """The source node's descriptor, and the wanted collections with their entries (streamed:
        ``BackupRepository.node_entries``)."""
        repo = BackupRepository(self.storage)
        wanted = set(self.request.collections)
        found = repo.node_entries(
            self.request.backup_id, self.request.source_node, lambda: DescribedNode(wanted)
        )
        if found is None:
            key = self.layout.node_descriptor(self.request.source_node)
            raise SpecError(
                f'backup "{self.request.backup_id}" has no node "{self.request.source_node}" at '
                f"{self.storage.url(key)}"
            )
        descriptor, sink = found
        if descriptor.status is not Phase.SUCCESS:
            raise SpecError(
                f'node "{self.request.source_node}" of backup "{descriptor.id}" is {descriptor.status}'
            )
        return descriptor, sink.trees(descriptor)

    async def release(self, op: Operation) -> None:
        """A restore never holds the workload's writes."""

    # --- phase 2 and the steps after it ---------------------------------------------------------

    async def transfer(self, op: Operation) -> None:
        await in_thread(op, lambda: self._download(op))
        op.set_phase(NodePhase.TRANSFERRED)
        await op.wait_signal("finalize", self.reservation)
        # in_thread: an abort meanwhile waits for the renames to end, so that it takes back all
        # that was moved (``discard``), never racing a rename still to come.
        await in_thread(op, self._move_into_place)
        op.set_phase(NodePhase.FINALIZING)
        await op.wait_signal("complete", self.reservation)
        if self.hook is not None:
            await self.hook.restored(op.id, op.collections)

    def _download(self, op: Operation) -> None:
        codec = self.codec
        assert codec is not None
        throttle = Throttle(self.settings.max_bytes_per_second, op.cancelled)

        def on_bytes(logical: int, written: int) -> None:
            op.add_bytes(logical)
            throttle.take(written)

        download(
            self.collections,
            storage=self.storage,
            layout=self.layout,
            source_node=self.request.source_node,
            codec=codec,
            staging=self.staging,
            workers=op.workers or 1,
            owners=os.geteuid() == 0,
            on_bytes=on_bytes,
            on_entries=op.add_files,
            cancelled=op.cancelled,
            dirs_listed=self.dirs_listed,
        )
        os.sync()  # durable before it becomes visible: one call instead of an fsync per file

    def _move_into_place(self) -> None:
        root = self.settings.data_root
        try:
            for col, tree in self.collections:
                name = col.name
                if os.path.lexists(root / name):
                    raise SpecError(
                        f'collection "{name}" appeared on node "{self.request.node}" during the restore'
                    )
                self.journal.record(name, self.staging / name)  # before the rename: it survives us
                (self.staging / name).rename(root / name)
                self.moved.append(name)
                own = next((e for e in tree if e.name == name and e.type is EntryType.DIR), None)
                if own is not None:
                    set_times(root / name, own)  # its mode may not allow the rename, so after it
        except OSError as exc:
            raise ShardkeeperError(f"moving restored collections into place failed: {exc}") from exc

    # --- the end, whichever it is ---------------------------------------------------------------

    async def discard(self, op: Operation, *, succeeded: bool) -> None:
        if not succeeded and self.moved:
            # Finalize had moved collections in, but the restore as a whole did not complete: take
            # them back. They did not exist before (prepare refused existing ones), so they are ours.
            await asyncio.to_thread(self._take_back)
        await asyncio.to_thread(self.journal.clear)
        await asyncio.to_thread(remove_tree, self.staging)

    def _take_back(self) -> None:
        for name in self.moved:
            remove_tree(self.settings.data_root / name)
            log.info("restore.taken_back", id=self.request.id, collection=name)
        self.moved.clear()


def remove_tree(path: Path) -> None:
    """Removes a tree this agent wrote, even where restored modes deny writing (a directory 0o500)."""

    def retry_writable(func: Any, failed: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)
            func(failed)

    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=retry_writable)
