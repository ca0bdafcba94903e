"""Starting an operation: its turn in the cluster's queue, the checks, and the prepare requests."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any, NoReturn

from shardkeeper.api.agent import (
    NodeInfo,
    NodePhase,
    OperationStatus,
)
from shardkeeper.api.common import Phase
from shardkeeper.api.status import NodeStatus
from shardkeeper.coordinator import queue
from shardkeeper.coordinator.agents import NodeEndpoint
from shardkeeper.coordinator.kube import ClusterView
from shardkeeper.coordinator.objects import (
    SpecT,
    StatusT,
    Stop,
)
from shardkeeper.coordinator.observe import mirror
from shardkeeper.coordinator.operation_base import OperationBase
from shardkeeper.errors import (
    AgentError,
    AgentRefused,
    AgentUnreachable,
)


class Starting(OperationBase[SpecT, StatusT]):
    """Waits for the operation's turn, checks what can be checked before any node is touched
    (``_begin``), asks every node to prepare, then hands over to ``_advance``."""

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
        if self.interrupted():
            raise Stop  # nothing prepared yet; delete() or the next tick cancels
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
