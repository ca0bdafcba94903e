"""The state and the shared steps of reconciling a Backup or a Restore (``operation``): what a
kind defines, reaching every node, ending, and reporting. ``starting`` and ``running`` add the
phases; ``operation.OperationReconciler`` puts them together behind ``tick`` and ``delete``."""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, Literal, NoReturn

import structlog

from shardkeeper.api.agent import (
    PrepareBackup,
    PrepareRestore,
)
from shardkeeper.api.common import Phase, utcnow
from shardkeeper.api.status import MESSAGE_MAX_BYTES
from shardkeeper.coordinator.agents import NodeEndpoint
from shardkeeper.coordinator.conditions import conditions_for
from shardkeeper.coordinator.context import OperatorContext
from shardkeeper.coordinator.events import shorten
from shardkeeper.coordinator.kube import ClusterView, KubernetesUnavailable, merge_patch
from shardkeeper.coordinator.objects import (
    Event,
    OperationObject,
    OperationSpec,
    SpecT,
    StatusT,
    Stop,
)
from shardkeeper.coordinator.observe import mirror
from shardkeeper.coordinator.twophase import Decision, NodeView
from shardkeeper.errors import (
    AgentError,
    ShardkeeperError,
    SpecError,
)
from shardkeeper.storage import Storage

log = structlog.get_logger(__name__)


class OperationBase(abc.ABC, Generic[SpecT, StatusT]):
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
        self.interrupted: Callable[[], bool] = lambda: False
        """True once the object is being deleted, or spec.cancel was set after the tick read it (the
        handler passes a live check): the tick then stops at its next step boundary and leaves the
        cancel to ``delete``, or to the next tick."""
        self.deleting = False
        """Set by ``delete``: this tick is the delete handler's, for an operation finished first."""
        self.written: dict[str, Any] = obj.status.wire()
        """The status as the API server has it, as far as this tick knows: as the tick found it,
        then as each ``_publish`` wrote it. Every write is a merge patch against it."""
        self.post_events: Callable[[list[Event]], Awaitable[None]] | None = None
        """Posts Events (the handler passes one): ``_publish`` starts posting those decided so far
        right after the status it wrote, so a crash later in the tick loses neither; the posting
        runs beside the tick (never delaying a commit or an abort) and ``posted`` awaits it. Unset,
        every Event waits for the end of the tick (``Outcome.events``)."""
        self._posting: list[asyncio.Task[None]] = []
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

    @abc.abstractmethod
    async def _advance(self, endpoints: dict[str, NodeEndpoint] | None = None) -> None:
        """Observes every node, decides (``twophase``) and acts (``running``)."""

    # --- every node ----------------------------------------------------------------------------

    async def _endpoints(self) -> dict[str, NodeEndpoint]:
        try:
            view = await self.ctx.discover(self.obj.namespace, self.op_spec.cluster)
        except SpecError:
            return {}  # the StatefulSet is gone: every node reads as silent, then failed
        return {ep.name: ep for ep in view.nodes}

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
        """Writes the status now rather than at the end of the tick (a field gone since the last
        write is removed; nothing is sent if nothing changed), then posts the Events decided so far.
        False if the status could not be written: the Events then wait for the end of the tick too."""
        self._refresh_conditions()
        new = self.status.wire()
        patch = merge_patch(self.written, new)
        try:
            if patch:
                await self.ctx.publish_status(self.plural, self.obj.namespace, self.obj.name, patch)
        except KubernetesUnavailable as exc:
            self.log.warning("operation.status_not_published", error=str(exc))
            return False
        self.written = new
        if self.post_events is not None and self.events:
            decided = list(self.events)
            self.events.clear()  # the tick's Outcome holds this list: what is posted now is not again
            after = self._posting[-1] if self._posting else None
            self._posting.append(asyncio.create_task(self._post_after(after, decided)))
        return True

    async def _post_after(self, earlier: asyncio.Task[None] | None, events: list[Event]) -> None:
        if earlier is not None:
            await earlier  # Events keep the order they were decided in
        assert self.post_events is not None
        await self.post_events(events)

    async def posted(self) -> None:
        """Waits until the Events started by mid-tick writes are posted (the handler, before it
        posts the rest). Posting never raises (``events.post`` logs a failure)."""
        await asyncio.gather(*self._posting, return_exceptions=True)
        self._posting.clear()

    def _event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))
        (self.log.warning if type_ == "Warning" else self.log.info)(
            "operation.event", reason=reason, message=message
        )
