"""Conditions derived from the phase, for kubectl wait and GitOps tools.

``Complete``/``Failed`` are what ``kubectl wait`` users expect (a Job's). ``Ready``, ``Reconciling``
and ``Stalled`` follow kstatus, which Flux and Argo CD's generic health rely on: Reconciling is
True while the operation runs, Stalled is True once it can never complete (failed or canceled),
Ready is True only on success. ``Finished`` is True once the operation ended, whichever way
(reason ``Succeeded``, ``Failed`` or ``Canceled``): ``kubectl wait --for=condition=Finished`` returns
on either outcome, where ``--for=condition=Complete`` waits until its timeout on a failure. Every
condition carries the generation it was computed for.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from shardkeeper.api.common import Condition, Phase

COMPLETE, FAILED, FINISHED = "Complete", "Failed", "Finished"
READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"


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
        # failure_reason is the terminal reason: for a success, why it is one (e.g. Adopted)
        succeeded = failure_reason or "Succeeded"
        complete = ("True", succeeded, message or "the operation completed successfully")
        failed = ("False", succeeded, "")
    elif phase is Phase.FAILED:
        complete = ("False", "Failed", error or "")
        failed = ("True", failure_reason or "Failed", error or "")
    elif phase is Phase.CANCELED:
        complete = ("False", "Canceled", error or "canceled")
        failed = ("True", "Canceled", error or "canceled")
    else:
        complete = ("False", progress_reason, message or f"in progress: {phase.value}")
        failed = ("False", progress_reason, "")
    if phase is Phase.SUCCESS:
        ready = ("True", complete[1], complete[2])
    else:
        ready = ("False", complete[1], complete[2])
    running = not phase.terminal
    reconciling = ("True", progress_reason, complete[2]) if running else ("False", complete[1], "")
    stalled = (
        ("True", failed[1], failed[2])
        if phase in (Phase.FAILED, Phase.CANCELED)
        else ("False", failed[1], "")
    )
    outcome = {Phase.SUCCESS: "Succeeded", Phase.FAILED: "Failed", Phase.CANCELED: "Canceled"}.get(phase)
    finished = (
        ("True", outcome, f"{phase.value}: {complete[2]}") if outcome else ("False", progress_reason, "")
    )
    for type_, (status, reason, text) in (
        (COMPLETE, complete),
        (FINISHED, finished),
        (FAILED, failed),
        (READY, ready),
        (RECONCILING, reconciling),
        (STALLED, stalled),
    ):
        conditions = set_condition(
            conditions,
            type_=type_,
            status=status,  # type: ignore[arg-type]
            reason=reason,
            message=text,
            generation=generation,
            now=now,
        )
    return conditions
