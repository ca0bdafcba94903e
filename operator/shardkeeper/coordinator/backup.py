"""Reconciling one Backup: observe the nodes, ask the state machine, act, and report.

``BackupReconciler.tick`` is called by the kopf timer every few seconds until the Backup reaches a
terminal phase. It reads everything it needs (CR status, pods, agents, backend) each time, so it can
be stopped and restarted at any point.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import structlog

from shardkeeper import conventions as c
from shardkeeper.api.agent import NodePhase, OperationStatus, PrepareBackup, StoreProbe
from shardkeeper.api.backup import BackupSpec, BackupStatus
from shardkeeper.api.common import Consistency, Phase, human_bytes, utcnow
from shardkeeper.api.descriptors import GlobalDescriptor, NodeDescriptor, NodeSummary, Owner
from shardkeeper.api.status import NodeStatus
from shardkeeper.archive.codecs import CODEC_FOR_LEVEL
from shardkeeper.coordinator import queue, selection
from shardkeeper.coordinator.agents import NodeEndpoint
from shardkeeper.coordinator.conditions import conditions_for
from shardkeeper.coordinator.context import OperatorContext
from shardkeeper.coordinator.kube import ClusterView, KubernetesUnavailable
from shardkeeper.coordinator.twophase import Decision, NodeView, Step, decide
from shardkeeper.errors import (
    AgentError,
    AgentRefused,
    AgentUnreachable,
    ObjectNotFound,
    ShardkeeperError,
    SpecError,
    UnknownFormatVersion,
)
from shardkeeper.storage import BackupLayout, Storage

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: While nodes prepare, the reconciler polls them this often within one tick, so that a cluster-wide
#: write hold ends as soon as the last node has frozen, not a whole tick later.
PREPARE_POLL_INTERVAL = 0.05
PREPARE_POLL_BUDGET = 5.0


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class BackupObject:
    """The parts of a Backup custom resource a reconcile looks at."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    created: str
    spec: BackupSpec
    status: BackupStatus
    peers: Sequence[queue.OpRef] = ()
    """Every Backup and Restore of the same cluster, as the operator's index last saw them."""

    @property
    def backup_id(self) -> str:
        return self.spec.id or self.name

    def ref(self) -> queue.OpRef:
        return queue.OpRef(
            kind="Backup",
            namespace=self.namespace,
            name=self.name,
            uid=self.uid,
            created=self.created,
            phase=self.status.phase,
        )


@dataclass
class Outcome:
    status: BackupStatus
    events: list[Event] = field(default_factory=list)


class _Stop(Exception):
    """Ends a tick early; the status already says why."""


async def _thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


class BackupReconciler:
    def __init__(self, ctx: OperatorContext, obj: BackupObject, *, now: dt.datetime | None = None) -> None:
        self.ctx = ctx
        self.obj = obj
        self.spec = obj.spec
        self.now = now or utcnow()
        self.layout = BackupLayout(obj.backup_id)
        self.log = log.bind(backup=obj.backup_id, namespace=obj.namespace, name=obj.name)
        self.status = obj.status.model_copy(deep=True)
        self.events: list[Event] = []
        self._storage: Storage | None = None
        self._failure_reason: str | None = None
        self._message: str | None = None

    # --- entry points --------------------------------------------------------------------------

    async def tick(self) -> Outcome:
        st = self.status
        before = st.phase
        st.observed_generation = self.obj.generation
        st.backup_id = self.obj.backup_id
        try:
            if self.spec.cancel and not st.nodes and (st.phase is None or not st.phase.terminal):
                self._finish(Phase.CANCELED, "canceled before it started", reason="Canceled")
            elif st.phase in (None, Phase.QUEUED) or (st.phase is Phase.STARTED and not st.nodes):
                await self._start()
            elif st.phase is not None and not st.phase.terminal:
                await self._advance()
        except _Stop:
            pass
        if st.phase in (Phase.FAILED, Phase.CANCELED) and st.phase is not before:
            await self._write_final_descriptor()
        if st.phase is not before or self._failure_reason or self._message or not st.conditions:
            self._refresh_conditions()
        return Outcome(status=st, events=self.events)

    async def delete(self) -> Outcome:
        """The Backup is being deleted: a running operation is canceled, everywhere."""
        st = self.status
        if st.phase is not None and not st.phase.terminal and st.nodes:
            await self._abort_all("the Backup was deleted")
            self._finish(Phase.CANCELED, "canceled: the Backup was deleted", reason="Canceled")
            await self._write_final_descriptor()
        return Outcome(status=st, events=self.events)

    # --- phase 0: wait for the cluster, validate, claim, prepare -------------------------------

    async def _start(self) -> None:
        st, spec = self.status, self.spec
        await self._wait_for_turn()
        if st.phase in (None, Phase.QUEUED):
            st.phase = Phase.STARTED
            st.started_at = self.now
            self._event(
                "Normal", "Started", f'backup "{self.obj.backup_id}" of cluster "{spec.cluster}" started'
            )
        storage = self._open_storage()
        st.path = storage.url(self.layout.root)
        await self._claim_id(storage)

        view = await self._cluster_or_fail()
        if not view.ready:
            self._wait_or_fail("cluster is not ready: " + "; ".join(view.problems), reason="ClusterNotReady")
        infos = await asyncio.gather(
            *(self.ctx.agents.node_info(ep) for ep in view.nodes), return_exceptions=True
        )
        unreachable = [str(i) for i in infos if isinstance(i, BaseException)]
        if unreachable:
            self._wait_or_fail("agents not reachable: " + "; ".join(unreachable), reason="AgentUnreachable")
        available = {
            name for info in infos if not isinstance(info, BaseException) for name in info.collections
        }
        try:
            st.collections = selection.resolve(available, include=spec.include, exclude=spec.exclude)
        except SpecError as exc:
            self._fail(str(exc), reason="InvalidSpec")

        await _thread(lambda: self._write_descriptor(storage, Phase.STARTED))
        nonce = secrets.token_hex(16)
        probe = StoreProbe(key=self.layout.probe(nonce), nonce=nonce)
        await _thread(lambda: storage.put_bytes(probe.key, nonce.encode()))

        answers = await asyncio.gather(
            *(self.ctx.agents.prepare(ep, self._prepare_request(ep, probe)) for ep in view.nodes),
            return_exceptions=True,
        )
        st.nodes = {
            ep.name: NodeStatus(phase=NodePhase.PREPARING.value, pod_uid=ep.pod_uid) for ep in view.nodes
        }
        refusal: AgentError | None = None
        for ep, answer in zip(view.nodes, answers, strict=True):
            if isinstance(answer, OperationStatus):
                self._mirror(st.nodes[ep.name], answer)
            elif isinstance(answer, AgentError):
                st.nodes[ep.name].phase = NodePhase.FAILED.value
                st.nodes[ep.name].error = str(answer)
                refusal = refusal or answer
            else:
                raise answer
        if refusal is not None:
            await self._abort_all(f"aborted: {refusal}", view.nodes)
            self._requeue_or_fail(refusal)
        self._event("Normal", "Preparing", f"asked {len(view.nodes)} nodes to prepare {st.collections}")
        await self._publish()
        await self._advance({ep.name: ep for ep in view.nodes})

    async def _wait_for_turn(self) -> None:
        blocking = queue.blocker(self.obj.ref(), self.obj.peers)
        if blocking is None:
            return
        st = self.status
        if st.phase is not Phase.QUEUED:
            st.phase = Phase.QUEUED
            self._event(
                "Normal", "Queued", f'waiting for {blocking} to finish on cluster "{self.spec.cluster}"'
            )
        self._message = f'waiting for {blocking} to finish on cluster "{self.spec.cluster}"'
        created = dt.datetime.fromisoformat(self.obj.created.replace("Z", "+00:00"))
        if (self.now - created).total_seconds() > self.ctx.settings.queue_timeout_seconds:
            self._fail(
                f"waited more than {self.ctx.settings.queue_timeout_seconds:.0f}s for {blocking}",
                reason="QueueTimeout",
            )
        raise _Stop

    def _requeue_or_fail(self, refusal: AgentError) -> None:
        """A node busy with another Backup/Restore of this cluster means: not our turn after all
        (the queue index lagged). Anything else that refuses is a failure."""
        known = {p.uid for p in self.obj.peers}
        if isinstance(refusal, AgentRefused) and refusal.holder_uid in known:
            st = self.status
            st.phase, st.nodes, st.started_at = Phase.QUEUED, {}, None
            self._message = f"a node is busy with another operation of this cluster: {refusal}"
            raise _Stop
        self._fail(str(refusal), reason="PrepareRefused")

    def _prepare_request(self, ep: NodeEndpoint, probe: StoreProbe) -> PrepareBackup:
        cfg = self.spec.config
        return PrepareBackup(
            id=self.obj.backup_id,
            uid=self.obj.uid,
            node=ep.name,
            backend=self.spec.backend,
            path=cfg.path,
            collections=self.status.collections,
            compression_level=cfg.compression_level,
            chunk_size_mb=cfg.chunk_size,
            cpu_percentage=cfg.cpu_percentage,
            consistency=self.spec.consistency,
            reservation_seconds=self.ctx.settings.reservation_seconds,
            probe=probe,
        )

    async def _claim_id(self, storage: Storage) -> None:
        existing = await _thread(lambda: self._read_global(storage))
        if existing is None or self._is_ours(existing):
            return
        if existing.status is Phase.CANCELED:
            removed = await _thread(lambda: storage.delete_prefix(self.layout.root))
            self.log.info("backup.reusing_canceled_id", removed=removed)
            return
        self._fail(
            f'backup "{self.obj.backup_id}" already exists at "{self.status.path}"', reason="AlreadyExists"
        )

    # --- phases 1 and 2: observe, decide, act --------------------------------------------------

    async def _advance(self, endpoints: dict[str, NodeEndpoint] | None = None) -> None:
        st = self.status
        if endpoints is None:
            endpoints = await self._endpoints()
        deadline = time.monotonic() + PREPARE_POLL_BUDGET
        while True:
            views = await asyncio.gather(
                *(self._observe(name, endpoints.get(name)) for name in sorted(st.nodes))
            )
            decision = decide(
                st.phase or Phase.STARTED,
                views,
                cancel=self.spec.cancel,
                preparing_for=(self.now - (st.started_at or self.now)).total_seconds(),
                limits=self.ctx.limits,
            )
            still_preparing = decision.step is Step.WAIT and st.phase is Phase.STARTED
            if not still_preparing or time.monotonic() > deadline:
                break
            await asyncio.sleep(PREPARE_POLL_INTERVAL)
        self._sum_progress()
        await self._act(decision, endpoints)

    async def _act(self, decision: Decision, endpoints: dict[str, NodeEndpoint]) -> None:
        st = self.status
        match decision.step:
            case Step.WAIT:
                st.phase = decision.phase
            case Step.RECORD_COMMIT:
                if self.spec.consistency is Consistency.CLUSTER:
                    # Every node has frozen its files while holding writes: that instant is the cut.
                    await self._each(st.nodes, endpoints, self._release_one)
                st.phase = decision.phase
                self._event("Normal", "Transferring", f"all {len(st.nodes)} nodes prepared; committing")
                # The decision must be on record before any node hears "commit"; once it is, commit
                # at once rather than a tick later. If it cannot be recorded now, the next tick will.
                if await self._publish():
                    await self._each(st.nodes, endpoints, self._commit_one)
            case Step.COMMIT:
                prepared = [n for n, s in st.nodes.items() if s.phase == NodePhase.PREPARED.value]
                await self._each(prepared, endpoints, self._commit_one)
            case Step.RECORD_TRANSFERRED:
                st.phase = decision.phase
                self._event("Normal", "Transferred", f"all {len(st.nodes)} nodes uploaded {st.size} of data")
            case Step.FINALIZE:
                await self._finalize()
            case Step.ABORT:
                reason = decision.reason or "aborted"
                await self._abort_all(f"aborted: {reason}", list(endpoints.values()))
                self._finish(Phase.FAILED, reason, reason="NodeFailed")
            case Step.CANCEL:
                await self._abort_all("canceled by the user", list(endpoints.values()))
                self._finish(Phase.CANCELED, "canceled: spec.cancel is true", reason="Canceled")

    async def _release_one(self, ep: NodeEndpoint) -> None:
        try:
            self._mirror(self.status.nodes[ep.name], await self.ctx.agents.release(ep, self.obj.backup_id))
        except AgentError as exc:
            # Commit releases too, and the workload's own hold timeout is the last resort.
            self.log.warning("backup.release_not_delivered", node=ep.name, error=str(exc))

    async def _commit_one(self, ep: NodeEndpoint) -> None:
        try:
            self._mirror(self.status.nodes[ep.name], await self.ctx.agents.commit(ep, self.obj.backup_id))
        except AgentError as exc:
            # The next tick observes the node again and decides; a refusal shows up as FAILED there.
            self.log.warning("backup.commit_not_delivered", node=ep.name, error=str(exc))

    async def _endpoints(self) -> dict[str, NodeEndpoint]:
        try:
            view = await self.ctx.discover(self.obj.namespace, self.spec.cluster)
        except SpecError:
            return {}  # the StatefulSet is gone: every node reads as silent, then failed
        return {ep.name: ep for ep in view.nodes}

    async def _observe(self, name: str, ep: NodeEndpoint | None) -> NodeView:
        node = self.status.nodes[name]
        if ep is not None and node.pod_uid and ep.pod_uid != node.pod_uid:
            return NodeView(name, None, error=f'pod "{name}" was replaced while the backup ran')
        problem: str | None = None
        if ep is None:
            problem = f'pod "{name}" is gone or not Ready'
        else:
            try:
                answer = await self.ctx.agents.status(ep, self.obj.backup_id)
            except (AgentUnreachable, AgentRefused) as exc:
                problem = str(exc)
            else:
                node.unreachable_since = None
                if answer is None:
                    return await self._lost(name)
                self._mirror(node, answer)
                return NodeView(name, answer.phase, error=answer.error)
        node.unreachable_since = node.unreachable_since or self.now
        silent = max((self.now - node.unreachable_since).total_seconds(), 0.001)
        phase = NodePhase(node.phase) if node.phase in {p.value for p in NodePhase} else None
        return NodeView(name, phase, error=node.error, silent_for=silent, last_problem=problem)

    async def _lost(self, name: str) -> NodeView:
        """The agent does not know the operation. If it had finished, its descriptor says so."""
        if self.status.phase in (Phase.TRANSFERRING, Phase.TRANSFERRED):
            storage = self._open_storage()
            try:
                raw = await _thread(lambda: storage.get_bytes(self.layout.node_descriptor(name)))
                if NodeDescriptor.model_validate_json(raw).status is Phase.SUCCESS:
                    self.status.nodes[name].phase = NodePhase.SUCCESS.value
                    return NodeView(name, NodePhase.SUCCESS)
            except ObjectNotFound:
                pass
        return NodeView(name, None)

    def _mirror(self, node: NodeStatus, answer: OperationStatus) -> None:
        node.phase = answer.phase.value
        node.error = answer.error
        node.bytes_done, node.bytes_total = answer.bytes_done, answer.bytes_total
        node.files_done, node.files_total = answer.files_done, answer.files_total
        node.pause_ms = round(answer.pause_ms, 3) if answer.pause_ms is not None else None
        node.workers = answer.workers
        node.bytes_per_second = answer.bytes_per_second

    def _sum_progress(self) -> None:
        st = self.status
        nodes = st.nodes.values()
        st.bytes_done = sum(n.bytes_done for n in nodes)
        st.bytes_total = sum(n.bytes_total for n in nodes)
        st.files_done = sum(n.files_done for n in nodes)
        st.files_total = sum(n.files_total for n in nodes)
        st.size = human_bytes(st.bytes_total)
        moving = [n.bytes_per_second for n in nodes if n.bytes_per_second]
        if moving:
            st.bytes_per_second = sum(moving)
            st.throughput = f"{human_bytes(st.bytes_per_second)}/s"

    async def _each(
        self,
        names: Iterable[str],
        endpoints: dict[str, NodeEndpoint],
        fn: Callable[[NodeEndpoint], Awaitable[None]],
    ) -> None:
        await asyncio.gather(*(fn(endpoints[n]) for n in names if n in endpoints))

    async def _abort_all(self, reason: str, endpoints: Iterable[NodeEndpoint] | None = None) -> None:
        if endpoints is None:
            endpoints = (await self._endpoints()).values()

        async def abort(ep: NodeEndpoint) -> None:
            try:
                answer = await self.ctx.agents.abort(ep, self.obj.backup_id, reason)
            except AgentError as exc:
                # Its reservation expires by itself if it never committed; say so and move on.
                self.log.warning("backup.abort_not_delivered", node=ep.name, error=str(exc))
                return
            if answer is not None and answer.uid == self.obj.uid and ep.name in self.status.nodes:
                self._mirror(self.status.nodes[ep.name], answer)

        await asyncio.gather(*(abort(ep) for ep in endpoints))

    # --- the end -------------------------------------------------------------------------------

    async def _finalize(self) -> None:
        storage = self._open_storage()
        names = sorted(self.status.nodes)
        raws = await _thread(lambda: [storage.get_bytes(self.layout.node_descriptor(n)) for n in names])
        nodes = [NodeDescriptor.model_validate_json(raw) for raw in raws]
        await _thread(lambda: self._write_descriptor(storage, Phase.SUCCESS, nodes=nodes))
        await _thread(lambda: storage.delete_prefix(self.layout.probe_dir))
        self.status.bytes_total = sum(n.bytes for n in nodes)
        self.status.size = human_bytes(self.status.bytes_total)
        self._finish(Phase.SUCCESS, None, reason=None)

    def _finish(self, phase: Phase, error: str | None, *, reason: str | None) -> None:
        st = self.status
        st.phase = phase
        st.error = error
        st.completed_at = self.now
        self._failure_reason = reason
        if phase is Phase.SUCCESS:
            self._event(
                "Normal",
                "Succeeded",
                f"backup complete: {len(st.nodes)} nodes, {st.collections}, {st.size} at {st.path}",
            )
        elif phase is Phase.CANCELED:
            self._event("Normal", "Canceled", error or "canceled")
        else:
            self._event("Warning", "Failed", error or "failed")

    def _fail(self, message: str, *, reason: str) -> None:
        self._finish(Phase.FAILED, message, reason=reason)
        raise _Stop

    def _wait_or_fail(self, message: str, *, reason: str) -> None:
        started = self.status.started_at or self.now
        if (self.now - started).total_seconds() > self.ctx.settings.pods_ready_timeout_seconds:
            self._fail(message, reason=reason)
        self.log.info("backup.waiting", why=message)
        self._message = message
        raise _Stop

    async def _cluster_or_fail(self) -> ClusterView:
        try:
            return await self.ctx.discover(self.obj.namespace, self.spec.cluster)
        except SpecError as exc:
            self._fail(str(exc), reason="InvalidSpec")
            raise  # unreachable: _fail raises

    def _open_storage(self) -> Storage:
        if self._storage is None:
            try:
                self._storage = self.ctx.storage(self.spec.backend, self.spec.config.path)
            except ShardkeeperError as exc:
                self._fail(str(exc), reason="BackendNotConfigured")
        assert self._storage is not None
        return self._storage

    # --- descriptors ---------------------------------------------------------------------------

    def _read_global(self, storage: Storage) -> GlobalDescriptor | None:
        try:
            descriptor = GlobalDescriptor.model_validate_json(
                storage.get_bytes(self.layout.global_descriptor)
            )
        except ObjectNotFound:
            return None
        try:
            descriptor.check_version()
        except UnknownFormatVersion:
            descriptor.status = Phase.SUCCESS  # something unknown is there: never overwrite it
            descriptor.owner = None
        return descriptor

    def _is_ours(self, descriptor: GlobalDescriptor) -> bool:
        return descriptor.owner is not None and descriptor.owner.uid == self.obj.uid

    def _write_descriptor(
        self, storage: Storage, phase: Phase, *, nodes: list[NodeDescriptor] | None = None
    ) -> None:
        st, cfg = self.status, self.spec.config
        by_node = {n.node: n for n in nodes or []}
        summaries = {}
        for name, node in st.nodes.items():
            done = by_node.get(name)
            summaries[name] = NodeSummary(
                status=done.status if done else _phase_of(node.phase),
                collections=[c.name for c in done.collections] if done else [],
                bytes=done.bytes if done else 0,
                stored_bytes=done.stored_bytes if done else 0,
                files=done.file_count if done else 0,
                error=node.error,
            )
        descriptor = GlobalDescriptor(
            id=self.obj.backup_id,
            status=phase,
            backend=self.spec.backend,
            started_at=st.started_at or self.now,
            completed_at=self.now if phase.terminal else None,
            codec=CODEC_FOR_LEVEL[cfg.compression_level].codec,
            compression_level=cfg.compression_level,
            chunk_size_mb=cfg.chunk_size,
            consistency=self.spec.consistency,
            collections=st.collections,
            nodes=summaries,
            bytes=sum(s.bytes for s in summaries.values()),
            stored_bytes=sum(s.stored_bytes for s in summaries.values()),
            files=sum(s.files for s in summaries.values()),
            owner=Owner(namespace=self.obj.namespace, name=self.obj.name, uid=self.obj.uid),
            error=st.error,
        )
        storage.put_bytes(
            self.layout.global_descriptor, descriptor.model_dump_json(by_alias=True, indent=1).encode()
        )

    async def _write_final_descriptor(self) -> None:
        """Records FAILED/CANCELED in the backend and removes partial uploads, but only for a
        backup id this Backup claimed (never someone else's)."""
        try:
            storage = self._open_storage()
        except _Stop:
            return
        try:
            existing = await _thread(lambda: self._read_global(storage))
            if existing is None or not self._is_ours(existing):
                return
            for node in self.status.nodes:
                await _thread(lambda node=node: storage.delete_prefix(self.layout.node_dir(node)))  # type: ignore[misc]
            await _thread(lambda: storage.delete_prefix(self.layout.probe_dir))
            phase = self.status.phase or Phase.FAILED
            await _thread(lambda: self._write_descriptor(storage, phase))
        except ShardkeeperError as exc:
            self.log.warning("backup.final_descriptor_not_written", error=str(exc))

    # --- reporting -----------------------------------------------------------------------------

    def _refresh_conditions(self) -> None:
        st = self.status
        st.conditions = conditions_for(
            st.conditions,
            st.phase or Phase.QUEUED,
            error=st.error,
            failure_reason=self._failure_reason,
            message=self._message,
            generation=self.obj.generation,
            now=self.now,
        )

    async def _publish(self) -> bool:
        """Writes the status now rather than at the end of the tick; False if that failed."""
        self._refresh_conditions()
        try:
            await self.ctx.publish_status(
                c.BACKUP_PLURAL, self.obj.namespace, self.obj.name, self.status.wire()
            )
        except KubernetesUnavailable as exc:
            self.log.warning("backup.status_not_published", error=str(exc))
            return False
        return True

    def _event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))
        (self.log.warning if type_ == "Warning" else self.log.info)(
            "backup.event", reason=reason, message=message
        )


def _phase_of(node_phase: str) -> Phase:
    try:
        return Phase(node_phase)
    except ValueError:
        return Phase.FAILED
