"""The agent's Prometheus metrics (``prometheus-client``), served at ``<listen host>:8471/metrics``
(``SHARDKEEPER_METRICS_PORT``; 0 turns them off). Without the agent token: they carry no data,
only counts, sizes and durations. Labels: ``kind`` (backup, restore), ``node`` (the pod)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

DEFAULT_PORT = 8471

TRANSFERRED = Counter(
    "shardkeeper_agent_transferred_bytes_total",
    "Uncompressed bytes this node read (backup) or wrote (restore).",
    ["kind", "node"],
)
OPERATIONS = Counter(
    "shardkeeper_agent_operations_total",
    "Operations this agent ended, by result.",
    ["kind", "node", "result"],
)
WRITE_PAUSE = Histogram(
    "shardkeeper_agent_write_pause_seconds",
    "How long the workload's writes were paused (or held) for a backup's snapshot.",
    ["node"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def serve(host: str, port: int) -> None:
    """Serves /metrics in a daemon thread."""
    start_http_server(port, addr=host)
