"""What reconciling a Backup and a Restore have in common.

Each kopf timer tick builds a reconciler for one object and calls ``tick``. It reads everything it
needs (CR status, pods, agents, backend) every time, so the operator can stop and restart at any
point: waiting in the queue, preparing, or observing the nodes and acting on the pure decision of
``twophase``. Subclasses say how to start (what to check and prepare), how to decide, and what the
kind-specific steps do.
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, Literal, NoReturn, TypeVar

import structlog

from shardkeeper.api.agent import (
    NodeInfo,
    NodePhase,
    OperationStatus,
    PrepareBackup,
    PrepareRestore,
    StatusQuery,
)
from shardkeeper.api.common import Phase, utcnow
from shardkeeper.api.status import MESSAGE_MAX_BYTES, NodeStatus
from shardkeeper.coordinator import queue
from shardkeeper.coordinator.agents import NodeEndpoint
from shardkeeper.coordinator.conditions import conditions_for
from shardkeeper.coordinator.context import OperatorContext
from shardkeeper.coordinator.events import shorten
from shardkeeper.coordinator.kube import ClusterView, KubernetesUnavailable
from shardkeeper.coordinator.objects import (
    TRANSIENT_ERRORS,
    Event,
    OperationObject,
    OperationSpec,
    Outcome,
    SpecT,
    StatusT,
    Stop,
    retry_later,
)
from shardkeeper.coordinator.observe import mirror, sum_progress
from shardkeeper.coordinator.twophase import Decision, NextPoll, NodeView, Step, next_poll
from shardkeeper.errors import (
    AgentError,
    AgentRefused,
    AgentUnreachable,
    CorruptDescriptor,
    ShardkeeperError,
    SpecError,
    StorageError,
    TransientStorageError,
)
from shardkeeper.storage import Storage

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: While nodes prepare, the reconciler keeps asking them within one tick, so that a cluster-wide
#: write hold ends as soon as the last node has frozen, not a whole tick later. A node still
#: preparing is asked with a long poll (``StatusQuery``): its agent answers the moment it has
#: prepared, or after PREPARE_WAIT_SECONDS. An agent that answers at once (one without the long
#: poll) is asked no more often than every PREPARE_POLL_INTERVAL.
PREPARE_POLL_INTERVAL = 0.05
PREPARE_WAIT_SECONDS = 1.0
PREPARE_POLL_BUDGET = 5.0
#: The longest wait between two attempts at a cleanup that failed (seconds).
CLEANUP_RETRY_MAX = 300.0


class OperationReconciler(abc.ABC, Generic[SpecT, StatusT]):
    #: "backup" or "restore", for messages.
    noun: str
    plural: str

    def __init__(
        self, ctx: OperatorContext, obj: OperationObject[SpecT, StatusT], *, now: dt.datetime | None = None
    ) -> None:
        self.ctx = ctx
        self.obj = obj
        self.spec: SpecT = obj.spec
        self.now = now or utcnow()
        self.status: StatusT = obj.status.model_copy(deep=True)
        self.events: list[Event] = []
        self.log = log.bind(kind=obj.kind, namespace=obj.namespace, name=obj.name, op=self.op_id)
        self._storage: Storage | None = None
        self._silent: set[str] = set()
        """Nodes whose agent did not answer this tick."""
        self.deletion_requested: Callable[[], bool] = lambda: False
        """True once the object is being deleted (the handler passes a live check): a tick then
        stops at its next step boundary and leaves the cancel to ``delete``."""
        self._failure_reason: str | None = None
        self._message: str | None = None

    # --- what a kind defines -------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def op_id(self) -> str:
        """The operation's id on the agents."""

    @property
    def op_spec(self) -> OperationSpec:
        return self.spec  # type: ignore[return-value]

    @abc.abstractmethod
    async def _begin(self) -> list[NodeEndpoint]:
        """Checks everything that can be checked before any node is touched, records what was
        found (collections, path...) and returns the nodes to prepare. Fails or waits by raising."""

    @abc.abstractmethod
    def _prepare_request(self, ep: NodeEndpoint) -> PrepareBackup | PrepareRestore: ...

    @abc.abstractmethod
    def _decide(self, views: Sequence[NodeView]) -> Decision: ...

    async def _act_more(self, decision: Decision, endpoints: dict[str, NodeEndpoint]) -> None:
        """Steps only one kind has."""
        raise AssertionError(f"{self.noun} has no step {decision.step}")

    async def _lost(self, name: str) -> NodeView:
        """The agent does not know the operation (it restarted)."""
        return NodeView(name, None)

    async def _on_end(self) -> str | None:
        """Called in the tick where the operation became FAILED or CANCELED: records the end in the
        backend and cleans up there. Returns what could not be done yet, or None; ``tick`` retries
        it, with backoff, until it returns None."""
        return None

    def _check(self) -> None:
        """Checks of the object itself that the API server may not have made (it was admitted
        before a rule existed); fails with ``_fail``."""

    # --- entry points --------------------------------------------------------------------------

    async def tick(self) -> Outcome[StatusT]:
        st = self.status
        before = st.phase
        st.observed_generation = self.obj.generation
        if st.phase is not None and st.phase.terminal and st.cleanup_pending:
            await self._retry_cleanup()
            return Outcome(status=st, events=self.events)
        try:
            self._check()
            if self.op_spec.cancel and not st.nodes and (st.phase is None or not st.phase.terminal):
                self._finish(Phase.CANCELED, "canceled before it started", reason="Canceled")
            elif st.phase in (None, Phase.QUEUED) or (st.phase is Phase.STARTED and not st.nodes):
                await self._start()
            elif st.phase is not None and not st.phase.terminal:
                await self._advance()
            st.backend_unavailable_since = None
        except Stop:
            pass
        except TransientStorageError as exc:
            self._backend_trouble(exc)
        except CorruptDescriptor as exc:  # read from the backend: retrying will not mend it
            self._finish(Phase.FAILED, str(exc), reason="CorruptDescriptor")
        except StorageError as exc:  # denied, no such bucket...: retrying will not help
            self._finish(Phase.FAILED, f'backend "{self.op_spec.backend}": {exc}', reason="BackendError")
        except Exception as exc:
            await self._crashed(exc)
        if st.phase in (Phase.FAILED, Phase.CANCELED) and st.phase is not before:
            await self._end_cleanup()
        if st.phase is not before or self._failure_reason or self._message or not st.conditions:
            self._refresh_conditions()
        return Outcome(status=st, events=self.events)

    async def _end_cleanup(self) -> None:
        try:
            pending = await self._on_end()
        except Exception as exc:
            self.log.exception("operation.cleanup_failed", error=repr(exc))
            pending = f"{type(exc).__name__}: {exc}"
        self._note_cleanup(pending)

    def _note_cleanup(self, pending: str | None) -> None:
        """Records what is left to clean up (None: nothing) and when to try again: after 2 ticks,
        doubling up to ``CLEANUP_RETRY_MAX`` seconds, for as long as it takes."""
        st = self.status
        if pending is None:
            if st.cleanup_attempts:
                self._event("Normal", "CleanupDone", f"cleaned up after {st.cleanup_attempts + 1} attempts")
            st.cleanup_pending, st.cleanup_attempts, st.cleanup_retry_at = None, 0, None
            return
        if not st.cleanup_attempts:
            self._event("Warning", "CleanupPending", f"will retry until done: {pending}")
        st.cleanup_attempts += 1
        delay = min(self.ctx.settings.tick_seconds * 2**st.cleanup_attempts, CLEANUP_RETRY_MAX)
        st.cleanup_pending = pending[:2000]
        st.cleanup_retry_at = self.now + dt.timedelta(seconds=delay)

    async def _retry_cleanup(self) -> None:
        st = self.status
        if st.cleanup_retry_at is not None and self.now < st.cleanup_retry_at:
            return
        await self._end_cleanup()

    async def _crashed(self, exc: Exception) -> None:
        """A tick raised something no step handles. A transient error is raised again (the handler
        retries next tick) until it has lasted ``transient_error_seconds``; anything else, or a
        transient error past that, aborts every node and fails the operation, naming the error."""
        st = self.status
        where = f"{self.obj.kind} {self.obj.namespace}/{self.obj.name}"
        if isinstance(exc, TRANSIENT_ERRORS):
            since = self.obj.failing_since or self.now
            failing = (self.now - since).total_seconds()
            if retry_later(exc, failing_for=failing, limit=self.ctx.settings.transient_error_seconds):
                raise exc
            message, reason = f"{where}: failing for {failing:.0f}s: {exc}", "TransientErrorLimit"
        else:
            message = f"{where}: unexpected error while reconciling: {type(exc).__name__}: {exc}"
            reason = "ReconcileError"
        self.log.error("operation.tick_failed", reason=reason, exc_info=exc)
        running = st.phase is not None and not st.phase.terminal and bool(st.nodes)
        self._finish(Phase.FAILED, message[:4000], reason=reason)
        if running:  # FAILED on record first, then the nodes hear the abort
            try:
                await self._publish()
                await self._abort_all(f"aborted: {message}")
            except Exception as abort_exc:
                self.log.warning("operation.abort_not_delivered", error=repr(abort_exc))

    def _backend_trouble(self, exc: TransientStorageError) -> None:
        """The backend did not answer this tick. Try again next tick, within a deadline."""
        st = self.status
        st.backend_unavailable_since = st.backend_unavailable_since or self.now
        away = (self.now - st.backend_unavailable_since).total_seconds()
        limit = self.ctx.settings.backend_unavailable_seconds
        if away > limit:
            self._finish(
                Phase.FAILED,
                f'backend "{self.op_spec.backend}" unavailable for {away:.0f}s: {exc}',
                reason="BackendUnavailable",
            )
        else:
            self._message = f"backend unavailable, retrying: {exc}"
            self.log.warning("operation.backend_unavailable", error=str(exc), seconds=round(away))

    async def delete(self) -> Outcome[StatusT]:
        """The object is being deleted: an unfinished operation (queued, starting or running) is
        canceled, everywhere, with one terminal Event; a finished one is left as it ended."""
        st = self.status
        if st.phase is None or not st.phase.terminal:
            if st.nodes:
                await self._abort_all(f"the {self.obj.kind} was deleted")
            self._finish(Phase.CANCELED, f"canceled: the {self.obj.kind} was deleted", reason="Canceled")
            await self._end_cleanup()
        elif st.cleanup_pending:  # one last try; the object goes either way, saying what is left
            await self._end_cleanup()
        if st.cleanup_pending:
            self._event(
                "Warning", "CleanupIncomplete", f"deleted before its cleanup was done: {st.cleanup_pending}"
            )
        return Outcome(status=st, events=self.events)

    # --- starting: the queue, the checks, prepare ----------------------------------------------

    async def _start(self) -> None:
        st = self.status
        await self._wait_for_turn()
        if st.phase in (None, Phase.QUEUED):
            st.phase = Phase.STARTED
            st.started_at = self.now
            self._event(
                "Normal",
                "Started",
                f'{self.noun} "{self.op_name}" of cluster "{self.op_spec.cluster}" started',
            )
        nodes = await self._begin()
        if self.deletion_requested():
            raise Stop  # nothing prepared yet; delete() cancels
        answers = await asyncio.gather(
            *(self.ctx.agents.prepare(ep, self._prepare_request(ep)) for ep in nodes), return_exceptions=True
        )
        st.nodes = self._initial_nodes(nodes)
        refusal: AgentError | None = None
        for ep, answer in zip(nodes, answers, strict=True):
            if isinstance(answer, OperationStatus):
                mirror(st.nodes[ep.name], answer)
            elif isinstance(answer, AgentError):
                st.nodes[ep.name].phase = NodePhase.FAILED.value
                st.nodes[ep.name].error = str(answer)
                refusal = refusal or answer
                if isinstance(answer, AgentUnreachable):
                    self._silent.add(ep.name)
            else:
                raise answer
        if refusal is not None:
            await self._requeue_or_fail(refusal, nodes)
        self._event("Normal", "Preparing", f"asked {len(nodes)} nodes to prepare {st.describe_collections()}")
        await self._publish()
        await self._advance({ep.name: ep for ep in nodes})

    @property
    def op_name(self) -> str:
        return self.op_id

    _selection: list[str] | None = None  # every collection, once _begin resolved them in this process

    def _selection_made(self) -> list[str]:
        """The collections ``_begin`` chose; prepare requests are sent in the same tick, after it."""
        if self._selection is None:
            raise RuntimeError("no collections chosen yet: _begin runs before any prepare request")
        return self._selection

    def _initial_nodes(self, nodes: list[NodeEndpoint]) -> dict[str, NodeStatus]:
        return {ep.name: NodeStatus(phase=NodePhase.PREPARING.value, pod_uid=ep.pod_uid) for ep in nodes}

    async def _wait_for_turn(self) -> None:
        grace = dt.timedelta(seconds=self.ctx.settings.unstatused_grace_seconds)
        fresh_since = (self.now - grace).strftime("%Y-%m-%dT%H:%M:%SZ")
        blocking = queue.blocker(self.obj.ref(), self.obj.peers, fresh_since=fresh_since)
        if blocking is None:
            return
        st = self.status
        if st.phase is not Phase.QUEUED:
            # Said once, when it is queued: rewriting the message whenever the queue advances would
            # cost every waiting operation one write per advance (quadratic in the queue's length).
            why = f'waiting for {blocking} to finish on cluster "{self.op_spec.cluster}"'
            st.phase = Phase.QUEUED
            self._event("Normal", "Queued", why)
            self._message = f"{why} (operations of a cluster run one at a time, in creation order)"
        created = dt.datetime.fromisoformat(self.obj.created.replace("Z", "+00:00"))
        if (self.now - created).total_seconds() > self.ctx.settings.queue_timeout_seconds:
            self._fail(
                f"waited more than {self.ctx.settings.queue_timeout_seconds:.0f}s for {blocking}",
                reason="QueueTimeout",
            )
        raise Stop

    async def _requeue_or_fail(self, refusal: AgentError, nodes: Sequence[NodeEndpoint] = ()) -> NoReturn:
        """A node busy with another Backup/Restore of this cluster means: not our turn after all
        (the queue index lagged). A holder the index does not know yet may be one it will know in a
        moment (objects applied together): that requeues too, for ``queue_index_grace_seconds``
        since this object was created. Anything else that refuses is a failure, on record before
        ``nodes`` (those already asked to prepare) hear the abort. Always raises ``Stop``."""
        known = {p.uid for p in self.obj.peers}
        created = (
            dt.datetime.fromisoformat(self.obj.created.replace("Z", "+00:00"))
            if self.obj.created
            else self.now
        )
        young = (self.now - created).total_seconds() < self.ctx.settings.queue_index_grace_seconds
        holder = refusal.holder_uid if isinstance(refusal, AgentRefused) and refusal.status == 409 else None
        if holder is not None and (holder in known or young):
            await self._abort_all(f"aborted: {refusal}", nodes, silent=self._silent)
            st = self.status
            st.phase, st.nodes, st.started_at = Phase.QUEUED, {}, None
            ref = next((p for p in self.obj.peers if p.uid == holder), None)
            whom = str(ref) if ref is not None else "the operation holding the node"
            # Kept while it waits (like the message of _wait_for_turn), so it names whom it waits for.
            self._message = (
                f'waiting for {whom} to finish on cluster "{self.op_spec.cluster}" '
                f"(a node was busy with it: {refusal})"
            )
            raise Stop
        self._finish(Phase.FAILED, str(refusal), reason="PrepareRefused")
        if nodes:
            await self._publish()
            await self._abort_all(f"aborted: {refusal}", nodes, silent=self._silent)
        raise Stop

    async def _ready_cluster(self) -> ClusterView:
        """Every pod of the cluster Ready, and every agent answering; waits (within a deadline) if not."""
        view = await self._cluster_or_fail()
        if not view.ready:
            self._wait_or_fail("cluster is not ready: " + "; ".join(view.problems), reason="ClusterNotReady")
        return view

    async def _node_infos(self, view: ClusterView) -> dict[str, Any]:
        infos = await asyncio.gather(
            *(self.ctx.agents.node_info(ep) for ep in view.nodes), return_exceptions=True
        )
        unreachable = [str(i) for i in infos if isinstance(i, BaseException)]
        if unreachable:
            self._wait_or_fail("agents not reachable: " + "; ".join(unreachable), reason="AgentUnreachable")
        for ep, info in zip(view.nodes, infos, strict=True):
            held = info.operation if isinstance(info, NodeInfo) else None
            # A node busy with another operation: queue (or fail) before touching any node.
            if held is not None and held.uid != self.obj.uid and not held.phase.terminal:
                await self._requeue_or_fail(
                    AgentRefused(
                        f'node "{ep.name}" is busy with {held.kind} "{held.id}" ({held.phase})',
                        status=409,
                        holder_uid=held.uid,
                    )
                )
        return {ep.name: info for ep, info in zip(view.nodes, infos, strict=True)}

    # --- running: observe, decide, act ---------------------------------------------------------

    async def _advance(self, endpoints: dict[str, NodeEndpoint] | None = None) -> None:
        st = self.status
        if endpoints is None:
            endpoints = await self._endpoints()
        deadline = time.monotonic() + PREPARE_POLL_BUDGET
        plan = NextPoll(frozenset(), pause=False)
        while True:
            asked = time.monotonic()
            wait = StatusQuery(
                wait_while=NodePhase.PREPARING,
                timeout_seconds=max(0.001, min(PREPARE_WAIT_SECONDS, deadline - asked)),
            )
            views = await asyncio.gather(
                *(
                    self._observe(name, endpoints.get(name), wait=wait if name in plan.long_poll else None)
                    for name in sorted(st.nodes)
                )
            )
            decision = self._decide(views)
            still_preparing = decision.step is Step.WAIT and st.phase is Phase.STARTED
            if not still_preparing or time.monotonic() > deadline or self.deletion_requested():
                break
            plan = next_poll(plan.long_poll, views)
            if plan.pause:
                await asyncio.sleep(max(0.0, PREPARE_POLL_INTERVAL - (time.monotonic() - asked)))
        sum_progress(self.status)
        await self._act(decision, endpoints)

    @property
    def _preparing_for(self) -> float:
        return (self.now - (self.status.started_at or self.now)).total_seconds()

    async def _act(self, decision: Decision, endpoints: dict[str, NodeEndpoint]) -> None:
        st = self.status
        match decision.step:
            case Step.WAIT:
                st.phase = decision.phase
            case Step.RECORD_COMMIT:
                await self._before_commit(endpoints)
                st.phase = decision.phase
                self._event("Normal", "Transferring", f"all {len(st.nodes)} nodes prepared; committing")
                # The decision must be on record before any node hears "commit"; once it is, commit
                # at once rather than a tick later. If it cannot be recorded now, the next tick will.
                if await self._publish():
                    await self._each(st.nodes, endpoints, self._commit_one)
            case Step.COMMIT:
                prepared = [n for n, s in st.nodes.items() if s.phase == NodePhase.PREPARED.value]
                await self._each(prepared, endpoints, self._commit_one)
            case Step.ABORT:
                reason = decision.reason or "aborted"
                # FAILED is on record before any node hears the abort, and a node that has not
                # been answering cannot delay it: it gets the abort with the short timeout.
                self._finish(Phase.FAILED, reason, reason="NodeFailed")
                await self._publish()
                await self._abort_all(f"aborted: {reason}", endpoints.values(), silent=self._silent)
            case Step.CANCEL:
                await self._abort_all("canceled by the user", endpoints.values())
                self._finish(Phase.CANCELED, "canceled: spec.cancel is true", reason="Canceled")
            case _:
                await self._act_more(decision, endpoints)

    async def _before_commit(self, endpoints: dict[str, NodeEndpoint]) -> None:
        """What must happen once every node is prepared, before the commit is recorded."""

    async def _commit_one(self, ep: NodeEndpoint) -> None:
        await self._step_one(ep, "commit")

    async def _step_one(self, ep: NodeEndpoint, step: str) -> None:
        try:
            answer = await self.ctx.agents.step(ep, self.op_id, step)
        except AgentError as exc:
            # The next tick observes the node again and decides; a refusal shows up as FAILED there.
            self.log.warning("operation.step_not_delivered", step=step, node=ep.name, error=str(exc))
            return
        mirror(self.status.nodes[ep.name], answer)

    async def _endpoints(self) -> dict[str, NodeEndpoint]:
        try:
            view = await self.ctx.discover(self.obj.namespace, self.op_spec.cluster)
        except SpecError:
            return {}  # the StatefulSet is gone: every node reads as silent, then failed
        return {ep.name: ep for ep in view.nodes}

    def _status_timeout(self, node: NodeStatus, asked_at: dt.datetime) -> float:
        """The request timeout, cut to what is left of the node's unreachable deadline (plus a
        little), so that a hung agent (it accepts connections, never answers) fails on time."""
        limit = self.ctx.settings.agent_unreachable_seconds
        left = limit - (asked_at - (node.unreachable_since or asked_at)).total_seconds()
        return min(self.ctx.settings.agent_request_timeout, max(left, 0.0) + 0.5)

    async def _observe(
        self, name: str, ep: NodeEndpoint | None, *, wait: StatusQuery | None = None
    ) -> NodeView:
        node = self.status.nodes[name]
        if ep is not None and node.pod_uid and ep.pod_uid != node.pod_uid:
            return NodeView(name, None, error=f'pod "{name}" was replaced while the {self.noun} ran')
        problem: str | None = None
        asked_at = dt.datetime.now(dt.UTC)
        if ep is None:
            problem = f'pod "{name}" is gone or not Ready'
        else:
            try:
                deadline = self._status_timeout(node, asked_at)
                answer = await self.ctx.agents.status(ep, self.op_id, deadline_seconds=deadline, wait=wait)
            except (AgentUnreachable, AgentRefused) as exc:
                problem = str(exc)
            else:
                node.unreachable_since = None
                if answer is None:
                    return await self._lost(name)
                mirror(node, answer)
                return NodeView(name, answer.phase, error=answer.error)
        node.unreachable_since = node.unreachable_since or asked_at
        self._silent.add(name)
        observed_at = dt.datetime.now(dt.UTC)
        silent = max((observed_at - node.unreachable_since).total_seconds(), 0.001)
        phase = NodePhase(node.phase) if node.phase in {p.value for p in NodePhase} else None
        return NodeView(name, phase, error=node.error, silent_for=silent, last_problem=problem)

    async def _each(
        self,
        names: Iterable[str],
        endpoints: dict[str, NodeEndpoint],
        fn: Callable[[NodeEndpoint], Awaitable[None]],
    ) -> None:
        await asyncio.gather(*(fn(endpoints[n]) for n in names if n in endpoints))

    async def _abort_all(
        self,
        reason: str,
        endpoints: Iterable[NodeEndpoint] | None = None,
        *,
        silent: Iterable[str] = (),
    ) -> None:
        """Aborts every node; those in ``silent`` (not answering) only get the short timeout."""
        if endpoints is None:
            endpoints = (await self._endpoints()).values()
        quick = set(silent)

        async def abort(ep: NodeEndpoint) -> None:
            try:
                answer = await self.ctx.agents.abort(ep, self.op_id, reason, quick=ep.name in quick)
            except AgentError as exc:
                # Its reservation expires by itself if it never committed; say so and move on.
                self.log.warning("operation.abort_not_delivered", node=ep.name, error=str(exc))
                return
            if answer is not None and answer.uid == self.obj.uid and ep.name in self.status.nodes:
                mirror(self.status.nodes[ep.name], answer)

        await asyncio.gather(*(abort(ep) for ep in endpoints))

    # --- the end -------------------------------------------------------------------------------

    def _finish(self, phase: Phase, error: str | None, *, reason: str | None) -> None:
        st = self.status
        st.phase = phase
        st.error = shorten(error, MESSAGE_MAX_BYTES) if error is not None else None
        st.completed_at = self.now
        self._failure_reason = reason
        if phase in (Phase.FAILED, Phase.CANCELED):
            # Until the end is recorded in the backend (this tick, or a retry), the object keeps its
            # timer: a status published before that, mid-tick, must not look finished to kopf.
            st.cleanup_pending = st.cleanup_pending or "recording the end in the backend"
        if phase is Phase.SUCCESS:
            self._event("Normal", "Succeeded", self._success_message())
        elif phase is Phase.CANCELED:
            self._event("Normal", "Canceled", error or "canceled")
        else:
            self._event("Warning", "Failed", error or "failed")

    def _success_message(self) -> str:
        st = self.status
        return f"{self.noun} complete: {len(st.nodes)} nodes, {st.describe_collections()}, {st.size}"

    def _fail(self, message: str, *, reason: str) -> NoReturn:
        self._finish(Phase.FAILED, message, reason=reason)
        raise Stop

    def _wait_or_fail(self, message: str, *, reason: str) -> None:
        started = self.status.started_at or self.now
        if (self.now - started).total_seconds() > self.ctx.settings.pods_ready_timeout_seconds:
            self._fail(message, reason=reason)
        self.log.info("operation.waiting", why=message)
        self._message = message
        raise Stop

    async def _cluster_or_fail(self) -> ClusterView:
        try:
            return await self.ctx.discover(self.obj.namespace, self.op_spec.cluster)
        except SpecError as exc:
            self._fail(str(exc), reason="InvalidSpec")
            raise  # unreachable: _fail raises

    def _open_storage(self) -> Storage:
        if self._storage is None:
            try:
                self._storage = self.ctx.storage(self.op_spec.backend, self.op_spec.config.path)
            except ShardkeeperError as exc:
                if self.status.phase is not None and self.status.phase.terminal:
                    raise Stop from exc  # a cleanup after the end: no second outcome, no second Event
                self._fail(str(exc), reason="BackendNotConfigured")
        assert self._storage is not None
        return self._storage

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
            await self.ctx.publish_status(self.plural, self.obj.namespace, self.obj.name, self.status.wire())
        except KubernetesUnavailable as exc:
            self.log.warning("operation.status_not_published", error=str(exc))
            return False
        return True

    def _event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))
        (self.log.warning if type_ == "Warning" else self.log.info)(
            "operation.event", reason=reason, message=message
        )
