"""The two-phase commit decisions, one situation at a time."""

from __future__ import annotations

from shardkeeper.api.agent import NodePhase as N
from shardkeeper.api.common import Phase
from shardkeeper.coordinator.twophase import (
    Limits,
    NextPoll,
    NodeView,
    Step,
    decide,
    decide_restore,
    follow_on,
    follows,
    next_poll,
)

LIMITS = Limits(prepare_timeout=300, unreachable_timeout=60)


def _decide(phase: Phase, *nodes: NodeView, cancel: bool = False, age: float = 1.0):  # type: ignore[no-untyped-def]
    return decide(phase, nodes, cancel=cancel, preparing_for=age, limits=LIMITS)


def test_waits_while_some_node_prepares() -> None:
    d = _decide(Phase.STARTED, NodeView("a", N.PREPARED), NodeView("b", N.PREPARING))
    assert d.step is Step.WAIT and d.phase is Phase.STARTED


def test_commit_is_recorded_before_it_is_sent() -> None:
    d = _decide(Phase.STARTED, NodeView("a", N.PREPARED), NodeView("b", N.PREPARED))
    assert d.step is Step.RECORD_COMMIT and d.phase is Phase.TRANSFERRING
    d = _decide(Phase.TRANSFERRING, NodeView("a", N.PREPARED), NodeView("b", N.TRANSFERRING))
    assert d.step is Step.COMMIT


def test_no_commit_while_a_prepared_node_is_silent() -> None:
    d = _decide(Phase.STARTED, NodeView("a", N.PREPARED), NodeView("b", N.PREPARED, silent_for=5))
    assert d.step is Step.WAIT


def test_any_failure_aborts_everyone_with_that_nodes_reason() -> None:
    d = _decide(Phase.STARTED, NodeView("a", N.PREPARED), NodeView("b", N.FAILED, error="disk full"))
    assert d.step is Step.ABORT and d.phase is Phase.FAILED and d.reason == 'node "b": disk full'
    d = _decide(Phase.TRANSFERRING, NodeView("a", N.TRANSFERRING), NodeView("b", N.CANCELED, error="expired"))
    assert d.step is Step.ABORT and "expired" in (d.reason or "")


def test_a_node_that_lost_the_operation_fails_it() -> None:
    d = _decide(Phase.TRANSFERRING, NodeView("a", N.SUCCESS), NodeView("b", None))
    assert d.step is Step.ABORT and "no longer knows" in (d.reason or "")


def test_silence_is_tolerated_until_the_deadline() -> None:
    quiet = NodeView("b", N.TRANSFERRING, silent_for=59, last_problem="connection refused")
    assert _decide(Phase.TRANSFERRING, NodeView("a", N.SUCCESS), quiet).step is Step.WAIT
    gone = NodeView("b", N.TRANSFERRING, silent_for=61, last_problem="connection refused")
    d = _decide(Phase.TRANSFERRING, NodeView("a", N.SUCCESS), gone)
    assert d.step is Step.ABORT and "did not answer for 61s: connection refused" in (d.reason or "")


def test_prepare_has_a_deadline() -> None:
    d = _decide(Phase.STARTED, NodeView("a", N.PREPARED), NodeView("b", N.PREPARING), age=301)
    assert d.step is Step.ABORT and "['b'] did not prepare within 300s" in (d.reason or "")


def test_all_nodes_done_is_recorded_then_finalized() -> None:
    d = _decide(Phase.TRANSFERRING, NodeView("a", N.SUCCESS), NodeView("b", N.SUCCESS))
    assert d.step is Step.RECORD_TRANSFERRED and d.phase is Phase.TRANSFERRED
    d = _decide(Phase.TRANSFERRED, NodeView("a", N.SUCCESS))
    assert d.step is Step.FINISH and d.phase is Phase.SUCCESS


def test_cancel_wins_over_everything_but_a_finished_backup() -> None:
    assert _decide(Phase.TRANSFERRING, NodeView("a", N.FAILED), cancel=True).step is Step.CANCEL
    assert _decide(Phase.SUCCESS, NodeView("a", N.SUCCESS), cancel=True).step is Step.WAIT


def test_terminal_phases_do_nothing() -> None:
    for phase in (Phase.SUCCESS, Phase.FAILED, Phase.CANCELED):
        assert _decide(phase, NodeView("a", N.FAILED)).step is Step.WAIT


# --- restore -----------------------------------------------------------------------------------


def _restore(phase: Phase, *nodes: NodeView, cancel: bool = False, deleted: bool = False):  # type: ignore[no-untyped-def]
    return decide_restore(phase, nodes, cancel=cancel, preparing_for=1.0, limits=LIMITS, deleted=deleted)


def test_restore_moves_into_place_only_when_every_node_verified() -> None:
    d = _restore(Phase.TRANSFERRING, NodeView("a", N.TRANSFERRED), NodeView("b", N.TRANSFERRING))
    assert d.step is Step.WAIT
    d = _restore(Phase.TRANSFERRING, NodeView("a", N.TRANSFERRED), NodeView("b", N.TRANSFERRED))
    assert d.step is Step.RECORD_FINALIZE and d.phase is Phase.FINALIZING


def test_restore_finalizes_then_completes_then_finishes() -> None:
    d = _restore(Phase.FINALIZING, NodeView("a", N.FINALIZING), NodeView("b", N.TRANSFERRED))
    assert d.step is Step.FINALIZE
    d = _restore(Phase.FINALIZING, NodeView("a", N.FINALIZING), NodeView("b", N.FINALIZING))
    assert d.step is Step.COMPLETE
    d = _restore(Phase.FINALIZING, NodeView("a", N.SUCCESS), NodeView("b", N.FINALIZING))
    assert d.step is Step.COMPLETE
    d = _restore(Phase.FINALIZING, NodeView("a", N.SUCCESS), NodeView("b", N.SUCCESS))
    assert d.step is Step.FINISH and d.phase is Phase.SUCCESS


def test_restore_cancel_is_honoured_until_finalizing() -> None:
    assert _restore(Phase.TRANSFERRING, NodeView("a", N.TRANSFERRING), cancel=True).step is Step.CANCEL
    d = _restore(Phase.FINALIZING, NodeView("a", N.FINALIZING), cancel=True)
    assert d.step is Step.COMPLETE


def test_a_restore_deleted_while_a_node_answers_transferred_is_canceled() -> None:
    """No workload can have been told to load anything: COMPLETE needs every node past TRANSFERRED."""
    for others in (N.TRANSFERRED, N.FINALIZING):
        d = _restore(Phase.FINALIZING, NodeView("a", N.TRANSFERRED), NodeView("b", others), deleted=True)
        assert d.step is Step.CANCEL and d.phase is Phase.CANCELED


def test_a_restore_deleted_once_every_node_has_moved_is_finished() -> None:
    """COMPLETE may have been sent: the workloads may have loaded what was moved."""
    d = _restore(Phase.FINALIZING, NodeView("a", N.FINALIZING), NodeView("b", N.FINALIZING), deleted=True)
    assert d.step is Step.COMPLETE
    d = _restore(Phase.FINALIZING, NodeView("a", N.SUCCESS), NodeView("b", N.SUCCESS), deleted=True)
    assert d.step is Step.FINISH and d.phase is Phase.SUCCESS


def test_a_deleted_restore_does_not_read_a_silent_nodes_old_phase_as_transferred() -> None:
    """What a silent node last said may be stale (COMPLETE may have reached it since): only answers count."""
    silent = NodeView("b", N.TRANSFERRED, silent_for=5.0)
    d = _restore(Phase.FINALIZING, NodeView("a", N.FINALIZING), silent, deleted=True)
    assert d.step is Step.WAIT
    d = _restore(Phase.FINALIZING, NodeView("a", N.FINALIZING), NodeView("b", N.TRANSFERRED), deleted=True)
    assert d.step is Step.CANCEL


def test_a_deleted_restore_that_fails_is_aborted_like_any_other() -> None:
    d = _restore(
        Phase.FINALIZING, NodeView("a", N.TRANSFERRED), NodeView("b", N.FAILED, error="x"), deleted=True
    )
    assert d.step is Step.ABORT and d.phase is Phase.FAILED


def test_restore_failure_while_finalizing_aborts_everyone() -> None:
    d = _restore(
        Phase.FINALIZING, NodeView("a", N.FINALIZING), NodeView("b", N.FAILED, error="rename failed")
    )
    assert d.step is Step.ABORT and d.reason == 'node "b": rename failed'


# --- steps the nodes carry out at once, followed in the same tick (follows) ------------------------


def test_after_finalize_the_nodes_are_awaited_out_of_transferred() -> None:
    assert follows(Step.RECORD_FINALIZE) is N.TRANSFERRED
    assert follows(Step.FINALIZE) is N.TRANSFERRED


def test_after_complete_the_nodes_are_awaited_out_of_finalizing() -> None:
    assert follows(Step.COMPLETE) is N.FINALIZING


def test_every_other_step_is_left_to_the_next_tick() -> None:
    others = set(Step) - {Step.RECORD_FINALIZE, Step.FINALIZE, Step.COMPLETE}
    assert {follows(step) for step in others} == {None}


def _follow_chain(after: dict[N, N]) -> tuple[list[Step], Phase]:
    """The steps one tick takes from verified nodes, as ``running._follow`` takes them: ``after``
    is what a node does with each step within the long poll."""
    phase, nodes = Phase.TRANSFERRING, {"a": N.TRANSFERRED, "b": N.TRANSFERRED}
    d = _restore(phase, *(NodeView(n, p) for n, p in nodes.items()))
    steps = [d.step]
    while (leaving := follows(d.step)) is not None:
        phase = d.phase
        nodes = {n: after.get(p, p) if p is leaving else p for n, p in nodes.items()}
        d = _restore(phase, *(NodeView(n, p) for n, p in nodes.items()))
        if not follow_on(leaving, d):
            break
        steps.append(d.step)
    return steps, d.phase


def test_a_restore_whose_nodes_answer_at_once_goes_from_verified_to_success_in_one_tick() -> None:
    steps, phase = _follow_chain({N.TRANSFERRED: N.FINALIZING, N.FINALIZING: N.SUCCESS})
    assert steps == [Step.RECORD_FINALIZE, Step.COMPLETE, Step.FINISH]
    assert phase is Phase.SUCCESS


def test_a_workload_slow_to_load_leaves_the_rest_to_the_next_tick_without_repeating_complete() -> None:
    steps, _ = _follow_chain({N.TRANSFERRED: N.FINALIZING})  # complete is not done within the poll
    assert steps == [Step.RECORD_FINALIZE, Step.COMPLETE]


def test_a_node_that_has_not_moved_within_the_poll_is_not_sent_finalize_again_in_the_tick() -> None:
    steps, _ = _follow_chain({})
    assert steps == [Step.RECORD_FINALIZE]


def test_a_failure_seen_while_following_is_acted_on_at_once() -> None:
    d = _restore(Phase.FINALIZING, NodeView("a", N.FINALIZING), NodeView("b", N.FAILED, error="full"))
    assert follow_on(N.TRANSFERRED, d) and d.step is Step.ABORT


# --- asking the nodes again while they prepare (next_poll) -----------------------------------------


def _views(**phases: N | None) -> list[NodeView]:
    return [NodeView(name, phase) for name, phase in phases.items()]


def test_nodes_found_preparing_are_asked_at_once_with_a_long_poll() -> None:
    plan = next_poll(frozenset(), _views(a=N.PREPARING, b=N.PREPARED))
    assert plan == NextPoll(frozenset({"a"}), pause=False)


def test_a_long_polled_node_that_prepared_means_asking_again_at_once() -> None:
    plan = next_poll(frozenset({"a", "b"}), _views(a=N.PREPARED, b=N.PREPARING))
    assert plan == NextPoll(frozenset({"b"}), pause=False)


def test_a_long_polled_node_that_failed_means_asking_again_at_once() -> None:
    plan = next_poll(frozenset({"a"}), _views(a=N.FAILED, b=N.PREPARING))
    assert plan == NextPoll(frozenset({"b"}), pause=False)


def test_a_long_poll_that_moved_nothing_pauses_so_an_old_agent_is_not_hammered() -> None:
    # An agent without the long poll answers at once, still preparing: wait out the interval.
    plan = next_poll(frozenset({"a"}), _views(a=N.PREPARING, b=N.PREPARED))
    assert plan == NextPoll(frozenset({"a"}), pause=True)


def test_nobody_preparing_and_nothing_decided_pauses_rather_than_spins() -> None:
    # e.g. a node whose agent lost the operation, or did not answer: no long poll to wait on.
    plan = next_poll(frozenset(), _views(a=None, b=N.PREPARED))
    assert plan == NextPoll(frozenset(), pause=True)
