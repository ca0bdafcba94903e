"""The operator's metrics: what an ended operation and a schedule's status turn into."""

from __future__ import annotations

import datetime as dt

from prometheus_client import REGISTRY

from shardkeeper.api.common import Phase
from shardkeeper.api.schedule import BackupScheduleStatus, RetentionStatus
from shardkeeper.api.status import OperationStatusBase
from shardkeeper.coordinator import metrics

T0 = dt.datetime(2026, 11, 30, 1, 0, tzinfo=dt.UTC)


def value(metric: str, /, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, labels)


def test_an_ended_backup_counts_its_result_duration_bytes_and_times() -> None:
    labels = {"kind": "backup", "namespace": "m1", "cluster": "db", "schedule": "nightly"}
    ok = OperationStatusBase(
        phase=Phase.SUCCESS, started_at=T0, completed_at=T0 + dt.timedelta(seconds=90), bytes_total=1000
    )
    metrics.operation_ended("Backup", "m1", "db", "nightly", ok, T0)
    failed = OperationStatusBase(
        phase=Phase.FAILED, started_at=T0, completed_at=T0 + dt.timedelta(seconds=200)
    )
    metrics.operation_ended("Backup", "m1", "db", "nightly", failed, T0)
    assert value("shardkeeper_operations_total", **labels, result="success") == 1
    assert value("shardkeeper_operations_total", **labels, result="failed") == 1
    assert value("shardkeeper_last_success_timestamp_seconds", **labels) == (T0.timestamp() + 90)
    assert value("shardkeeper_last_attempt_timestamp_seconds", **labels) == (T0.timestamp() + 200)
    assert value("shardkeeper_transferred_bytes_total", kind="backup", namespace="m1", cluster="db") == 1000
    bucket = {"kind": "backup", "namespace": "m1", "cluster": "db", "result": "success"}
    assert value("shardkeeper_operation_duration_seconds_bucket", **bucket, le="60.0") == 0
    assert value("shardkeeper_operation_duration_seconds_bucket", **bucket, le="120.0") == 1


def test_a_successful_backup_counts_the_bytes_it_stored() -> None:
    from shardkeeper.api.backup import BackupStatus

    ok = BackupStatus(phase=Phase.SUCCESS, started_at=T0, completed_at=T0, bytes_total=1000, stored_bytes=300)
    metrics.operation_ended("Backup", "m5", "db", "", ok, T0)
    metrics.operation_ended("Backup", "m5", "db", "", ok, T0)
    assert value("shardkeeper_stored_bytes_total", namespace="m5", cluster="db") == 600


def test_a_running_phase_counts_nothing() -> None:
    metrics.operation_ended("Restore", "m2", "db", "", OperationStatusBase(phase=Phase.TRANSFERRING), T0)
    assert (
        value(
            "shardkeeper_operations_total",
            kind="restore",
            namespace="m2",
            cluster="db",
            schedule="",
            result="success",
        )
        is None
    )


def test_a_schedule_mirrors_its_status_and_a_deleted_one_leaves_no_series() -> None:
    status = BackupScheduleStatus(
        last_successful_time=T0,
        next_schedule_time=T0 + dt.timedelta(hours=1),
        missed_runs=2,
        backups=3,
        retention=RetentionStatus(pruned=4),
    )
    metrics.schedule_seen(
        "m3", "nightly", cluster="db", created=T0, suspended=False, interval=3600, status=status
    )
    s = {"namespace": "m3", "schedule": "nightly"}
    assert value("shardkeeper_schedule_last_success_timestamp_seconds", **s) == T0.timestamp()
    assert value("shardkeeper_schedule_interval_seconds", **s) == 3600
    assert value("shardkeeper_schedule_missed_runs", **s) == 2
    assert value("shardkeeper_schedule_backups", **s) == 3
    assert value("shardkeeper_schedule_pruned_backups", **s) == 4
    assert value("shardkeeper_schedule_suspended", **s) == 0
    assert value("shardkeeper_schedule_info", **s, cluster="db") == 1
    assert value("shardkeeper_schedule_last_run_timestamp_seconds", **s) is None
    metrics.schedule_gone("m3", "nightly")
    assert value("shardkeeper_schedule_last_success_timestamp_seconds", **s) is None
    assert value("shardkeeper_schedule_info", **s, cluster="db") is None


def test_a_running_operation_shows_its_start_and_troubles_until_it_ends() -> None:
    from shardkeeper.api.status import NodeStatus

    running = OperationStatusBase(
        phase=Phase.TRANSFERRING,
        started_at=T0,
        backend_unavailable_since=T0,
        nodes={"db-0": NodeStatus(unreachable_since=T0), "db-1": NodeStatus()},
    )
    metrics.operation_state("Backup", "m4", "b1", "db", "s3", running)
    op = {"kind": "backup", "namespace": "m4", "name": "b1", "cluster": "db"}
    assert value("shardkeeper_operation_started_timestamp_seconds", **op) == T0.timestamp()
    assert value("shardkeeper_agent_unreachable", **op, node="db-0") == 1
    assert value("shardkeeper_agent_unreachable", **op, node="db-1") is None
    assert value("shardkeeper_backend_unavailable", **op, backend="s3") == 1
    # The agent answers again, the backend comes back: the series go.
    metrics.operation_state("Backup", "m4", "b1", "db", "s3", OperationStatusBase(phase=Phase.TRANSFERRING))
    assert value("shardkeeper_agent_unreachable", **op, node="db-0") is None
    assert value("shardkeeper_backend_unavailable", **op, backend="s3") is None
    metrics.operation_state("Backup", "m4", "b1", "db", "s3", OperationStatusBase(phase=Phase.FAILED))
    assert value("shardkeeper_operation_started_timestamp_seconds", **op) is None
