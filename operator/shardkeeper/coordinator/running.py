"""Running an operation: observe every node, decide (``twophase``), act."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from shardkeeper.api.agent import (
    NodePhase,
    StatusQuery,
)
from shardkeeper.api.common import Phase
from shardkeeper.api.status import NodeStatus
from shardkeeper.coordinator.agents import NodeEndpoint
from shardkeeper.coordinator.objects import (
    SpecT,
    StatusT,
)
from shardkeeper.coordinator.observe import mirror, sum_progress
from shardkeeper.coordinator.operation_base import OperationBase
from shardkeeper.coordinator.twophase import (
    Decision,
    NextPoll,
    NodeView,
    Step,
    follow_on,
    follows,
    next_poll,
)
from shardkeeper.errors import (
    AgentError,
    AgentRefused,
    AgentUnreachable,
)

#: While nodes prepare, the reconciler keeps asking them within one tick, so that a cluster-wide
#: write hold ends as soon as the last node has frozen, not a whole tick later. A node still
#: preparing is asked with a long poll (``StatusQuery``): its agent answers the moment it has
#: prepared, or after PREPARE_WAIT_SECONDS. An agent that answers at once (one without the long
#: poll) is asked no more often than every PREPARE_POLL_INTERVAL. The nodes' answers are awaited
#: together, so a node that fails while another is long-polled is acted on within
#: PREPARE_WAIT_SECONDS (and a silent node's deadline stretches by at most that): kept short.
PREPARE_POLL_INTERVAL = 0.05
PREPARE_WAIT_SECONDS = 0.2
PREPARE_POLL_BUDGET = 5.0
#: After a step the nodes carry out at once (``twophase.follows``: a restore's finalize and
#: complete), they are asked again within the tick, each with a long poll of at most this long, and
#: the next step follows at once; a node still busy after it (a workload slow to load) is left to the
#: next tick. Within the same PREPARE_POLL_BUDGET per tick.
FOLLOW_WAIT_SECONDS = 1.0


class Running(OperationBase[SpecT, StatusT]):
    """Observes every node (a long poll while they prepare), asks the kind's ``_decide``, and acts."""

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
            if not still_preparing or time.monotonic() > deadline or self.interrupted():
                break
            plan = next_poll(plan.long_poll, views)
            if plan.pause:
                await asyncio.sleep(max(0.0, PREPARE_POLL_INTERVAL - (time.monotonic() - asked)))
        sum_progress(self.status)
        await self._act(decision, endpoints)
        await self._follow(decision, endpoints, deadline)

    async def _follow(self, decision: Decision, endpoints: dict[str, NodeEndpoint], deadline: float) -> None:
        """Takes the steps that follow one the nodes carry out at once (``twophase.follows``) in
        this tick: asks every node again with a long poll on the phase it leaves, decides and acts,
        until a decision waits, or would wait on the same phase again (a node did not move within
        the poll), nothing follows, the operation ended, the object was deleted or canceled since
        the tick read it, or past ``deadline`` (monotonic). A node that does not answer is asked with
        the usual request timeout, as every observation is, so a tick can outlast the deadline by it."""
        st = self.status
        while (leaving := follows(decision.step)) is not None and not self.interrupted():
            left = deadline - time.monotonic()
            if left <= 0 or (st.phase is not None and st.phase.terminal):
                return
            wait = StatusQuery(wait_while=leaving, timeout_seconds=min(FOLLOW_WAIT_SECONDS, left))
            views = await asyncio.gather(
                *(self._observe(name, endpoints.get(name), wait=wait) for name in sorted(st.nodes))
            )
            decision = self._decide(views)
            if not follow_on(leaving, decision) or self.interrupted():
                return  # a node is still busy (a workload loading), or the user acted: the next tick
            sum_progress(st)
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
                if self.deleting:  # a restore deleted while finalizing, before anything was loaded
                    why = f"canceled: the {self.obj.kind} was deleted ({decision.reason or 'canceled'})"
                    await self._abort_all(why, endpoints.values())
                else:
                    why = "canceled: spec.cancel is true"
                    await self._abort_all("canceled by the user", endpoints.values())
                self._finish(Phase.CANCELED, why, reason="Canceled")
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
