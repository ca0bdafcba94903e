"""A retention policy: which finished backups to keep (``spec.retention`` of a BackupSchedule, and
the flags of ``shardkeeper backups prune``). How it decides is in ``coordinator.retention``."""

from __future__ import annotations

import datetime as dt
import re

from pydantic import Field, field_validator

from shardkeeper.api.common import Model

_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")
_UNIT_SECONDS = (7 * 86400, 86400, 3600, 60)
MAX_KEEP = 100_000


def parse_duration(text: str) -> dt.timedelta:
    """'30d', '2w', '36h', '1d12h', '90m' -> timedelta. ValueError on anything else or zero."""
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a duration such as 30d, 2w, 36h or 1d12h (units w, d, h, m)")
    seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _UNIT_SECONDS, strict=True) if n)
    if seconds == 0:
        raise ValueError(f"{text!r} is zero")
    return dt.timedelta(seconds=seconds)


class Retention(Model):
    """Which finished Backups to keep; the others are pruned (object and backend data).

    A successful backup is kept if any keep* rule keeps it (restic's forget policy; with no keep*
    rule, every one), unless it is older than maxAge; the newest minSuccessful are kept regardless.
    Of the failed and canceled attempts the newest keepFailed are kept. Unfinished ones are never
    touched, nor is a backup that a kept one depends on.
    """

    keep_last: int | None = Field(default=None, ge=0, le=MAX_KEEP, description="Keep the newest n.")
    keep_hourly: int | None = Field(
        default=None,
        ge=0,
        le=MAX_KEEP,
        description="For the newest n hours with a backup, keep the newest of each.",
    )
    keep_daily: int | None = Field(
        default=None,
        ge=0,
        le=MAX_KEEP,
        description="For the newest n days with a backup, keep the newest of each.",
    )
    keep_weekly: int | None = Field(
        default=None,
        ge=0,
        le=MAX_KEEP,
        description="For the newest n ISO weeks with a backup, keep the newest of each.",
    )
    keep_monthly: int | None = Field(
        default=None,
        ge=0,
        le=MAX_KEEP,
        description="For the newest n months with a backup, keep the newest of each.",
    )
    keep_yearly: int | None = Field(
        default=None,
        ge=0,
        le=MAX_KEEP,
        description="For the newest n years with a backup, keep the newest of each.",
    )
    max_age: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?$",
        description="Prune successful backups older than this (e.g. 30d, 2w, 36h), whatever the keep* "
        "rules say, except the minSuccessful newest.",
    )
    min_successful: int = Field(
        default=1,
        ge=0,
        le=MAX_KEEP,
        description="The newest n successful backups are never pruned, whatever the other rules say.",
    )
    keep_failed: int = Field(
        default=1, ge=0, le=MAX_KEEP, description="Keep the newest n failed or canceled attempts."
    )

    @field_validator("max_age")
    @classmethod
    def _age(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @property
    def max_age_delta(self) -> dt.timedelta | None:
        return parse_duration(self.max_age) if self.max_age else None

    @property
    def has_keep_rule(self) -> bool:
        rules = (self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly, self.keep_monthly)
        return any(n is not None for n in (*rules, self.keep_yearly))
