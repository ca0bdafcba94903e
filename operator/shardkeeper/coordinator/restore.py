"""Reconciling one Restore: every check before anything moves, then download and verify everywhere,
then move into place everywhere, then tell the workloads.

Checks, in order, each naming both sides: the backup exists and is SUCCESS, in a format this code
reads; ``nodeMapping`` names nodes of the backup and maps them onto distinct pods; the target cluster
has the backup's node count and (after the mapping) its node names; every included collection is in
the backup; none of the selected collections exists on any target node (asked of the agents, before
a byte is downloaded); each node has room for its share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shardkeeper import conventions as c
from shardkeeper.api.agent import NodePhase, PrepareRestore
from shardkeeper.api.common import Phase, human_bytes, some_of
from shardkeeper.api.descriptors import (
    GlobalDescriptor,
    Owner,
    RestoreDescriptor,
    RestoreNode,
)
from shardkeeper.api.restore import RestoreSpec, RestoreStatus
from shardkeeper.api.status import NodeStatus
from shardkeeper.coordinator import selection
from shardkeeper.coordinator.agents import NodeEndpoint
from shardkeeper.coordinator.objects import OperationObject, Outcome, Stop, in_thread
from shardkeeper.coordinator.operation import OperationReconciler
from shardkeeper.coordinator.twophase import Decision, NodeView, Step, decide_restore
from shardkeeper.errors import CorruptDescriptor, ShardkeeperError, SpecError, UnknownFormatVersion
from shardkeeper.storage import BackupLayout, Storage
from shardkeeper.storage.repository import BackupRepository

RestoreObject = OperationObject[RestoreSpec, RestoreStatus]

__all__ = ["RestoreObject", "RestoreReconciler"]


class RestoreReconciler(OperationReconciler[RestoreSpec, RestoreStatus]):
    noun = "restore"
    plural = c.RESTORE_PLURAL

    @property
    def op_id(self) -> str:
        # One operation id per Restore object, valid as an agent operation id.
        return f"restore-{self.obj.uid}"

    @property
    def op_name(self) -> str:
        return self.obj.name

    @property
    def layout(self) -> BackupLayout:
        return BackupLayout(self.spec.backup_id)

    async def tick(self) -> Outcome[RestoreStatus]:
        self.status.backup_id = self.spec.backup_id
        return await super().tick()

    # --- the checks ----------------------------------------------------------------------------

    async def _begin(self) -> list[NodeEndpoint]:
        st = self.status
        storage = self._open_storage()
        st.path = storage.url(self.layout.root)
        descriptor = await self._backup(storage)
        sources = self._mapping(descriptor)  # target pod -> node of the backup
        view = await self._cluster_or_fail()
        self._check_topology(descriptor, sources, view.replicas)
        view = await self._ready_cluster()
        try:
            chosen = self._resolve(descriptor)
        except SpecError as exc:
            self._fail(str(exc).replace("please choose from", "the backup has"), reason="InvalidSpec")
        self._selection = chosen
        st.list_collections(chosen)
        infos = await self._node_infos(view)
        self._check_conflicts(infos)
        await self._check_space(storage, sources, infos)
        self._sources = sources
        await in_thread(lambda: self._write_restore_descriptor(storage, Phase.STARTED, collections=chosen))
        return view.nodes

    def _resolve(self, descriptor: GlobalDescriptor) -> list[str]:
        """The collections to restore: the backup's, narrowed by spec.include and spec.exclude.
        Raises SpecError naming what the spec asks for and the backup lacks."""
        spec = self.spec
        return selection.resolve(
            descriptor.collections, include=spec.include, exclude=spec.exclude, verb="restore"
        )

    async def _all_collections(self, storage: Storage) -> list[str]:
        """Every collection of this restore: resolved in this process, or all on the status, or
        (when the status lists only the first of many) as this restore's STARTED record lists them,
        or resolved again from the backup's descriptor. If neither can be read (the backup was
        deleted meanwhile), the status's first ones: the record is written anyway, never retried
        forever."""
        if self._selection is not None:
            return self._selection
        if self.status.collections_complete():
            return self.status.collections
        repo = BackupRepository(storage)
        try:
            record = await in_thread(lambda: repo.restore_descriptor(self.spec.backup_id))
            if record is not None and record.restore.uid == self.obj.uid:
                return record.collections
            descriptor = await in_thread(lambda: repo.global_descriptor(self.spec.backup_id))
            if descriptor is not None:
                return self._resolve(descriptor)
        except (CorruptDescriptor, UnknownFormatVersion, SpecError) as exc:
            self.log.warning("restore.collections_not_found", error=str(exc))
        return self.status.collections

    async def _backup(self, storage: Storage) -> GlobalDescriptor:
        backup_id = self.spec.backup_id
        try:
            found = await in_thread(lambda: BackupRepository(storage).global_descriptor(backup_id))
        except UnknownFormatVersion as exc:
            self._fail(f'backup "{backup_id}": {exc}', reason="UnsupportedFormat")
        if found is None:
            self._fail(
                f'backup id "{backup_id}" does not exist at "{self.status.path}"', reason="BackupNotFound"
            )
        descriptor = found
        if descriptor.status is not Phase.SUCCESS:
            self._fail(
                f'backup "{backup_id}" is {descriptor.status}, not SUCCESS: '
                "only a complete backup can be restored",
                reason="BackupNotRestorable",
            )
        return descriptor

    def _mapping(self, descriptor: GlobalDescriptor) -> dict[str, str]:
        mapping = self.spec.node_mapping or {}
        nodes = sorted(descriptor.nodes)
        unknown = sorted(set(mapping) - set(nodes))
        if unknown:
            self._fail(
                f"spec.nodeMapping names {unknown}, which are not nodes of backup "
                f'"{descriptor.id}" (its nodes: {nodes})',
                reason="InvalidSpec",
            )
        targets: dict[str, str] = {}
        for node in nodes:
            target = mapping.get(node, node)
            if target in targets:
                self._fail(
                    f'spec.nodeMapping maps both "{targets[target]}" and "{node}" onto "{target}"',
                    reason="InvalidSpec",
                )
            targets[target] = node
        return targets

    def _check_topology(self, descriptor: GlobalDescriptor, sources: dict[str, str], replicas: int) -> None:
        cluster = self.spec.cluster
        backup_nodes = sorted(descriptor.nodes)
        pods = [f"{cluster}-{i}" for i in range(replicas)]
        if replicas != len(backup_nodes):
            self._fail(
                f'node count mismatch: backup "{descriptor.id}" has {len(backup_nodes)} nodes '
                f"{backup_nodes}, "
                f'cluster "{cluster}" has {replicas} {pods}',
                reason="TopologyMismatch",
            )
        missing = sorted(set(sources) - set(pods))
        extra = sorted(set(pods) - set(sources))
        if missing or extra:
            hint = (
                "" if self.spec.node_mapping else "; spec.nodeMapping can rename nodes ({nodeInBackup: pod})"
            )
            self._fail(
                f"node names do not match: the backup's nodes {sorted(sources)} (after nodeMapping) "
                f'are not all in cluster "{cluster}": missing {missing}, and the cluster has {extra} '
                f"that the backup does not{hint}",
                reason="TopologyMismatch",
            )

    def _check_conflicts(self, infos: dict[str, Any]) -> None:
        wanted = set(self._selection_made())
        clashes = [
            f'"{name}" on node "{node}"'
            for node, info in sorted(infos.items())
            for name in sorted(wanted & set(info.collections))
        ]
        if clashes:
            self._fail(
                f'collections already exist in cluster "{self.spec.cluster}": {some_of(clashes)}; '
                "a restore never overwrites a collection",
                reason="CollectionExists",
            )

    async def _check_space(self, storage: Storage, sources: dict[str, str], infos: dict[str, Any]) -> None:
        wanted = set(self._selection_made())
        repo = BackupRepository(storage)

        def needs() -> dict[str, int]:
            out = {}
            for target, source in sources.items():
                node = repo.node_head(self.spec.backup_id, source)
                if node is None:
                    where = storage.url(self.layout.node_descriptor(source))
                    raise CorruptDescriptor(f"{where} is missing: the backup is incomplete")
                out[target] = sum(col.allocated for col in node.collections if col.name in wanted)
            return out

        short = [
            f'node "{target}" needs {human_bytes(need)} and has {human_bytes(infos[target].free_bytes)} free'
            for target, need in sorted((await in_thread(needs)).items())
            if need > infos[target].free_bytes
        ]
        if short:
            self._fail("not enough disk space: " + "; ".join(short), reason="InsufficientSpace")

    # --- preparing and running -----------------------------------------------------------------

    _sources: dict[str, str]

    def _initial_nodes(self, nodes: list[NodeEndpoint]) -> dict[str, NodeStatus]:
        out = super()._initial_nodes(nodes)
        for name, node in out.items():
            node.source = self._sources[name]
        return out

    def _prepare_request(self, ep: NodeEndpoint) -> PrepareRestore:
        return PrepareRestore(
            id=self.op_id,
            uid=self.obj.uid,
            node=ep.name,
            source_node=self._sources[ep.name],
            backup_id=self.spec.backup_id,
            backend=self.spec.backend,
            path=self.spec.config.path,
            collections=self._selection_made(),
            cpu_percentage=self.spec.config.cpu_percentage,
            reservation_seconds=self.ctx.settings.reservation_seconds,
        )

    def _decide(self, views: Sequence[NodeView]) -> Decision:
        return decide_restore(
            self.status.phase or Phase.STARTED,
            views,
            cancel=self.spec.cancel,
            preparing_for=self._preparing_for,
            limits=self.ctx.limits,
            deleted=self.deleting,
        )

    async def _act_more(self, decision: Decision, endpoints: dict[str, NodeEndpoint]) -> None:
        st = self.status
        in_phase = {p: [n for n, s in st.nodes.items() if s.phase == p.value] for p in NodePhase}
        if decision.step is Step.RECORD_FINALIZE:
            if self.interrupted():
                raise Stop  # deleted or canceled while the nodes verified: delete, or the next tick, cancels
            st.phase = decision.phase
            self._event(
                "Normal", "Finalizing", f"all {len(st.nodes)} nodes verified {st.size}; moving into place"
            )
            if not await self._publish() or self.interrupted():
                # Not on record: no node may move anything; the next tick decides again. Or deleted
                # or canceled meanwhile: delete then finds every node TRANSFERRED and cancels (a
                # cancel is too late now, and the next tick finalizes).
                raise Stop
            await self._each(
                in_phase[NodePhase.TRANSFERRED], endpoints, lambda ep: self._step_one(ep, "finalize")
            )
        elif decision.step is Step.FINALIZE:
            await self._each(
                in_phase[NodePhase.TRANSFERRED], endpoints, lambda ep: self._step_one(ep, "finalize")
            )
        elif decision.step is Step.COMPLETE:
            await self._each(
                in_phase[NodePhase.FINALIZING], endpoints, lambda ep: self._step_one(ep, "complete")
            )
        elif decision.step is Step.FINISH:
            self._finish(Phase.SUCCESS, None, reason=None)
            self._note_cleanup(await self._record_end())
        else:
            await super()._act_more(decision, endpoints)

    # --- the end -------------------------------------------------------------------------------

    def finishes_before_deletion(self) -> bool:
        """A FINALIZING restore is decided by the delete handler's ticks: canceled while no workload
        has been told to load anything, otherwise finished, not undone (``twophase``)."""
        return self.status.phase is Phase.FINALIZING

    def _success_message(self) -> str:
        return f'restored backup "{self.spec.backup_id}": {super()._success_message()}'

    async def _on_end(self) -> str | None:
        return await self._record_end()

    async def _record_end(self) -> str | None:
        """Writes restore_config.json next to the backup; returns what failed, or None."""
        if not self.status.nodes:
            return None  # refused before it began: nothing of this restore is in the backend
        try:
            storage = self._open_storage()
            phase = self.status.phase or Phase.FAILED
            chosen = await self._all_collections(storage)
            await in_thread(lambda: self._write_restore_descriptor(storage, phase, collections=chosen))
        except (ShardkeeperError, Stop) as exc:
            self.log.warning("restore.descriptor_not_written", error=str(exc))
            return f"the restore record at {self.status.path}: {exc}"
        return None

    def _write_restore_descriptor(self, storage: Storage, phase: Phase, *, collections: list[str]) -> None:
        st = self.status
        sources = getattr(self, "_sources", None) or {n: s.source or n for n, s in st.nodes.items()}
        descriptor = RestoreDescriptor(
            backup_id=self.spec.backup_id,
            status=phase,
            restore=Owner(namespace=self.obj.namespace, name=self.obj.name, uid=self.obj.uid),
            cluster=self.spec.cluster,
            node_mapping=self.spec.node_mapping or {},
            collections=collections,
            nodes={
                target: RestoreNode(
                    source=source,
                    status=st.nodes[target].phase if target in st.nodes else "PENDING",
                    error=st.nodes[target].error if target in st.nodes else None,
                )
                for target, source in sorted(sources.items())
            },
            started_at=st.started_at or self.now,
            completed_at=self.now if phase.terminal else None,
            error=st.error,
        )
        BackupRepository(storage).write_restore(descriptor)
