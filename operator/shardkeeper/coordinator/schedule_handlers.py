"""kopf handlers for BackupSchedules: observe, ask ``schedule.decide``, create the Backup, write status.

An index of every Backup by the schedule that created it (label ``shardkeeper.io/schedule``) gives
each tick the children without an API call. The index may lag a creation by a moment; that is
harmless, because a child's name is its slot and the API server refuses a second one (409).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any

import kopf
import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from shardkeeper import conventions as c
from shardkeeper.api.common import Phase, utcnow
from shardkeeper.api.schedule import (
    SCHEDULE_LABEL,
    SCHEDULED_AT_ANNOTATION,
    BackupScheduleSpec,
    BackupScheduleStatus,
    child_name,
)
from shardkeeper.coordinator.conditions import READY, STALLED, set_condition
from shardkeeper.coordinator.context import OperatorContext
from shardkeeper.coordinator.kube import KubernetesUnavailable
from shardkeeper.coordinator.schedule import Action, Child, ScheduleDecision, decide

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
    return Child(
        name=meta.get("name", ""),
        slot=_time((meta.get("annotations") or {}).get(SCHEDULED_AT_ANNOTATION)),
        phase=Phase(phase) if phase in {p.value for p in Phase} else None,
        completed_at=_time(status.get("completedAt")),
    )


class ChildRefused(Exception):
    """The API server refused the Backup itself (422, 403...): retrying the same request will not help."""


def _create_backup(namespace: str, manifest: dict[str, Any]) -> bool:
    """Creates the Backup; False if one of that name exists already (409)."""
    try:
        client.CustomObjectsApi().create_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.BACKUP_PLURAL, manifest
        )
    except ApiException as exc:
        if exc.status == 409:
            return False
        if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
            try:
                detail = json.loads(exc.body or "{}").get("message") or exc.reason
            except (ValueError, AttributeError):
                detail = exc.reason
            raise ChildRefused(f"{exc.status} {detail}") from exc
        raise KubernetesUnavailable(
            f"creating Backup {namespace}/{manifest['metadata']['name']}: {exc}"
        ) from exc
    except Exception as exc:  # urllib3 connection errors and the like
        raise KubernetesUnavailable(
            f"creating Backup {namespace}/{manifest['metadata']['name']}: {exc!r}"
        ) from exc
    return True


def child_manifest(
    *, schedule: str, namespace: str, uid: str, spec: BackupScheduleSpec, slot: dt.datetime
) -> dict[str, Any]:
    """The Backup for ``slot``: the template, named after the slot, owned by the schedule.

    Only our own label is set: copying the schedule's labels would copy a GitOps tool's ownership
    label too, and that tool would then prune the Backups it does not know."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.BACKUP_KIND,
        "metadata": {
            "name": child_name(schedule, slot),
            "namespace": namespace,
            "labels": {SCHEDULE_LABEL: schedule},
            "annotations": {SCHEDULED_AT_ANNOTATION: _iso(slot)},
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
        "spec": spec.template.wire(),
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
    names = {child.name for child in children}
    active = {child.name for child in children if child.active}
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
        f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors(include_url=False)
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


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext, *, clock: Clock = utcnow) -> None:
    interval = ctx.settings.tick_seconds

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
    async def reconcile(body: kopf.Body, patch: kopf.Patch, namespace: str | None, **kwargs: Any) -> None:
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
                kopf.event(body, type="Warning", reason="InvalidSpec", message=new.conditions[-1].message)
                _write(patch, before, new)
            return
        index: kopf.Index[tuple[str | None, str], Child] = kwargs[INDEX]
        children = list(index.get((namespace, name), []))
        created_at = _time(meta.get("creationTimestamp")) or now
        decision = decide(spec, old, children, created=created_at, now=now)
        created: str | None = None
        if decision.action is Action.CREATE and decision.slot is not None:
            manifest = child_manifest(
                schedule=name, namespace=namespace or "", uid=uid, spec=spec, slot=decision.slot
            )
            child = manifest["metadata"]["name"]
            try:
                fresh = await asyncio.to_thread(_create_backup, namespace or "", manifest)
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
                kopf.event(
                    body, type="Warning", reason="BackupRefused", message=f"Backup {child} refused: {exc}"
                )
            else:
                created = child
                if fresh:
                    kopf.event(
                        body,
                        type="Normal",
                        reason="Scheduled",
                        message=f"created Backup {child} ({decision.reason})",
                    )
                    log.info("schedule.created", namespace=namespace, schedule=name, backup=child)
        if decision.missed:
            why = f": {decision.reason}" if decision.action is Action.WAIT else ""
            latest = _iso(decision.last_missed) if decision.last_missed else "?"
            message = f"{decision.missed} run(s) missed, the latest due at {latest}{why}"
            kopf.event(body, type="Warning", reason="MissedSchedule", message=message)
        new = next_status(old, decision, children, created=created, generation=generation)
        _ready(new, spec, generation=generation, now=now)
        _write(patch, before, new)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _write(patch: kopf.Patch, before: dict[str, Any], new: BackupScheduleStatus) -> None:
    """A merge patch: fields that became unset are sent as null, so they go."""
    after = new.wire()
    if after != before:
        patch.status.update({**dict.fromkeys(before), **after})
