"""The two-phase commit, as a pure function of what the coordinator last saw.

Each reconcile tick observes every node, then asks ``decide`` what to do. Everything the decision
needs is in the arguments (the phase recorded in the CR status and this tick's observations), so an
operator that restarts in any phase simply observes again and carries on; nothing lives in memory.

    STARTED       nodes preparing; all PREPARED        -> RECORD_COMMIT (phase TRANSFERRING)
    TRANSFERRING  nodes PREPARED                        -> COMMIT (idempotent, repeated until they move)
                  all SUCCESS                           -> RECORD_TRANSFERRED (phase TRANSFERRED)
    TRANSFERRED                                         -> FINISH (phase SUCCESS)
    any phase     a node FAILED/CANCELED/lost/silent    -> ABORT (phase FAILED)
    any phase     spec.cancel                           -> CANCEL (phase CANCELED)

The commit decision is recorded in the CR *before* any commit is sent: after a restart, a
TRANSFERRING phase means "commit", a STARTED phase means "may still abort". Each RECORD_ step's
next step follows in the same tick once the record is written (a backup's TRANSFERRED its FINISH,
unless the object was deleted or canceled meanwhile; a restore's FINALIZING its FINALIZE); the
table's own step is what a later tick, or a restarted operator, does.

A restore has two more steps, so that nothing becomes visible on any node before every node has
verified its data (``decide_restore``):

    TRANSFERRING  all TRANSFERRED (verified in staging)  -> RECORD_FINALIZE (phase FINALIZING)
    FINALIZING    deleted, a node answers TRANSFERRED     -> CANCEL (phase CANCELED)
                  nodes TRANSFERRED                       -> FINALIZE (move into place; repeated)
                  all FINALIZING (moved)                  -> COMPLETE (tell the workloads; repeated)
                  all SUCCESS                             -> FINISH (phase SUCCESS)

A failure before SUCCESS aborts everywhere, and an abort takes back what finalize moved. Cancel is
honoured until FINALIZING, as in the seed; from there on the restore is finished, not undone, since
a workload told to load what was moved (COMPLETE) cannot be made to forget it. A deletion is
honoured in FINALIZING as long as a node still answers TRANSFERRED: COMPLETE is sent only once every
node has answered FINALIZING or SUCCESS, and a node never goes back, so no workload has been told
anything yet and the abort takes back all that was moved. Otherwise the deletion waits for the end
(``RestoreReconciler.finishes_before_deletion``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto

from shardkeeper.api.agent import NodePhase
from shardkeeper.api.common import Phase


@dataclass(frozen=True)
class NodeView:
    name: str
    phase: NodePhase | None
    """None: the agent answered but does not know the operation (it restarted, or lost it)."""
    error: str | None = None
    silent_for: float = 0.0
    """Seconds since the agent last answered; 0 if it answered this tick."""
    last_problem: str | None = None


@dataclass(frozen=True)
class Limits:
    prepare_timeout: float
    unreachable_timeout: float


class Step(Enum):
    WAIT = auto()
    RECORD_COMMIT = auto()
    COMMIT = auto()
    RECORD_TRANSFERRED = auto()
    RECORD_FINALIZE = auto()
    FINALIZE = auto()
    COMPLETE = auto()
    FINISH = auto()
    ABORT = auto()
    CANCEL = auto()


@dataclass(frozen=True)
class Decision:
    step: Step
    phase: Phase
    reason: str | None = None


def _failure(nodes: Sequence[NodeView], limits: Limits) -> str | None:
    for node in sorted(nodes, key=lambda n: n.name):
        if node.phase in (NodePhase.FAILED, NodePhase.CANCELED):
            return f'node "{node.name}": {node.error or node.phase.value.lower()}'
        if node.silent_for > limits.unreachable_timeout:
            detail = f": {node.last_problem}" if node.last_problem else ""
            return f'node "{node.name}" did not answer for {node.silent_for:.0f}s{detail}'
        if node.phase is None and node.silent_for == 0:
            why = node.error or "its agent no longer knows this operation (the agent restarted?)"
            return f'node "{node.name}": {why}'
    return None


def decide(
    phase: Phase,
    nodes: Sequence[NodeView],
    *,
    cancel: bool,
    preparing_for: float,
    limits: Limits,
) -> Decision:
    """What to do this tick. ``preparing_for``: seconds since prepare was first sent."""
    if phase.terminal:
        return Decision(Step.WAIT, phase)
    if cancel:
        return Decision(Step.CANCEL, Phase.CANCELED, "canceled by spec.cancel")
    failure = _failure(nodes, limits)
    if failure is not None:
        return Decision(Step.ABORT, Phase.FAILED, failure)

    phases = [n.phase for n in nodes if n.silent_for == 0]
    everyone_answered = len(phases) == len(nodes)
    if phase is Phase.STARTED:
        if everyone_answered and all(p is NodePhase.PREPARED for p in phases):
            return Decision(Step.RECORD_COMMIT, Phase.TRANSFERRING, "every node is prepared")
        if preparing_for > limits.prepare_timeout:
            late = sorted(n.name for n in nodes if n.phase is not NodePhase.PREPARED)
            return Decision(
                Step.ABORT,
                Phase.FAILED,
                f"nodes {late} did not prepare within {limits.prepare_timeout:.0f}s",
            )
        return Decision(Step.WAIT, Phase.STARTED)
    if phase is Phase.TRANSFERRING:
        if everyone_answered and all(p is NodePhase.SUCCESS for p in phases):
            return Decision(Step.RECORD_TRANSFERRED, Phase.TRANSFERRED, "every node has uploaded its data")
        if any(p is NodePhase.PREPARED for p in phases):
            return Decision(Step.COMMIT, Phase.TRANSFERRING)
        return Decision(Step.WAIT, Phase.TRANSFERRING)
    if phase is Phase.TRANSFERRED:
        return Decision(Step.FINISH, Phase.SUCCESS)
    # CANCELLING (or a phase this version does not drive) ends canceled, never stuck.
    return Decision(Step.CANCEL, Phase.CANCELED, "canceled")


def decide_restore(
    phase: Phase,
    nodes: Sequence[NodeView],
    *,
    cancel: bool,
    preparing_for: float,
    limits: Limits,
    deleted: bool = False,
) -> Decision:
    """What to do this tick for a restore (see the module docstring). ``deleted``: the Restore is
    being deleted (only a FINALIZING one is still decided: the others were canceled)."""
    if phase.terminal:
        return Decision(Step.WAIT, phase)
    if cancel and phase is not Phase.FINALIZING:
        return Decision(Step.CANCEL, Phase.CANCELED, "canceled by spec.cancel")
    failure = _failure(nodes, limits)
    if failure is not None:
        return Decision(Step.ABORT, Phase.FAILED, failure)
    phases = [n.phase for n in nodes if n.silent_for == 0]
    everyone_answered = len(phases) == len(nodes)
    if phase is Phase.STARTED:
        return decide(Phase.STARTED, nodes, cancel=False, preparing_for=preparing_for, limits=limits)
    if phase is Phase.TRANSFERRING:
        if everyone_answered and all(p is NodePhase.TRANSFERRED for p in phases):
            return Decision(Step.RECORD_FINALIZE, Phase.FINALIZING, "every node has verified its data")
        if any(p is NodePhase.PREPARED for p in phases):
            return Decision(Step.COMMIT, Phase.TRANSFERRING)
        return Decision(Step.WAIT, Phase.TRANSFERRING)
    if phase is Phase.FINALIZING:
        if deleted and NodePhase.TRANSFERRED in phases:
            return Decision(Step.CANCEL, Phase.CANCELED, "no workload had been told to load its collections")
        if everyone_answered and all(p is NodePhase.SUCCESS for p in phases):
            return Decision(Step.FINISH, Phase.SUCCESS)
        if any(p is NodePhase.TRANSFERRED for p in phases):
            return Decision(Step.FINALIZE, Phase.FINALIZING)
        if everyone_answered and all(p in (NodePhase.FINALIZING, NodePhase.SUCCESS) for p in phases):
            return Decision(Step.COMPLETE, Phase.FINALIZING)
        return Decision(Step.WAIT, Phase.FINALIZING)
    return Decision(Step.CANCEL, Phase.CANCELED, "canceled")


def follows(step: Step) -> NodePhase | None:
    """After ``step``, the phase the nodes leave once they have carried it out, for the steps they
    carry out at once (pure; a restore's):

        RECORD_FINALIZE, FINALIZE   -> TRANSFERRED   (each moves its collections into place: renames)
        COMPLETE                    -> FINALIZING    (each tells its workload)
        any other step              -> None          (the next tick observes the nodes again)

    The reconciler then asks the nodes again within the same tick, with a long poll on that phase,
    and acts on the next decision at once: a restore ends in one tick, not three."""
    if step in (Step.RECORD_FINALIZE, Step.FINALIZE):
        return NodePhase.TRANSFERRED
    if step is Step.COMPLETE:
        return NodePhase.FINALIZING
    return None


def follow_on(leaving: NodePhase, decision: Decision) -> bool:
    """Whether to act in the same tick on ``decision``, made after waiting for the nodes to leave
    ``leaving`` (pure):

        the decision waits                                   -> no (the next tick)
        it would wait on ``leaving`` again (a node did not
        move within the poll: a workload slow to load)       -> no (the next tick), never a spin
        anything else (the next step, FINISH, ABORT)         -> yes"""
    return decision.step is not Step.WAIT and follows(decision.step) is not leaving


@dataclass(frozen=True)
class NextPoll:
    long_poll: frozenset[str]
    """Nodes to ask with a long poll next (they were preparing): each answers the moment it prepared."""
    pause: bool
    """Wait out the poll interval first: the last asking moved nothing (an agent answered at once
    although still preparing, a long poll timed out) and nobody new is to be asked with a long poll."""


def next_poll(asked: frozenset[str], views: Sequence[NodeView]) -> NextPoll:
    """How to ask the nodes again while they prepare (pure; ``asked``: the nodes just long-polled).

        a long-polled node moved on from PREPARING          -> ask again at once
        nodes preparing, none of them long-polled before    -> ask again at once, with a long poll
        otherwise (nothing moved; or nobody is preparing)   -> pause, then ask again

    So an agent that answers at once (one without the long poll) is asked no more often than it
    was polled, and the loop never spins."""
    preparing = frozenset(v.name for v in views if v.phase is NodePhase.PREPARING)
    moved = any(v.phase is not NodePhase.PREPARING for v in views if v.name in asked)
    return NextPoll(preparing, pause=not moved and not (preparing and not asked))
