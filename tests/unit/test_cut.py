"""Which cut a backup took (``coordinator.cut``), one situation of its table at a time; and how an
agent turns what a workload said about its hold into a window and a pause (``agent.hold``)."""

from __future__ import annotations

import datetime as dt

from shardkeeper.agent.hold import Hold
from shardkeeper.api.backup import BackupStatus
from shardkeeper.api.common import Consistency
from shardkeeper.api.hook import HeldWrites, HookFile, HookFileList
from shardkeeper.api.status import HoldWindow, NodeStatus
from shardkeeper.coordinator.cut import find_cut, record_cut

T0 = dt.datetime(2026, 11, 30, 8, 0, 0, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(seconds=10)


def _at(ms: float) -> dt.datetime:
    return T0 + dt.timedelta(milliseconds=ms)


def _w(start: float, end: float | None, *, expired: bool = False) -> HoldWindow:
    until = _at(end) if end is not None else None
    return HoldWindow(held_from=_at(start), held_until=until, measured_by="workload", ended_by_itself=expired)


def test_node_consistency_claims_no_cut_and_reports_the_spread() -> None:
    cut = find_cut(Consistency.NODE, {"a": _w(0, 3), "b": _w(12, 15)}, NOW)
    assert cut.consistent_at is None and cut.problem is None and cut.overlap_ms is None
    assert "within 12.0 ms" in cut.summary


def test_cluster_cut_is_the_latest_start_and_the_overlap_is_until_the_first_end() -> None:
    cut = find_cut(Consistency.CLUSTER, {"a": _w(0, 50), "b": _w(20, 40), "c": _w(10, 60)}, NOW)
    assert cut.problem is None
    assert cut.consistent_at == _at(20)
    assert cut.overlap_ms == 20.0


def test_cluster_without_a_hold_on_some_node_has_no_cut() -> None:
    cut = find_cut(Consistency.CLUSTER, {"a": _w(0, 50), "b": None}, NOW)
    assert cut.consistent_at is None
    assert cut.problem is not None and "['b']" in cut.problem and "no workload hook" in cut.problem


def test_cluster_with_a_hold_that_ended_by_itself_has_no_cut_even_if_clocks_overlap() -> None:
    cut = find_cut(Consistency.CLUSTER, {"a": _w(0, 50, expired=True), "b": _w(10, 60)}, NOW)
    assert cut.consistent_at is None
    assert cut.problem is not None and "['a']" in cut.problem and "by themselves" in cut.problem


def test_cluster_with_holds_that_do_not_overlap_names_both_nodes() -> None:
    cut = find_cut(Consistency.CLUSTER, {"a": _w(0, 10), "b": _w(10, 30), "c": _w(5, 40)}, NOW)
    assert cut.consistent_at is None
    assert cut.problem is not None
    assert 'node "a" resumed writes' in cut.problem and 'node "b" held them' in cut.problem


def test_a_hold_still_open_counts_until_now() -> None:
    cut = find_cut(Consistency.CLUSTER, {"a": _w(0, None), "b": _w(100, 200)}, NOW)
    assert cut.problem is None and cut.consistent_at == _at(100) and cut.overlap_ms == 100.0
    late = find_cut(Consistency.CLUSTER, {"a": _w(0, None), "b": _w(20_000, 20_100)}, NOW)
    assert late.problem is not None  # began after "now": not overlapping what is known


def test_record_cut_puts_the_cut_and_the_longest_pause_on_the_status() -> None:
    status = BackupStatus(
        nodes={
            "a": NodeStatus(pause_ms=4.5, hold=_w(0, 30)),
            "b": NodeStatus(pause_ms=7.25, hold=_w(5, 40)),
        }
    )
    cut = record_cut(status, Consistency.CLUSTER, NOW)
    assert cut.problem is None
    wire = status.wire()
    assert wire["consistentAt"] == _at(5).isoformat().replace("+00:00", "Z")
    assert wire["holdOverlapMs"] == 25.0 and wire["maxPauseMs"] == 7.25
    assert "25.0 ms" in str(wire["cut"])


def test_an_agent_believes_a_workload_that_reports_its_hold() -> None:
    listed = HeldWrites(held_from=_at(100), held_until=_at(103), held_ms=2.75)
    hold = Hold(listed=listed, asked_at=T0, answered_at=_at(150), asked_mono=0.0)
    assert hold.writes_resumed
    window = hold.window()
    assert (window.held_from, window.held_until, window.measured_by) == (_at(100), _at(103), "workload")
    assert hold.pause_ms() == 2.75  # known at once: writes resumed before the answer
    hold.released(HeldWrites(held_from=_at(100), held_until=_at(103), held_ms=2.75), _at(400))
    assert hold.pause_ms() == 2.75 and hold.window().held_until == _at(103)


def test_a_hold_keeps_the_times_of_an_answer_not_its_files() -> None:
    files = [HookFile(path=f"c/f{i}", immutable=True) for i in range(3)]
    listed = HookFileList(held_from=_at(100), held_until=_at(103), held_ms=2.75, files=files)
    hold = Hold(listed=listed, asked_at=T0)
    hold.released(HookFileList(held_from=_at(100), held_until=_at(103), files=files), _at(400))
    assert type(hold.listed) is HeldWrites and type(hold.ended) is HeldWrites
    assert hold.listed == HeldWrites(held_from=_at(100), held_until=_at(103), held_ms=2.75)
    assert hold.ended == HeldWrites(held_from=_at(100), held_until=_at(103))


def test_a_workload_hold_until_release_ends_with_the_release_answer() -> None:
    hold = Hold(listed=HeldWrites(held_from=_at(100)), asked_at=T0, answered_at=_at(150))
    assert not hold.writes_resumed and hold.pause_ms() is None and hold.window().held_until is None
    hold.released(HeldWrites(held_from=_at(100), held_until=_at(300), held_ms=200.0), _at(290))
    assert hold.window().held_until == _at(300) and hold.pause_ms() == 200.0
    expired = Hold(listed=HeldWrites(held_from=_at(100)), asked_at=T0)
    expired.released(HeldWrites(held_from=_at(100), held_until=_at(200), expired=True), _at(5000))
    assert expired.window().ended_by_itself


def test_a_silent_workload_gets_the_agents_inner_window_and_outer_pause() -> None:
    hold = Hold(listed=HeldWrites(), asked_at=T0, answered_at=_at(40), asked_mono=10.0)
    hold.released(HeldWrites(), _at(90))
    hold.release_answered_mono = 10.125
    window = hold.window()
    assert (window.held_from, window.held_until, window.measured_by) == (_at(40), _at(90), "agent")
    assert hold.pause_ms() == 125.0
