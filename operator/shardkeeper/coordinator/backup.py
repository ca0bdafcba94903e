"""Reconciling one Backup: claim the id, freeze every node, upload, write the global descriptor last."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence

from shardkeeper import conventions as c
from shardkeeper.api.agent import NodePhase, PrepareBackup, StoreProbe
from shardkeeper.api.backup import BackupSpec, BackupStatus, backup_id_of
from shardkeeper.api.common import Consistency, Phase, human_bytes, some_of, utcnow
from shardkeeper.api.descriptors import GlobalDescriptor, NodeDescriptor, Owner
from shardkeeper.api.status import NodeStatus
from shardkeeper.archive.codecs import CODEC_FOR_LEVEL
from shardkeeper.coordinator import selection
from shardkeeper.coordinator.agents import NodeEndpoint
from shardkeeper.coordinator.backup_deletion import BackupDeletion
from shardkeeper.coordinator.backup_record import global_descriptor, read_global_descriptor
from shardkeeper.coordinator.cut import record_cut
from shardkeeper.coordinator.objects import OperationObject, Outcome, Stop, in_thread
from shardkeeper.coordinator.twophase import Decision, NodeView, Step, decide
from shardkeeper.errors import (
    CorruptDescriptor,
    ShardkeeperError,
    SpecError,
)
from shardkeeper.storage import BackupLayout, Storage
from shardkeeper.storage.repository import BackupRepository

BackupObject = OperationObject[BackupSpec, BackupStatus]

__all__ = ["BackupObject", "BackupReconciler", "Outcome", "read_global_descriptor"]


class BackupReconciler(BackupDeletion):
    noun = "backup"
    plural = c.BACKUP_PLURAL
    _probe: StoreProbe

    @property
    def op_id(self) -> str:
        return self.spec.id or self.obj.name

    @property
    def layout(self) -> BackupLayout:
        return BackupLayout(self.op_id)

    async def tick(self) -> Outcome[BackupStatus]:
        self.status.backup_id = self.op_id
        return await super().tick()

    def _check(self) -> None:
        try:
            backup_id_of(self.obj.name, self.spec)
        except ValueError as exc:
            self._fail(str(exc), reason="InvalidSpec")

    # --- starting ------------------------------------------------------------------------------

    async def _begin(self) -> list[NodeEndpoint]:
        st, spec = self.status, self.spec
        storage = self._open_storage()
        st.path = storage.url(self.layout.root)
        await self._claim_id(storage)
        await self._check_base(storage)
        view = await self._ready_cluster()
        infos = await self._node_infos(view)
        available = {name for info in infos.values() for name in info.collections}
        unnamed = [f'"{d}" on node "{node}"' for node, info in sorted(infos.items()) for d in info.unnamed]
        if unnamed and not spec.include:
            self._fail(
                f"cannot back up every collection: not a collection: {some_of(unnamed)} (a directory "
                "name must be valid UTF-8 and at most 255 bytes); rename it, move it out of the data "
                "root, or name the collections to back up in spec.include",
                reason="InvalidSpec",
            )
        try:
            chosen = selection.resolve(available, include=spec.include, exclude=spec.exclude)
        except SpecError as exc:
            self._fail(str(exc), reason="InvalidSpec")
        self._selection = chosen
        st.list_collections(chosen)
        await in_thread(lambda: self._write_descriptor(storage, Phase.STARTED, collections=chosen))
        nonce = secrets.token_hex(16)
        self._probe = StoreProbe(key=self.layout.probe(nonce), nonce=nonce)
        await in_thread(lambda: storage.put_bytes(self._probe.key, nonce.encode()))
        return view.nodes

    def _prepare_request(self, ep: NodeEndpoint) -> PrepareBackup:
        cfg = self.spec.config
        return PrepareBackup(
            id=self.op_id,
            uid=self.obj.uid,
            node=ep.name,
            backend=self.spec.backend,
            path=cfg.path,
            collections=self._selection_made(),
            compression_level=cfg.compression_level,
            chunk_size_mb=cfg.chunk_size,
            cpu_percentage=cfg.cpu_percentage,
            consistency=self.spec.consistency,
            reservation_seconds=self.ctx.settings.reservation_seconds,
            probe=self._probe,
            incremental_base=self.spec.incremental_base,
        )

    async def _claim_id(self, storage: Storage) -> None:
        """Claims the backup id: free, ours, or a CANCELED one is reused; a SUCCESS one written by
        an object of the same namespace and name (a GitOps re-sync re-creating a deleted Retain
        Backup) is adopted; anything else is refused, saying how to proceed."""
        existing = await in_thread(lambda: read_global_descriptor(storage, self.layout))
        if existing is None or self._is_ours(existing):
            return
        if existing.status is Phase.CANCELED:
            removed = await in_thread(lambda: storage.delete_prefix(self.layout.root))
            self.log.info("backup.reusing_canceled_id", removed=removed)
            return
        owner = existing.owner
        same_object = owner is not None and (owner.namespace, owner.name) == (
            self.obj.namespace,
            self.obj.name,
        )
        if same_object and existing.status is Phase.SUCCESS:
            await self._adopt(storage, existing)
        by = f"Backup {owner.namespace}/{owner.name}" if owner else "another writer"
        self._fail(
            f'backup "{self.op_id}" already exists at "{self.status.path}" ({existing.status}, written by '
            f"{by}): set spec.id to an id not in use, or remove that backup from the backend first",
            reason="AlreadyExists",
        )

    async def _adopt(self, storage: Storage, existing: GlobalDescriptor) -> None:
        """This object takes over a finished backup its predecessor (same namespace and name)
        wrote: the descriptor's owner becomes this object (so deletionPolicy applies to it), and
        the status is the backup's. Ends the tick with SUCCESS, reason Adopted."""
        st, previous = self.status, existing.owner
        existing.owner = Owner(namespace=self.obj.namespace, name=self.obj.name, uid=self.obj.uid)
        raw = existing.model_dump_json(by_alias=True, indent=1).encode()
        await in_thread(lambda: storage.put_bytes(self.layout.global_descriptor, raw))
        st.phase, st.started_at, st.completed_at = Phase.SUCCESS, existing.started_at, existing.completed_at
        st.list_collections(existing.collections)
        st.bytes_done = st.bytes_total = existing.bytes
        st.files_done = st.files_total = existing.files
        st.size = human_bytes(existing.bytes)
        st.nodes = {
            name: NodeStatus(
                phase=node.status.value,
                bytes_done=node.bytes,
                bytes_total=node.bytes,
                files_done=node.files,
                files_total=node.files,
            )
            for name, node in existing.nodes.items()
        }
        self._failure_reason = "Adopted"
        self._message = (
            f'adopted backup "{self.op_id}" at {st.path} ({st.size}, {st.describe_collections()}), '
            f"written by a previous Backup {self.obj.namespace}/{self.obj.name}"
            + (f" (uid {previous.uid})" if previous else "")
        )
        self._event("Normal", "Adopted", self._message)
        raise Stop

    async def _check_base(self, storage: Storage) -> None:
        """spec.incrementalBase: a SUCCESS backup in the same store, older, with the same codec, and
        not this one or one built on this one (no cycles)."""
        base_id = self.spec.incremental_base
        if base_id is None:
            return
        where = f'spec.incrementalBase: backup "{base_id}"'
        if base_id == self.op_id:
            self._fail(f"{where} is this backup itself", reason="InvalidSpec")
        base = await in_thread(lambda: BackupRepository(storage).global_descriptor(base_id))
        if base is None:
            self._fail(f'{where} does not exist at "{storage.url(base_id)}"', reason="InvalidSpec")
        if base.status is not Phase.SUCCESS:
            self._fail(
                f"{where} is {base.status}: only a complete backup can be a base", reason="InvalidSpec"
            )
        if self.op_id in base.references or base.base == self.op_id:
            self._fail(f"{where} is built on this backup: a chain cannot loop", reason="InvalidSpec")
        codec = CODEC_FOR_LEVEL[self.spec.config.compression_level].codec
        if base.codec is not codec:
            self._fail(
                f"{where} was written as {base.codec} ({base.compression_level}); this one would be {codec}: "
                "a chain keeps one codec",
                reason="InvalidSpec",
            )
        if base.completed_at is not None and base.completed_at > self.now:
            self._fail(f"{where} completed after this backup started", reason="InvalidSpec")

    # --- running -------------------------------------------------------------------------------

    def _decide(self, views: Sequence[NodeView]) -> Decision:
        return decide(
            self.status.phase or Phase.STARTED,
            views,
            cancel=self.spec.cancel,
            preparing_for=self._preparing_for,
            limits=self.ctx.limits,
        )

    async def _before_commit(self, endpoints: dict[str, NodeEndpoint]) -> None:
        if self.spec.consistency is Consistency.CLUSTER:
            # Every node has frozen its files while holding writes: that instant is the cut.
            await self._each(self.status.nodes, endpoints, lambda ep: self._step_one(ep, "release"))
        cut = record_cut(self.status, self.spec.consistency, dt.datetime.now(dt.UTC))
        if cut.problem is not None:  # promised one cut of the cluster, and there is none: never commit
            self._finish(Phase.FAILED, cut.problem, reason="NoConsistentCut")
            await self._publish()
            await self._abort_all(f"aborted: {cut.problem}", endpoints.values())
            raise Stop

    async def _act_more(self, decision: Decision, endpoints: dict[str, NodeEndpoint]) -> None:
        st = self.status
        if decision.step is Step.RECORD_TRANSFERRED:
            st.phase = decision.phase
            self._event("Normal", "Transferred", f"all {len(st.nodes)} nodes uploaded {st.size} of data")
            # On record (a restart carries on from it), then finished now, unless the object was
            # deleted or canceled since the tick read it: then delete, or the next tick, cancels it.
            if await self._publish() and not self.interrupted():
                self.now = utcnow()  # completedAt and the duration: now, not when the tick began
                await self._write_success()
        elif decision.step is Step.FINISH:
            await self._write_success()
        else:
            await super()._act_more(decision, endpoints)

    async def _lost(self, name: str) -> NodeView:
        """If the agent had finished before it restarted, its node descriptor says so."""
        if self.status.phase in (Phase.TRANSFERRING, Phase.TRANSFERRED):
            storage = self._open_storage()
            node = await in_thread(lambda: BackupRepository(storage).node_head(self.op_id, name))
            if node is not None and node.status is Phase.SUCCESS:
                self.status.nodes[name].phase = NodePhase.SUCCESS.value
                return NodeView(name, NodePhase.SUCCESS)
        return NodeView(name, None)

    # --- the end -------------------------------------------------------------------------------

    async def _write_success(self) -> None:
        storage = self._open_storage()
        names = sorted(self.status.nodes)
        repo = BackupRepository(storage)
        # Every entry validated too, as a restore will (one at a time: ~10 s a million, in a thread).
        found = await in_thread(lambda: [repo.node_head(self.op_id, n, validate_entries=True) for n in names])
        missing = [n for n, d in zip(names, found, strict=True) if d is None]
        if missing:
            self._fail(
                f"node descriptors of {missing} are missing at {self.status.path}", reason="NodeFailed"
            )
        nodes = [d for d in found if d is not None]
        references = sorted(
            {ch.backup for n in nodes for col in n.collections for ch in col.chunks if ch.backup}
        )
        for ref in references:  # a base deleted while this backup was written: never a broken child
            base = await in_thread(lambda ref=ref: repo.global_descriptor(ref))  # type: ignore[misc]
            if base is None or base.status is not Phase.SUCCESS:
                self._fail(
                    f'backup "{ref}", whose data this incremental backup references, is gone or not SUCCESS',
                    reason="BaseGone",
                )
        chosen = await self._all_collections(storage)
        # The probe first: nothing that fails after SUCCESS is written may make the backup FAILED.
        await in_thread(lambda: storage.delete_prefix(self.layout.probe_dir))
        await in_thread(
            lambda: self._write_descriptor(storage, Phase.SUCCESS, collections=chosen, nodes=nodes)
        )
        self.status.bytes_total = sum(n.bytes for n in nodes)
        self.status.stored_bytes = sum(n.stored_bytes for n in nodes)
        self.status.size = human_bytes(self.status.bytes_total)
        self._finish(Phase.SUCCESS, None, reason=None)

    def _success_message(self) -> str:
        return f"{super()._success_message()} at {self.status.path}"

    async def _on_end(self) -> str | None:
        """Records FAILED/CANCELED in the backend and removes partial uploads and the probe, but only
        for a backup id this Backup claimed (never someone else's). Returns what could not be done
        (the base class retries it until done), or None."""
        try:
            storage = self._open_storage()
        except Stop:
            return None
        try:
            existing = await in_thread(lambda: read_global_descriptor(storage, self.layout))
            if existing is None or not self._is_ours(existing):
                return None
            for node in self.status.nodes:
                await in_thread(lambda node=node: storage.delete_prefix(self.layout.node_dir(node)))  # type: ignore[misc]
            await in_thread(lambda: storage.delete_prefix(self.layout.probe_dir))
            phase = self.status.phase or Phase.FAILED
            chosen = await self._all_collections(storage, existing)
            await in_thread(lambda: self._write_descriptor(storage, phase, collections=chosen))
        except ShardkeeperError as exc:
            self.log.warning("backup.final_descriptor_not_written", error=str(exc))
            return f"final descriptor and partial uploads at {storage.url(self.layout.root)}: {exc}"
        return None

    async def _all_collections(self, storage: Storage, started: GlobalDescriptor | None = None) -> list[str]:
        """Every collection of this backup: resolved in this process, or all on the status, or (when
        the status lists only the first of many) as the STARTED descriptor recorded them."""
        if self._selection is not None:
            return self._selection
        if self.status.collections_complete():
            return self.status.collections
        if started is None:
            started = await in_thread(lambda: read_global_descriptor(storage, self.layout))
        if started is None or not self._is_ours(started):
            raise CorruptDescriptor(
                f"{storage.url(self.layout.global_descriptor)} is missing or not this Backup's: "
                "its list of collections is gone"
            )
        return started.collections

    def _write_descriptor(
        self,
        storage: Storage,
        phase: Phase,
        *,
        collections: list[str],
        nodes: list[NodeDescriptor] | None = None,
    ) -> None:
        descriptor = global_descriptor(
            self.op_id,
            self.spec,
            self.status,
            phase,
            owner=Owner(namespace=self.obj.namespace, name=self.obj.name, uid=self.obj.uid),
            collections=collections,
            nodes=nodes or [],
            now=self.now,
        )
        BackupRepository(storage).write_global(descriptor)
