"""What the reconciler learns from the agents, folded into the status. Pure: no I/O."""

from __future__ import annotations

from shardkeeper.api.agent import OperationStatus
from shardkeeper.api.common import human_bytes
from shardkeeper.api.status import (
    MESSAGE_MAX_BYTES,
    WARNING_MAX_BYTES,
    WARNINGS_LISTED,
    NodeStatus,
    OperationStatusBase,
)
from shardkeeper.coordinator.events import shorten


def mirror(node: NodeStatus, answer: OperationStatus) -> None:
    """Copies what a node's agent reported into its entry of the status. An agent's answer is an
    HTTP body: its error and warnings are bounded here, so no answer can grow the status past what
    the API server accepts."""
    node.phase = answer.phase.value
    node.error = shorten(answer.error, MESSAGE_MAX_BYTES) if answer.error is not None else None
    node.bytes_done, node.bytes_total = answer.bytes_done, answer.bytes_total
    node.files_done, node.files_total = answer.files_done, answer.files_total
    node.pause_ms = round(answer.pause_ms, 3) if answer.pause_ms is not None else None
    node.hold = answer.hold or node.hold
    node.workers = answer.workers
    node.bytes_per_second = answer.bytes_per_second
    node.warnings = [shorten(w, WARNING_MAX_BYTES) for w in answer.warnings[:WARNINGS_LISTED]]
    if len(answer.warnings) > WARNINGS_LISTED:
        node.warnings.append(f"... and {len(answer.warnings) - WARNINGS_LISTED} more")
    node.bytes_reused = answer.bytes_reused


def sum_progress(st: OperationStatusBase) -> None:
    """The operation's totals (bytes, files, reused bytes, size, rate) from its nodes'."""
    nodes = st.nodes.values()
    st.bytes_done = sum(n.bytes_done for n in nodes)
    st.bytes_total = sum(n.bytes_total for n in nodes)
    st.files_done = sum(n.files_done for n in nodes)
    st.files_total = sum(n.files_total for n in nodes)
    st.bytes_reused = sum(n.bytes_reused for n in nodes)
    st.size = human_bytes(st.bytes_total)
    moving = [n.bytes_per_second for n in nodes if n.bytes_per_second]
    if moving:
        st.bytes_per_second = sum(moving)
        st.throughput = f"{human_bytes(st.bytes_per_second)}/s"
