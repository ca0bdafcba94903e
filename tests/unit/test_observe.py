"""Folding the agents' answers into the status: one test per situation."""

from __future__ import annotations

from shardkeeper.api.agent import NodePhase, OperationStatus
from shardkeeper.api.backup import BackupStatus
from shardkeeper.api.status import MESSAGE_MAX_BYTES, WARNING_MAX_BYTES, WARNINGS_LISTED, NodeStatus
from shardkeeper.coordinator.observe import mirror, sum_progress


def _answer(**fields: object) -> OperationStatus:
    base: dict[str, object] = {
        "id": "b",
        "uid": "u",
        "kind": "backup",
        "node": "n-0",
        "phase": NodePhase.TRANSFERRING,
        "startedAt": "2026-11-30T08:00:00Z",
        "updatedAt": "2026-11-30T08:00:01Z",
    }
    return OperationStatus.model_validate({**base, **fields})


def test_an_answer_is_copied_into_its_node() -> None:
    node = NodeStatus()
    mirror(
        node, _answer(bytesDone=5, bytesTotal=10, filesDone=1, filesTotal=2, pauseMs=1.23456, warnings=["w"])
    )
    assert (node.phase, node.bytes_done, node.bytes_total, node.files_done, node.files_total) == (
        "TRANSFERRING",
        5,
        10,
        1,
        2,
    )
    assert node.pause_ms == 1.235 and node.warnings == ["w"]


def test_totals_are_the_sum_of_the_nodes_and_only_moving_nodes_count_for_the_rate() -> None:
    st = BackupStatus(
        nodes={
            "a": NodeStatus(
                bytes_done=1024, bytes_total=2048, files_done=1, files_total=2, bytes_per_second=100
            ),
            "b": NodeStatus(bytes_done=0, bytes_total=2048, files_done=0, files_total=3, bytes_reused=7),
        }
    )
    sum_progress(st)
    assert (st.bytes_done, st.bytes_total, st.files_done, st.files_total, st.bytes_reused) == (
        1024,
        4096,
        1,
        5,
        7,
    )
    assert (st.size, st.bytes_per_second, st.throughput) == ("4.0 KiB", 100, "100 B/s")


def test_no_moving_node_leaves_the_last_rate_in_place() -> None:
    st = BackupStatus(bytes_per_second=42, throughput="42 B/s", nodes={"a": NodeStatus()})
    sum_progress(st)
    assert (st.bytes_per_second, st.throughput) == (42, "42 B/s")


def test_an_answer_cannot_grow_the_status_past_its_bounds() -> None:
    """An agent's answer is an HTTP body: a 2 MB error or 10,000 warnings stay out of the status."""
    node = NodeStatus()
    mirror(node, _answer(phase="FAILED", error="x" * 2_000_000, warnings=["w" * 10_000] * 10_000))
    assert node.error is not None and len(node.error.encode()) <= MESSAGE_MAX_BYTES
    assert node.error.startswith("xxx") and node.error.endswith("xxx")
    assert len(node.warnings) == WARNINGS_LISTED + 1 and node.warnings[-1] == "... and 9990 more"
    assert all(len(w.encode()) <= WARNING_MAX_BYTES for w in node.warnings)
