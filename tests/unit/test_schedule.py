"""BackupSchedule decisions, one situation of the table in coordinator/schedule.py at a time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from shardkeeper.api.common import Phase
from shardkeeper.api.schedule import BackupScheduleSpec, BackupScheduleStatus, child_name
from shardkeeper.coordinator.schedule import (
    MAX_SLOTS_COUNTED,
    Action,
    Child,
    ScheduleDecision,
    decide,
)

UTC = dt.UTC
REPO = Path(__file__).resolve().parents[2]
CREATED = dt.datetime(2026, 11, 30, 9, 0, 30, tzinfo=UTC)


def t(hhmm: str, day: int = 30, second: int = 0) -> dt.datetime:
    hour, minute = (int(x) for x in hhmm.split(":"))
    return dt.datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


def spec(**fields: Any) -> BackupScheduleSpec:
    return BackupScheduleSpec.model_validate(
        {
            "schedule": "*/10 * * * *",
            "template": {"backend": "filesystem", "cluster": "db"},
            **fields,
        }
    )


def run(
    now: dt.datetime,
    *children: Child,
    status: BackupScheduleStatus | None = None,
    created: dt.datetime = CREATED,
    **fields: Any,
) -> ScheduleDecision:
    return decide(spec(**fields), status or BackupScheduleStatus(), children, created=created, now=now)


def done(slot: dt.datetime, phase: Phase = Phase.SUCCESS) -> Child:
    return Child(child_name("nightly", slot), slot, phase, completed_at=slot + dt.timedelta(minutes=2))


def test_no_slot_due_waits_until_the_next_one() -> None:
    d = run(t("09:05"))
    assert d.action is Action.WAIT and d.next_schedule_time == t("09:10")
    assert d.missed == 0 and d.handled_until is None


def test_the_first_slot_after_creation_runs_not_one_before_it() -> None:
    assert run(t("09:00", second=59)).action is Action.WAIT
    d = run(t("09:10", second=3))
    assert d.action is Action.CREATE and d.slot == t("09:10")
    assert d.handled_until == t("09:10") and d.next_schedule_time == t("09:20") and d.missed == 0


def test_a_slot_whose_backup_exists_is_not_created_again() -> None:
    # The operator created the 09:10 run, then died before writing status: the child is the record.
    d = run(t("09:11"), Child(child_name("nightly", t("09:10")), t("09:10"), None))
    assert d.action is Action.WAIT and d.next_schedule_time == t("09:20")


def test_status_alone_also_marks_a_slot_done() -> None:
    # The 09:10 run was created and later pruned (deleted); its slot stays done.
    d = run(t("09:15"), status=BackupScheduleStatus(last_schedule_time=t("09:10")))
    assert d.action is Action.WAIT


def test_suspended_passes_slots_over_without_counting_them() -> None:
    d = run(t("09:35"), suspend=True)
    assert d.action is Action.WAIT and d.missed == 0 and d.handled_until == t("09:30")
    assert d.next_schedule_time is None
    # Between slots nothing changes, so a suspended schedule's status is not rewritten every tick.
    quiet = run(t("09:36"), suspend=True, status=BackupScheduleStatus(last_handled_time=t("09:30")))
    assert quiet.handled_until is None
    # Resumed at 09:36: the slots passed over while suspended are neither run nor missed.
    resumed = run(t("09:36"), status=BackupScheduleStatus(last_handled_time=t("09:30")))
    assert resumed.action is Action.WAIT and resumed.missed == 0 and resumed.next_schedule_time == t("09:40")


def test_after_an_outage_older_slots_are_missed_and_only_the_newest_runs() -> None:
    status = BackupScheduleStatus(last_schedule_time=t("09:10"))
    d = run(t("09:52"), done(t("09:10")), status=status)
    assert d.action is Action.CREATE and d.slot == t("09:50")
    assert d.missed == 3 and d.last_missed == t("09:40")  # 09:20, 09:30, 09:40


def test_a_slot_past_the_starting_deadline_is_missed_too() -> None:
    d = run(t("09:12"), starting_deadline_seconds=60)
    assert d.action is Action.WAIT and d.missed == 1 and d.last_missed == t("09:10")
    assert d.handled_until == t("09:10") and d.next_schedule_time == t("09:20")
    # Within the deadline it runs, however late inside it.
    assert run(t("09:10", second=59), starting_deadline_seconds=60).action is Action.CREATE


def test_forbid_waits_for_the_unfinished_run() -> None:
    running = Child(child_name("nightly", t("09:10")), t("09:10"), Phase.TRANSFERRING)
    d = run(t("09:20", second=5), running)
    assert d.action is Action.WAIT and "Forbid" in d.reason and d.missed == 0
    assert d.handled_until is None and d.next_schedule_time == t("09:20")
    # It finishes: the slot that waited runs now.
    finished = Child(running.name, running.slot, Phase.SUCCESS)
    assert run(t("09:21"), finished).slot == t("09:20")


def test_forbid_blocked_past_the_deadline_is_a_miss() -> None:
    running = Child(child_name("nightly", t("09:10")), t("09:10"), Phase.TRANSFERRING)
    d = run(t("09:25"), running, starting_deadline_seconds=120)
    assert d.action is Action.WAIT and d.missed == 1 and d.last_missed == t("09:20")


def test_forbid_blocked_across_several_slots_counts_all_but_the_pending_one_once() -> None:
    running = Child(child_name("nightly", t("09:10")), t("09:10"), Phase.TRANSFERRING)
    d = run(t("09:41"), running)
    assert d.action is Action.WAIT and d.missed == 2 and d.handled_until == t("09:30")
    # The next tick starts from there: nothing is counted twice.
    again = run(t("09:42"), running, status=BackupScheduleStatus(last_handled_time=t("09:30")))
    assert again.missed == 0 and again.next_schedule_time == t("09:40")


def test_queue_creates_while_one_runs() -> None:
    running = Child(child_name("nightly", t("09:10")), t("09:10"), Phase.TRANSFERRING)
    d = run(t("09:20", second=5), running, concurrency_policy="Queue")
    assert d.action is Action.CREATE and d.slot == t("09:20")


def test_queue_keeps_at_most_one_run_waiting() -> None:
    running = Child(child_name("nightly", t("09:10")), t("09:10"), Phase.TRANSFERRING)
    waiting = Child(child_name("nightly", t("09:20")), t("09:20"), Phase.QUEUED)
    d = run(t("09:30", second=5), running, waiting, concurrency_policy="Queue")
    assert d.action is Action.WAIT and "already waiting" in d.reason


def test_failed_and_canceled_runs_do_not_block() -> None:
    failed = done(t("09:10"), Phase.FAILED)
    canceled = done(t("09:00"), Phase.CANCELED)
    assert run(t("09:20"), failed, canceled, created=t("08:55")).action is Action.CREATE


def test_time_zone_moves_the_slots_and_daylight_saving_runs_once() -> None:
    berlin = {"schedule": "30 2 * * *", "time_zone": "Europe/Berlin"}
    created = dt.datetime(2026, 11, 29, 12, tzinfo=UTC)
    d = run(dt.datetime(2026, 11, 30, 1, 31, tzinfo=UTC), created=created, **berlin)
    assert d.action is Action.CREATE and d.slot == dt.datetime(2026, 11, 30, 1, 30, tzinfo=UTC)
    # 2026-03-29 02:30 does not exist in Berlin (clocks jump 02:00 -> 03:00): one run that day, at 03:00.
    spring = dt.datetime(2026, 3, 28, 12, tzinfo=UTC)
    d = run(dt.datetime(2026, 3, 29, 2, 0, tzinfo=UTC), created=spring, **berlin)
    assert d.action is Action.CREATE and d.slot == dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    again = run(dt.datetime(2026, 3, 29, 5, 0, tzinfo=UTC), done(d.slot), created=spring, **berlin)  # type: ignore[arg-type]
    assert again.action is Action.WAIT


def test_a_long_outage_is_counted_up_to_a_bound_and_still_runs_the_newest_slot() -> None:
    created = t("00:00", day=1)
    d = run(t("09:00"), created=created, schedule="* * * * *")
    assert d.action is Action.CREATE and d.slot == t("09:00")
    assert d.missed == MAX_SLOTS_COUNTED


def test_child_names_are_the_slot_in_utc() -> None:
    slot = dt.datetime(2026, 11, 30, 3, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert child_name("nightly", slot) == "nightly-20261130t023000z"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"schedule": "61 * * * *"}, "schedule"),
        ({"schedule": "* * * * * *"}, "schedule"),
        ({"schedule": "@sometimes"}, "schedule"),
        ({"timeZone": "Mars/Olympus"}, "timeZone"),
        ({"timeZone": "../../etc/passwd"}, "timeZone"),
        ({"template": {"backend": "filesystem", "cluster": "db", "id": "x"}}, "template"),
        ({"template": {"backend": "filesystem", "cluster": "db", "cancel": True}}, "template"),
        ({"startingDeadlineSeconds": 0}, "startingDeadlineSeconds"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        spec(**fields)
    assert [e["loc"][0] for e in refused.value.errors()] == [field]


def test_the_example_schedule_is_valid() -> None:
    example = yaml.safe_load((REPO / "examples" / "schedule.yaml").read_text())
    parsed = BackupScheduleSpec.model_validate(example["spec"])
    assert parsed.time_zone == "Europe/Berlin" and parsed.template.cluster == "sampledb"


def failed_run(slot: dt.datetime, minutes_to_fail: int = 2) -> Child:
    return Child(
        child_name("nightly", slot), slot, Phase.FAILED, slot + dt.timedelta(minutes=minutes_to_fail)
    )


def test_without_retry_a_failed_run_waits_for_the_next_slot() -> None:
    d = run(t("09:15"), failed_run(t("09:10")))
    assert d.action is Action.WAIT and d.next_schedule_time == t("09:20")


def test_a_failed_run_is_retried_once_after_the_delay() -> None:
    failed = failed_run(t("09:10"))  # failed at 09:12
    early = run(t("09:13"), failed, retryAfterFailureSeconds=120)
    assert (
        early.action is Action.WAIT and early.next_schedule_time == t("09:14") and "retrying" in early.reason
    )
    d = run(t("09:14"), failed, retryAfterFailureSeconds=120)
    assert d.action is Action.CREATE and d.retry and d.slot == t("09:10")
    assert d.handled_until is None and d.missed == 0
    assert child_name("nightly", t("09:10"), retry=True) == "nightly-20261130t091000z-retry"
    # The retry failed too: no third attempt; the next slot is next.
    retried = Child("nightly-20261130t091000z-retry", t("09:10"), Phase.FAILED, t("09:16"), retry=True)
    again = run(t("09:19"), failed, retried, retryAfterFailureSeconds=120)
    assert again.action is Action.WAIT and again.next_schedule_time == t("09:20")


def test_no_retry_when_the_next_slot_comes_first() -> None:
    d = run(t("09:19"), failed_run(t("09:10")), retryAfterFailureSeconds=600)
    assert d.action is Action.WAIT and d.next_schedule_time == t("09:20") and "retry" not in d.reason
