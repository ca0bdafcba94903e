"""A BackupSchedule's retention, applied: prune what ``prune.prune_plan`` does not keep, with an
Event per pruned Backup, and record it in the schedule's status."""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from collections.abc import Sequence

import kopf
import structlog

from shardkeeper.api.schedule import BackupScheduleSpec, BackupScheduleStatus, RetentionStatus
from shardkeeper.coordinator import events as k8s_events
from shardkeeper.coordinator.kube import KubernetesUnavailable
from shardkeeper.coordinator.prune import prune_plan
from shardkeeper.coordinator.schedule import Child
from shardkeeper.coordinator.schedule_kube import prune_backup

log = structlog.get_logger(__name__)
#: The key, in a schedule's kopf memo, of the Backups this process already pruned.
_PRUNED = "shardkeeper-pruned"


async def apply_retention(
    body: kopf.Body,
    memo: kopf.Memo,
    spec: BackupScheduleSpec,
    st: BackupScheduleStatus,
    children: Sequence[Child],
    *,
    uid: str,
    now: dt.datetime,
) -> None:
    """Prunes what ``spec.retention`` does not keep and records it in ``st.retention``.

    ``memo`` remembers what this process already pruned: the index may show a pruned Backup for
    a moment longer, and it must not be pruned (and counted) twice."""
    assert spec.retention is not None
    meta = body.get("metadata", {})
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    done: set[str] = memo.setdefault(_PRUNED, set())
    present = [child for child in children if child.name not in done]
    zone = zoneinfo.ZoneInfo(spec.time_zone)
    planned = prune_plan(spec.retention, present, uid=uid, now=now, zone=zone, next_run=st.next_schedule_time)
    by_name = {child.name: child for child in present}
    pruned = 0
    for verdict in planned.prune:
        try:
            policy = by_name[verdict.name].deletion_policy
            await asyncio.to_thread(prune_backup, namespace, verdict.name, deletion_policy=policy)
        except KubernetesUnavailable as exc:
            log.warning("schedule.prune_failed", namespace=namespace, schedule=name, error=str(exc))
            await k8s_events.post(
                body, type_="Warning", reason="PruneFailed", note=f"{exc}; will retry", action="Schedule"
            )
            continue
        done.add(verdict.name)
        pruned += 1
        message = f"pruned Backup {verdict.name} and its data ({verdict.reason})"
        await k8s_events.post(body, type_="Normal", reason="Pruned", note=message, action="Schedule")
        log.info(
            "schedule.pruned", namespace=namespace, schedule=name, backup=verdict.name, why=verdict.reason
        )
    previous = st.retention or RetentionStatus()
    st.backups = max(0, st.backups - len(done & {child.name for child in children}))
    st.retention = RetentionStatus(
        pruned=previous.pruned + pruned,
        last_prune_time=now if pruned else previous.last_prune_time,
        next_to_prune=planned.next_to_prune,
    )


__all__ = ["apply_retention"]
