"""What a BackupSchedule tick writes: its children as read from the index, the Backup it creates,
and the status after a decision."""

from __future__ import annotations

import datetime as dt

import pytest

from shardkeeper.api.common import Phase
from shardkeeper.api.schedule import BackupScheduleSpec, BackupScheduleStatus
from shardkeeper.coordinator.schedule import Action, Child, ScheduleDecision
from shardkeeper.coordinator.schedule_handlers import child_manifest, child_of, next_status

UTC = dt.UTC
SLOT = dt.datetime(2026, 11, 30, 9, 10, tzinfo=UTC)


def test_a_child_reads_its_slot_and_phase_and_garbage_reads_as_unknown() -> None:
    body = {
        "metadata": {"name": "n-1", "annotations": {"shardkeeper.io/scheduled-at": "2026-11-30T09:10:00Z"}},
        "status": {"phase": "SUCCESS", "completedAt": "2026-11-30T09:11:00Z"},
    }
    child = child_of(body)  # type: ignore[arg-type]
    assert child == Child("n-1", SLOT, Phase.SUCCESS, SLOT + dt.timedelta(minutes=1))
    assert not child.active
    odd = child_of(
        {  # type: ignore[arg-type]
            "metadata": {"name": "n-2", "annotations": {"shardkeeper.io/scheduled-at": "yesterday"}},
            "status": {"phase": "EXPLODED", "completedAt": 5},
        }
    )
    assert odd == Child("n-2", None, None, None) and odd.active


def test_the_child_is_the_template_named_after_its_slot_owned_by_the_schedule_with_only_our_label() -> None:
    spec = BackupScheduleSpec.model_validate(
        {"schedule": "@hourly", "template": {"backend": "s3", "cluster": "db", "deletionPolicy": "Delete"}}
    )
    m = child_manifest(schedule="nightly", namespace="ns", uid="u-1", spec=spec, slot=SLOT)
    assert m["metadata"]["name"] == "nightly-20261130t091000z"
    assert m["metadata"]["labels"] == {"shardkeeper.io/schedule": "nightly"}
    assert m["metadata"]["annotations"] == {"shardkeeper.io/scheduled-at": "2026-11-30T09:10:00Z"}
    assert m["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "shardkeeper.io/v1alpha1",
            "kind": "BackupSchedule",
            "name": "nightly",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert m["spec"]["backend"] == "s3" and m["spec"]["deletionPolicy"] == "Delete" and "id" not in m["spec"]


def test_status_after_creating_a_run_and_counting_misses() -> None:
    old = BackupScheduleStatus(missed_runs=2, last_successful_time=SLOT - dt.timedelta(hours=2))
    done = Child("n-a", SLOT - dt.timedelta(hours=1), Phase.SUCCESS, SLOT - dt.timedelta(minutes=50))
    failed = Child("n-b", SLOT - dt.timedelta(minutes=30), Phase.FAILED, SLOT - dt.timedelta(minutes=29))
    decision = ScheduleDecision(
        Action.CREATE,
        "due",
        slot=SLOT,
        missed=1,
        last_missed=SLOT - dt.timedelta(minutes=20),
        handled_until=SLOT,
        next_schedule_time=SLOT + dt.timedelta(hours=1),
    )
    st = next_status(old, decision, [done, failed], created="n-c", generation=3)
    assert st.missed_runs == 3 and st.last_missed_time == SLOT - dt.timedelta(minutes=20)
    assert st.last_schedule_time == SLOT and st.last_handled_time == SLOT
    assert st.next_schedule_time == SLOT + dt.timedelta(hours=1)
    assert st.active == ["n-c"] and st.backups == 3 and st.observed_generation == 3
    assert (st.last_successful_time, st.last_successful_backup) == (SLOT - dt.timedelta(minutes=50), "n-a")


def test_a_refused_or_failed_creation_leaves_the_last_schedule_time_and_success_is_never_moved_back() -> None:
    old = BackupScheduleStatus(
        last_schedule_time=SLOT, last_successful_time=SLOT, last_successful_backup="new"
    )
    older = Child("old", SLOT - dt.timedelta(hours=1), Phase.SUCCESS, SLOT - dt.timedelta(minutes=59))
    decision = ScheduleDecision(Action.WAIT, "waiting", next_schedule_time=SLOT + dt.timedelta(hours=1))
    st = next_status(old, decision, [older], created=None, generation=1)
    assert st.last_schedule_time == SLOT and st.last_successful_backup == "new" and st.active == []


def test_a_retry_is_named_after_the_failed_run_and_points_at_it() -> None:
    spec = BackupScheduleSpec.model_validate(
        {"schedule": "@hourly", "template": {"backend": "s3", "cluster": "db"}}
    )
    m = child_manifest(schedule="nightly", namespace="ns", uid="u-1", spec=spec, slot=SLOT, retry=True)
    assert m["metadata"]["name"] == "nightly-20261130t091000z-retry"
    assert m["metadata"]["annotations"]["shardkeeper.io/retry-of"] == "nightly-20261130t091000z"
    assert child_of(m).retry and child_of(m).slot == SLOT  # type: ignore[arg-type]


def test_the_test_clock_runs_rate_times_as_fast_and_rate_1_is_the_real_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shardkeeper.api.common import utcnow
    from shardkeeper.coordinator import schedule_handlers

    assert schedule_handlers.scaled_clock(1) is utcnow
    ticks = iter([100.0, 100.0, 110.0])
    monkeypatch.setattr(schedule_handlers.time, "monotonic", lambda: next(ticks))
    clock = schedule_handlers.scaled_clock(6)
    start = clock()
    assert (clock() - start).total_seconds() == 60
