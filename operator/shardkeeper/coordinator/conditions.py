"""Standard conditions (Complete, Failed) derived from the phase, for kubectl wait and GitOps tools."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from shardkeeper.api.common import Condition, Phase

COMPLETE, FAILED = "Complete", "Failed"


def set_condition(
    conditions: list[Condition],
    *,
    type_: str,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    generation: int | None,
    now: dt.datetime,
) -> list[Condition]:
    """Returns the list with ``type_`` set; the transition time moves only when the status does."""
    previous = next((c for c in conditions if c.type == type_), None)
    changed_at = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:32768],
        last_transition_time=changed_at,
        observed_generation=generation,
    )
    return [*(c for c in conditions if c.type != type_), updated]


def conditions_for(
    conditions: list[Condition],
    phase: Phase,
    *,
    error: str | None,
    failure_reason: str | None,
    generation: int | None,
    now: dt.datetime,
    message: str | None = None,
) -> list[Condition]:
    progress_reason = phase.value.capitalize()
    if phase is Phase.SUCCESS:
        complete = ("True", "Succeeded", "the operation completed successfully")
        failed = ("False", "Succeeded", "")
    elif phase is Phase.FAILED:
        complete = ("False", "Failed", error or "")
        failed = ("True", failure_reason or "Failed", error or "")
    elif phase is Phase.CANCELED:
        complete = ("False", "Canceled", error or "canceled")
        failed = ("True", "Canceled", error or "canceled")
    else:
        complete = ("False", progress_reason, message or f"in progress: {phase.value}")
        failed = ("False", progress_reason, "")
    for type_, (status, reason, message) in ((COMPLETE, complete), (FAILED, failed)):
        conditions = set_condition(
            conditions,
            type_=type_,
            status=status,  # type: ignore[arg-type]
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )
    return conditions
