"""kopf handlers for BackupSchedules: observe, ask ``schedule.decide``, create the Backup, write status.

An index of every Backup by the schedule that created it (label ``shardkeeper.io/schedule``) gives
each tick the children without an API call. The index may lag a creation by a moment; that is
harmless, because a child's name is its slot and the API server refuses a second one (409).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import kopf
import structlog
from pydantic import ValidationError

from shardkeeper import conventions as c
from shardkeeper.api.backup import BackupSpec
from shardkeeper.api.common import Phase, error_text, utcnow
from shardkeeper.api.schedule import (
    RETRY_OF_ANNOTATION,
    SCHEDULE_LABEL,
    SCHEDULED_AT_ANNOTATION,
    BackupScheduleSpec,
    BackupScheduleStatus,
    child_name,
)
from shardkeeper.coordinator import events as k8s_events
from shardkeeper.coordinator import metrics
from shardkeeper.coordinator.conditions import READY, STALLED, set_condition
from shardkeeper.coordinator.context import OperatorContext
from shardkeeper.coordinator.kube import KubernetesUnavailable
from shardkeeper.coordinator.schedule import (
    Action,
    Child,
    ScheduleDecision,
    decide,
    incremental_base,
    next_slot,
    storage_of,
)
from shardkeeper.coordinator.schedule_kube import ChildRefused, create_backup
from shardkeeper.coordinator.schedule_retention import apply_retention

log = structlog.get_logger(__name__)
INDEX = "backups_by_schedule"
Clock = Callable[[], dt.datetime]


def _time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def child_of(body: kopf.Body) -> Child:
    """A Backup as the schedule sees it; whatever is unreadable reads as unknown, never as a crash."""
    meta, status = body.get("metadata", {}), body.get("status") or {}
    phase = status.get("phase")
    owner: dict[str, Any] = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), {})
    return Child(
        name=meta.get("name", ""),
        slot=_time((meta.get("annotations") or {}).get(SCHEDULED_AT_ANNOTATION)),
        retry=RETRY_OF_ANNOTATION in (meta.get("annotations") or {}),
        phase=Phase(phase) if phase in {p.value for p in Phase} else None,
        completed_at=_time(status.get("completedAt")),
        created=_time(meta.get("creationTimestamp")),
        deleting=bool(meta.get("deletionTimestamp")),
        owner_uid=owner.get("uid"),
        deletion_policy=(body.get("spec") or {}).get("deletionPolicy"),
        incremental_base=(body.get("spec") or {}).get("incrementalBase"),
        storage=_storage_of(body.get("spec") or {}),
    )


def _storage_of(spec: dict[str, Any]) -> tuple[str, ...]:
    try:
        return storage_of(BackupSpec.model_validate(spec))
    except ValidationError:
        return ()


def child_manifest(
    *,
    schedule: str,
    namespace: str,
    uid: str,
    spec: BackupScheduleSpec,
    slot: dt.datetime,
    retry: bool = False,
    base: str | None = None,
) -> dict[str, Any]:
    """The Backup for ``slot``: the template, named after the slot, owned by the schedule.

    Only our own label is set: copying the schedule's labels would copy a GitOps tool's ownership
    label too, and that tool would then prune the Backups it does not know."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.BACKUP_KIND,
        "metadata": {
            "name": child_name(schedule, slot, retry=retry),
            "namespace": namespace,
            "labels": {SCHEDULE_LABEL: schedule},
            "annotations": {
                SCHEDULED_AT_ANNOTATION: _iso(slot),
                **({RETRY_OF_ANNOTATION: child_name(schedule, slot)} if retry else {}),
            },
            "ownerReferences": [
                {
                    "apiVersion": c.API_VERSION,
                    "kind": c.SCHEDULE_KIND,
                    "name": schedule,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {**spec.template.wire(), **({"incrementalBase": base} if base else {})},
    }


def next_status(
    old: BackupScheduleStatus,
    decision: ScheduleDecision,
    children: Sequence[Child],
    *,
    created: str | None,
    generation: int | None,
) -> BackupScheduleStatus:
    """The status after ``decision`` was carried out; ``created``: the Backup made this tick, if any."""
    st = old.model_copy(deep=True)
    st.observed_generation = generation
    if decision.missed:
        st.missed_runs += decision.missed
        st.last_missed_time = decision.last_missed or st.last_missed_time
    if decision.handled_until is not None:
        st.last_handled_time = max(decision.handled_until, st.last_handled_time or decision.handled_until)
    if created is not None and decision.slot is not None:
        st.last_schedule_time = decision.slot
    st.next_schedule_time = decision.next_schedule_time
    names = {child.name for child in children if not child.deleting}
    active = {child.name for child in children if child.active and not child.deleting}
    if created is not None:
        names.add(created)
        active.add(created)
    st.active = sorted(active)
    st.backups = len(names)
    successes = [
        (ch.completed_at, ch.name) for ch in children if ch.phase is Phase.SUCCESS and ch.completed_at
    ]
    if successes:
        when, name = max(successes)
        if st.last_successful_time is None or when > st.last_successful_time:
            st.last_successful_time, st.last_successful_backup = when, name
    return st


def _ready(
    st: BackupScheduleStatus, spec: BackupScheduleSpec, *, generation: int | None, now: dt.datetime
) -> None:
    if spec.suspend:
        ready = ("False", "Suspended", "spec.suspend is true: no new Backups are created")
    else:
        when = st.next_schedule_time.isoformat().replace("+00:00", "Z") if st.next_schedule_time else "?"
        ready = ("True", "Scheduled", f"next run at {when}")
    for type_, (status, reason, message) in ((READY, ready), (STALLED, ("False", "Valid", ""))):
        st.conditions = set_condition(
            st.conditions,
            type_=type_,
            status=status,  # type: ignore[arg-type]
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )


def _invalid(
    old: BackupScheduleStatus, error: ValidationError, generation: int | None, now: dt.datetime
) -> BackupScheduleStatus:
    problems = "; ".join(
        f"spec.{'.'.join(str(p) for p in e['loc'])}: {error_text(e)}" for e in error.errors(include_url=False)
    )
    st = old.model_copy(deep=True)
    st.observed_generation, st.next_schedule_time = generation, None
    for type_, status in ((READY, "False"), (STALLED, "True")):
        st.conditions = set_condition(
            st.conditions,
            type_=type_,
            status=status,  # type: ignore[arg-type]
            reason="InvalidSpec",
            message=problems,
            generation=generation,
            now=now,
        )
    return st


#: Test-only: the schedule clock runs this many times as fast as real time (default 1), so that
#: tests see a schedule "every minute" run five times and its retention act in seconds.
CLOCK_RATE_ENV = "SHARDKEEPER_SCHEDULE_CLOCK_RATE"


def scaled_clock(rate: float) -> Clock:
    """A clock that starts now and runs ``rate`` times as fast as real time."""
    if rate == 1:
        return utcnow
    origin, started = dt.datetime.now(dt.UTC), time.monotonic()
    return lambda: origin + dt.timedelta(seconds=(time.monotonic() - started) * rate)


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext, *, clock: Clock | None = None) -> None:
    interval = ctx.settings.tick_seconds
    if clock is None:
        rate = float(os.environ.get(CLOCK_RATE_ENV) or 1)
        if not 0 < rate <= 3600:
            raise SystemExit(f"{CLOCK_RATE_ENV} must be in (0, 3600], not {rate}")
        clock = scaled_clock(rate)

    @kopf.index(
        c.GROUP,
        c.VERSION,
        c.BACKUP_PLURAL,
        id=INDEX,
        registry=registry,
        labels={SCHEDULE_LABEL: kopf.PRESENT},
    )
    def by_schedule(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> Any:
        return {(namespace, labels.get(SCHEDULE_LABEL)): child_of(body)}

    @kopf.timer(
        c.GROUP,
        c.VERSION,
        c.SCHEDULE_PLURAL,
        id="reconcile_backupschedule",
        interval=interval,
        initial_delay=0.1,
        backoff=interval,
        registry=registry,
    )
    async def reconcile(
        body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, namespace: str | None, **kwargs: Any
    ) -> None:
        meta = body.get("metadata", {})
        name, uid, generation = meta["name"], meta["uid"], meta.get("generation")
        now = clock()
        try:
            old = BackupScheduleStatus.model_validate(body.get("status") or {})
        except ValidationError:
            old = BackupScheduleStatus()  # ours alone, but never a crash loop over it
        before = old.wire()
        try:
            spec = BackupScheduleSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            new = _invalid(old, exc, generation, now)
            if new.wire() != before:
                await k8s_events.post(
                    body,
                    type_="Warning",
                    reason="InvalidSpec",
                    note=new.conditions[-1].message,
                    action="Schedule",
                )
                _write(patch, before, new)
            return
        index: kopf.Index[tuple[str | None, str], Child] = kwargs[INDEX]
        children = list(index.get((namespace, name), []))
        created_at = _time(meta.get("creationTimestamp")) or now
        decision = decide(spec, old, children, created=created_at, now=now)
        created: str | None = None
        if decision.action is Action.CREATE and decision.slot is not None:
            manifest = child_manifest(
                schedule=name,
                namespace=namespace or "",
                uid=uid,
                spec=spec,
                slot=decision.slot,
                retry=decision.retry,
                base=incremental_base(spec, children),
            )
            child = manifest["metadata"]["name"]
            try:
                fresh = await asyncio.to_thread(create_backup, namespace or "", manifest)
            except KubernetesUnavailable as exc:
                raise kopf.TemporaryError(str(exc), delay=interval) from exc
            except ChildRefused as exc:
                # The template itself is refused: this slot is missed, and the reason shows.
                decision = ScheduleDecision(
                    Action.WAIT,
                    str(exc),
                    missed=decision.missed + 1,
                    last_missed=decision.slot,
                    handled_until=decision.slot,
                    next_schedule_time=decision.next_schedule_time,
                )
                await k8s_events.post(
                    body,
                    type_="Warning",
                    reason="BackupRefused",
                    note=f"Backup {child} refused: {exc}",
                    action="Schedule",
                )
            else:
                created = child
                if fresh:
                    await k8s_events.post(
                        body,
                        type_="Normal",
                        reason="Scheduled",
                        note=f"created Backup {child} ({decision.reason})",
                        action="Schedule",
                    )
                    log.info("schedule.created", namespace=namespace, schedule=name, backup=child)
        if decision.missed:
            why = f": {decision.reason}" if decision.action is Action.WAIT else ""
            latest = _iso(decision.last_missed) if decision.last_missed else "?"
            message = f"{decision.missed} run(s) missed, the latest due at {latest}{why}"
            await k8s_events.post(
                body, type_="Warning", reason="MissedSchedule", note=message, action="Schedule"
            )
        new = next_status(old, decision, children, created=created, generation=generation)
        if spec.retention is not None:
            await apply_retention(body, memo, spec, new, children, uid=uid, now=now)
        else:
            new.retention = None
        _ready(new, spec, generation=generation, now=now)
        _write(patch, before, new)
        upcoming = new.next_schedule_time
        gap = (next_slot(spec, upcoming) - upcoming).total_seconds() if upcoming else None
        metrics.schedule_seen(
            namespace or "",
            name,
            cluster=spec.template.cluster,
            created=created_at,
            suspended=spec.suspend,
            interval=gap,
            status=new,
        )

    @kopf.on.delete(
        c.GROUP, c.VERSION, c.SCHEDULE_PLURAL, id="forget_backupschedule", optional=True, registry=registry
    )
    def forget(namespace: str | None, name: str | None, **_: Any) -> None:
        metrics.schedule_gone(namespace or "", name or "")


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _write(patch: kopf.Patch, before: dict[str, Any], new: BackupScheduleStatus) -> None:
    """A merge patch: fields that became unset are sent as null, so they go."""
    after = new.wire()
    if after != before:
        patch.status.update({**dict.fromkeys(before), **after})
