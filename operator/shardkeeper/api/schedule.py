"""The BackupSchedule custom resource: Backups created on a cron schedule from a template.

A schedule creates one Backup per slot of ``spec.schedule`` (a standard five-field cron expression,
or a macro such as ``@daily``), evaluated in ``spec.timeZone``. Each child is named
``<schedule>-<slot in UTC, ISO 8601 basic>`` (e.g. ``nightly-20261130t020000z``), so creating the
same slot twice is impossible: the API server answers 409 and the run is already there.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from enum import StrEnum
from typing import Any

from croniter import croniter
from pydantic import Field, field_validator

from shardkeeper import conventions as c
from shardkeeper.api.backup import BackupSpec
from shardkeeper.api.common import OPERATION_SPEC_RULES, Condition, Model
from shardkeeper.api.retention import Retention

#: A schedule's name is a DNS label (so it fits a label value); its children add 17 characters.
SCHEDULE_NAME_MAX = 63
CHILD_TIME_FORMAT = "%Y%m%dt%H%M%Sz"


class ConcurrencyPolicy(StrEnum):
    """What a slot does while an earlier run of the same schedule is still unfinished.

    ``Forbid``: the slot waits until that run ends (until ``startingDeadlineSeconds`` passes; then it
    is missed). ``Queue``: the run is created at once and waits in the cluster's queue; at most one
    run waits this way, a further slot while one waits is handled as under Forbid.
    """

    FORBID = "Forbid"
    QUEUE = "Queue"


#: Rules on the template, which is a Backup spec: a Backup's rules (they would be replaced, not
#: merged, by the field's own), and two more: the child's id is its name, and a new run is never
#: born canceled.
TEMPLATE_RULES: dict[str, Any] = {
    "x-kubernetes-validations": [
        *(r for r in OPERATION_SPEC_RULES["x-kubernetes-validations"] if r["fieldPath"] != ".cancel"),
        {
            "rule": "!has(self.id)",
            "message": "spec.template.id must not be set: each Backup's id is its name",
            "fieldPath": ".id",
            "reason": "FieldValueForbidden",
        },
        {
            "rule": "!has(self.cancel) || !self.cancel",
            "message": "spec.template.cancel must not be true",
            "fieldPath": ".cancel",
            "reason": "FieldValueForbidden",
        },
    ]
}


class BackupScheduleSpec(Model):
    """A BackupSchedule creates Backups from a template on a cron schedule.

    Every field may change at any time; a change applies from the next slot on.
    """

    schedule: str = Field(
        min_length=1,
        max_length=256,
        description="When to back up: a five-field cron expression (minute hour day-of-month month "
        "day-of-week) or a macro (@hourly, @daily, @weekly, @monthly, @yearly).",
    )
    time_zone: str = Field(
        default="UTC",
        max_length=64,
        description="IANA time zone the schedule is read in, e.g. 'Europe/Berlin'. Default UTC.",
    )
    suspend: bool = Field(
        default=False,
        description="True: create no new Backups (running ones go on). Slots that pass while "
        "suspended are not missed runs.",
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        default=ConcurrencyPolicy.FORBID,
        description="Forbid: a slot waits while an earlier run of this schedule is unfinished. "
        "Queue: the run is created at once and waits its turn in the cluster's queue.",
    )
    starting_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=31 * 24 * 3600,
        description="A run that cannot start within this many seconds of its slot is skipped and "
        "counted in status.missedRuns. Unset: the latest missed slot runs however late; earlier "
        "missed slots are always counted, never run (no burst of catch-up runs after an outage).",
    )
    retry_after_failure_seconds: int | None = Field(
        default=None,
        ge=0,
        le=7 * 24 * 3600,
        description="Unset: after a failed run the next slot is the next attempt. Set: one retry of "
        "the failed run this many seconds after it failed, if that is before the next slot.",
    )
    template: BackupSpec = Field(
        description="The spec of each Backup created; id and cancel may not be set.",
        json_schema_extra=TEMPLATE_RULES,
    )
    full_every: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Incremental backups between full ones: every fullEvery-th run is a full backup, "
        "the others build on this schedule's latest successful Backup (spec.incrementalBase). Unset "
        "or 1: every run is a full backup.",
    )
    retention: Retention | None = Field(
        default=None,
        description="Which of this schedule's Backups to keep; the others are pruned: the Backup object "
        "and its data in the backend (deletionPolicy Delete). Unset: every Backup is kept.",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5 and not value.startswith("@"):
            raise ValueError(f"{value!r} is not a five-field cron expression or a macro")
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone") from exc
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: BackupSpec) -> BackupSpec:
        if value.id is not None:
            raise ValueError("id must not be set: each Backup's id is its name")
        if value.cancel:
            raise ValueError("cancel must not be true")
        return value


class RetentionStatus(Model):
    """What spec.retention did and will do."""

    pruned: int = Field(default=0, description="Backups pruned by this schedule so far.")
    last_prune_time: dt.datetime | None = Field(
        default=None, description="When retention last deleted a Backup (RFC 3339)."
    )
    next_to_prune: list[str] = Field(
        default_factory=list,
        description="The Backups the policy prunes once the next run succeeds (if nothing else changes).",
    )


class BackupScheduleStatus(Model):
    """What the operator reports about a BackupSchedule."""

    last_schedule_time: dt.datetime | None = Field(
        default=None, description="The slot of the most recent Backup this schedule created (RFC 3339)."
    )
    last_successful_time: dt.datetime | None = Field(
        default=None,
        description="When the most recent successful Backup of this schedule completed (RFC 3339).",
    )
    last_successful_backup: str | None = Field(
        default=None, description="Name of the most recent successful Backup."
    )
    next_schedule_time: dt.datetime | None = Field(
        default=None,
        description="The next slot, or the slot waiting for an earlier run to finish; unset while "
        "suspended or invalid (RFC 3339).",
    )
    last_handled_time: dt.datetime | None = Field(
        default=None,
        description="Every slot up to this time has been run, missed or passed over while suspended "
        "(RFC 3339).",
    )
    active: list[str] = Field(
        default_factory=list, description="Backups of this schedule that have not finished."
    )
    missed_runs: int = Field(
        default=0, description="Slots skipped since the schedule was created (deadline passed, or blocked)."
    )
    last_missed_time: dt.datetime | None = Field(
        default=None, description="The most recent missed slot (RFC 3339)."
    )
    backups: int = Field(default=0, description="Backups of this schedule that exist now.")
    retention: RetentionStatus | None = None
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation the operator last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready: True while the schedule is valid and not suspended (reason Scheduled, the "
        "next run in its message). Stalled: True while the spec is invalid (reason InvalidSpec).",
    )


def child_name(schedule: str, slot: dt.datetime, *, retry: bool = False) -> str:
    """The name (and backup id) of the Backup for ``slot``: ``nightly-20261130t020000z``, and
    ``nightly-20261130t020000z-retry`` for the one retry of a failed run."""
    return f"{schedule}-{slot.astimezone(dt.UTC).strftime(CHILD_TIME_FORMAT)}" + ("-retry" if retry else "")


#: Label on every Backup a schedule created: the schedule's name.
SCHEDULE_LABEL = f"{c.GROUP}/schedule"
#: Annotation on every Backup a schedule created: its slot, RFC 3339 in UTC.
SCHEDULED_AT_ANNOTATION = f"{c.GROUP}/scheduled-at"
#: Annotation on the retry of a failed run: the failed run's name.
RETRY_OF_ANNOTATION = f"{c.GROUP}/retry-of"
