from __future__ import annotations

from shardkeeper.api.common import Phase
from shardkeeper.coordinator.queue import OpRef, blocker


def op(name: str, created: str, phase: Phase | None, kind: str = "Backup") -> OpRef:
    return OpRef(kind=kind, namespace="ns", name=name, uid=f"uid-{kind}-{name}", created=created, phase=phase)


def test_alone_it_starts() -> None:
    me = op("a", "2026-01-01T00:00:00Z", None)
    assert blocker(me, [me]) is None


def test_waits_for_a_running_operation_even_a_younger_one() -> None:
    me = op("a", "2026-01-01T00:00:00Z", Phase.QUEUED)
    running = op("r", "2026-01-02T00:00:00Z", Phase.TRANSFERRING, kind="Restore")
    assert blocker(me, [me, running]) == running


def test_older_waiting_operations_go_first_in_creation_order() -> None:
    me = op("c", "2026-01-03T00:00:00Z", None)
    first = op("a", "2026-01-01T00:00:00Z", Phase.QUEUED)
    second = op("b", "2026-01-02T00:00:00Z", None)
    assert blocker(me, [second, me, first]) == first
    assert blocker(first, [second, me, first]) is None


def test_finished_operations_do_not_block() -> None:
    me = op("b", "2026-01-02T00:00:00Z", None)
    done = [op("a", "2026-01-01T00:00:00Z", p) for p in (Phase.SUCCESS, Phase.FAILED, Phase.CANCELED)]
    assert blocker(me, [me, *done]) is None


def test_an_operation_without_status_holds_the_queue_only_while_fresh() -> None:
    me = op("b", "2026-01-02T00:00:00Z", Phase.QUEUED)
    never_handled = op("a", "2026-01-01T00:00:00Z", None)
    assert blocker(me, [me, never_handled], fresh_since="2026-01-01T00:00:00Z") == never_handled
    assert blocker(me, [me, never_handled], fresh_since="2026-01-01T00:00:30Z") is None
