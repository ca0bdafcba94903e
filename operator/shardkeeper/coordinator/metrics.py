"""The operator's Prometheus metrics (``prometheus-client``), served at ``:8471/metrics``.

Names follow Prometheus conventions: ``shardkeeper_`` prefix, base units (seconds, bytes),
``_total`` on counters, ``_timestamp_seconds`` on Unix times. Counters and histograms count what
this operator process saw end (they restart at zero with it, as counters do); the schedule gauges
are read from each schedule's status every tick, so they are right again within a tick after a
restart. Labels: ``kind`` (backup, restore), ``namespace``, ``cluster`` (the StatefulSet),
``schedule`` (empty for a Backup no schedule created), ``result`` (success, failed, canceled).
"""

from __future__ import annotations

import contextlib
import datetime as dt

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from shardkeeper.api.common import Phase
from shardkeeper.api.schedule import BackupScheduleStatus
from shardkeeper.api.status import OperationStatusBase

DEFAULT_PORT = 8471
PORT_ENV = "SHARDKEEPER_METRICS_PORT"

_OP = ["kind", "namespace", "cluster", "schedule"]
_SCHEDULE = ["namespace", "schedule"]
_RESULT = {Phase.SUCCESS: "success", Phase.FAILED: "failed", Phase.CANCELED: "canceled"}

OPERATIONS = Counter(
    "shardkeeper_operations_total", "Backups and Restores that ended, by result.", [*_OP, "result"]
)
DURATION = Histogram(
    "shardkeeper_operation_duration_seconds",
    "From start to end of a Backup or Restore that ended, waiting in the queue excluded.",
    ["kind", "namespace", "cluster", "result"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400),
)
LAST_ATTEMPT = Gauge(
    "shardkeeper_last_attempt_timestamp_seconds", "When the latest Backup or Restore ended, any result.", _OP
)
LAST_SUCCESS = Gauge(
    "shardkeeper_last_success_timestamp_seconds", "When the latest successful Backup or Restore ended.", _OP
)
TRANSFERRED = Counter(
    "shardkeeper_transferred_bytes_total",
    "Uncompressed bytes read (backup) or written (restore) by operations that succeeded.",
    ["kind", "namespace", "cluster"],
)
LAST_FAILURE = Gauge(
    "shardkeeper_last_failure_timestamp_seconds", "When the latest failed Backup or Restore ended.", _OP
)
_RUNNING = ["kind", "namespace", "name", "cluster"]
RUNNING_SINCE = Gauge(
    "shardkeeper_operation_started_timestamp_seconds",
    "When each running Backup or Restore started; the series goes when it ends.",
    _RUNNING,
)
AGENT_UNREACHABLE = Gauge(
    "shardkeeper_agent_unreachable",
    "1 while a running operation's agent on a node does not answer the operator.",
    [*_RUNNING, "node"],
)
BACKEND_UNAVAILABLE = Gauge(
    "shardkeeper_backend_unavailable",
    "1 while the operator cannot reach the backend of a running operation.",
    [*_RUNNING, "backend"],
)
OPERATOR_INFO = Gauge("shardkeeper_operator_info", "Always 1 while the operator runs.", ["version"])
STORED = Counter(
    "shardkeeper_stored_bytes_total",
    "Bytes successful backups wrote to their backend (after compression).",
    ["namespace", "cluster"],
)
QUEUED = Gauge(
    "shardkeeper_operations_queued",
    "Operations waiting for their cluster (queue depth).",
    ["namespace", "cluster"],
)

SCHEDULE_INFO = Gauge(
    "shardkeeper_schedule_info", "1 for every BackupSchedule the operator serves.", [*_SCHEDULE, "cluster"]
)
SCHEDULE_CREATED = Gauge(
    "shardkeeper_schedule_created_timestamp_seconds", "When the BackupSchedule was created.", _SCHEDULE
)
SCHEDULE_LAST_SUCCESS = Gauge(
    "shardkeeper_schedule_last_success_timestamp_seconds",
    "When the schedule's latest successful Backup completed (status.lastSuccessfulTime).",
    _SCHEDULE,
)
SCHEDULE_LAST_RUN = Gauge(
    "shardkeeper_schedule_last_run_timestamp_seconds",
    "The slot of the schedule's latest Backup (status.lastScheduleTime).",
    _SCHEDULE,
)
SCHEDULE_NEXT_RUN = Gauge(
    "shardkeeper_schedule_next_run_timestamp_seconds",
    "The schedule's next slot (status.nextScheduleTime).",
    _SCHEDULE,
)
SCHEDULE_INTERVAL = Gauge(
    "shardkeeper_schedule_interval_seconds", "Time between the schedule's next two slots.", _SCHEDULE
)
SCHEDULE_SUSPENDED = Gauge("shardkeeper_schedule_suspended", "1 while spec.suspend is true.", _SCHEDULE)
SCHEDULE_MISSED = Gauge(
    "shardkeeper_schedule_missed_runs",
    "Slots missed since the schedule was created (status.missedRuns).",
    _SCHEDULE,
)
SCHEDULE_BACKUPS = Gauge("shardkeeper_schedule_backups", "The schedule's Backups that exist now.", _SCHEDULE)
SCHEDULE_PRUNED = Gauge(
    "shardkeeper_schedule_pruned_backups", "Backups pruned by the schedule's retention so far.", _SCHEDULE
)
_SCHEDULE_GAUGES = (
    SCHEDULE_CREATED,
    SCHEDULE_LAST_SUCCESS,
    SCHEDULE_LAST_RUN,
    SCHEDULE_NEXT_RUN,
    SCHEDULE_INTERVAL,
    SCHEDULE_SUSPENDED,
    SCHEDULE_MISSED,
    SCHEDULE_BACKUPS,
    SCHEDULE_PRUNED,
)


def serve(port: int) -> None:
    """Serves /metrics on all interfaces in a daemon thread."""
    from shardkeeper import __version__

    OPERATOR_INFO.labels(__version__).set(1)
    start_http_server(port)


def operation_ended(
    kind: str, namespace: str, cluster: str, schedule: str, status: OperationStatusBase, now: dt.datetime
) -> None:
    """Counts a Backup or Restore that reached a terminal phase in this tick."""
    if status.phase is None or status.phase not in _RESULT:
        return
    result = _RESULT[status.phase]
    kind = kind.lower()
    OPERATIONS.labels(kind, namespace, cluster, schedule, result).inc()
    ended = (status.completed_at or now).timestamp()
    LAST_ATTEMPT.labels(kind, namespace, cluster, schedule).set(ended)
    if status.started_at is not None:
        DURATION.labels(kind, namespace, cluster, result).observe(
            max(0.0, ended - status.started_at.timestamp())
        )
    if status.phase is Phase.SUCCESS:
        LAST_SUCCESS.labels(kind, namespace, cluster, schedule).set(ended)
        TRANSFERRED.labels(kind, namespace, cluster).inc(status.bytes_total)
        stored = getattr(status, "stored_bytes", None)
        if kind == "backup" and stored is not None:
            STORED.labels(namespace, cluster).inc(stored)
    elif status.phase is Phase.FAILED:
        LAST_FAILURE.labels(kind, namespace, cluster, schedule).set(ended)


def operation_state(
    kind: str, namespace: str, name: str, cluster: str, backend: str, status: OperationStatusBase | None
) -> None:
    """The gauges of one operation while it runs; ``status`` None (or terminal) drops them."""
    kind = kind.lower()
    _drop_matching(AGENT_UNREACHABLE, (kind, namespace, name, cluster))
    _drop_matching(BACKEND_UNAVAILABLE, (kind, namespace, name, cluster))
    if status is None or status.phase is None or status.phase.terminal:
        _forget(RUNNING_SINCE, kind, namespace, name, cluster)
        return
    if status.started_at is not None:
        RUNNING_SINCE.labels(kind, namespace, name, cluster).set(status.started_at.timestamp())
    for node, node_status in status.nodes.items():
        if node_status.unreachable_since is not None:
            AGENT_UNREACHABLE.labels(kind, namespace, name, cluster, node).set(1)
    if status.backend_unavailable_since is not None:
        BACKEND_UNAVAILABLE.labels(kind, namespace, name, cluster, backend).set(1)


def queue_depth(namespace: str, cluster: str, queued: int) -> None:
    QUEUED.labels(namespace, cluster).set(queued)


def schedule_seen(
    namespace: str,
    name: str,
    *,
    cluster: str,
    created: dt.datetime,
    suspended: bool,
    interval: float | None,
    status: BackupScheduleStatus,
) -> None:
    """Mirrors one schedule's status into the schedule gauges."""
    SCHEDULE_INFO.labels(namespace, name, cluster).set(1)
    SCHEDULE_CREATED.labels(namespace, name).set(created.timestamp())
    SCHEDULE_SUSPENDED.labels(namespace, name).set(1 if suspended else 0)
    SCHEDULE_MISSED.labels(namespace, name).set(status.missed_runs)
    SCHEDULE_BACKUPS.labels(namespace, name).set(status.backups)
    SCHEDULE_PRUNED.labels(namespace, name).set(status.retention.pruned if status.retention else 0)
    for gauge, value in (
        (SCHEDULE_LAST_SUCCESS, status.last_successful_time),
        (SCHEDULE_LAST_RUN, status.last_schedule_time),
        (SCHEDULE_NEXT_RUN, status.next_schedule_time),
    ):
        if value is not None:
            gauge.labels(namespace, name).set(value.timestamp())
        else:
            _forget(gauge, namespace, name)
    if interval is not None:
        SCHEDULE_INTERVAL.labels(namespace, name).set(interval)


def schedule_gone(namespace: str, name: str) -> None:
    """Drops a deleted schedule's series, so that no alert keeps watching it."""
    for gauge in _SCHEDULE_GAUGES:
        _forget(gauge, namespace, name)
    _drop_matching(SCHEDULE_INFO, (namespace, name))


def _drop_matching(gauge: Gauge, prefix: tuple[str, ...]) -> None:
    """Removes every series of ``gauge`` whose first label values are ``prefix``."""
    for labels in list(gauge._metrics):  # prometheus-client has no public query for this
        if labels[: len(prefix)] == prefix:
            _forget(gauge, *labels)


def _forget(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
