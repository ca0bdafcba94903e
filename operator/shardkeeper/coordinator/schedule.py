"""When a BackupSchedule creates its next Backup, as a pure function of what the operator sees.

Each tick hands ``decide`` the spec, the status, the schedule's Backups and the time. Every slot up
to a *cursor* has been dealt with; the cursor is the latest of the schedule's creation, the slot of
any of its Backups (so a run created just before a restart, whose status was never written, counts)
and ``status.lastHandledTime``. Nothing lives in memory, so a restarted operator carries on exactly.

    situation (slots are those after the cursor, up to now)      decision
    no slot                                                       WAIT until the next slot
    suspended                                                     WAIT; the slots are passed over,
                                                                  not missed (cursor moves past them)
    several slots                                                 all but the newest are MISSED
    newest slot older than startingDeadlineSeconds                MISSED too; WAIT for the next slot
    Forbid, a run of this schedule unfinished                     WAIT for it (the slot stays due)
    Queue, a run unfinished, none waiting to start                CREATE (it waits in the cluster queue)
    Queue, a run already waiting to start                         WAIT, as under Forbid
    otherwise                                                     CREATE the newest slot's Backup

and between slots, with spec.retryAfterFailureSeconds set:

    the newest slot's run FAILED, no retry yet, nothing running,
      the delay has passed and the next slot is later              CREATE its one retry
      the delay has not passed yet                                 WAIT until then
      the next slot comes before the delay ends                    WAIT (the next slot is the retry)

A missed slot is never run later: after an outage there is at most one run, never a burst. The
child's name is derived from its slot, so creating it twice is refused by the API server (409).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto

from croniter import croniter

from shardkeeper.api.backup import BackupSpec
from shardkeeper.api.common import Phase
from shardkeeper.api.schedule import BackupScheduleSpec, BackupScheduleStatus, ConcurrencyPolicy

#: At most this many slots are counted in one evaluation (a schedule every minute, stopped for
#: a day, has 1440); past it the count is a lower bound and the newest slot is found directly.
MAX_SLOTS_COUNTED = 1000
_WAITING = frozenset({None, Phase.QUEUED})


@dataclass(frozen=True)
class Child:
    """A Backup this schedule created, as the operator's index last saw it."""

    name: str
    slot: dt.datetime | None
    """Its scheduled time (annotation); None if the annotation is missing or unreadable."""
    phase: Phase | None
    completed_at: dt.datetime | None = None
    created: dt.datetime | None = None
    deleting: bool = False
    """metadata.deletionTimestamp is set: it is going (pruned, or deleted by a user)."""
    owner_uid: str | None = None
    """The uid of its controller (ownerReferences); only a schedule's own Backups are pruned."""
    deletion_policy: str | None = None
    retry: bool = False
    """It is the one retry of its slot's failed run (spec.retryAfterFailureSeconds)."""
    incremental_base: str | None = None
    """Its spec.incrementalBase: None for a full backup."""
    storage: tuple[str, ...] = ()
    """Where and how it was written (backend, path, compression, cluster): a base must match."""

    @property
    def active(self) -> bool:
        return self.phase is None or not self.phase.terminal


class Action(Enum):
    WAIT = auto()
    CREATE = auto()


@dataclass(frozen=True)
class ScheduleDecision:
    action: Action
    reason: str
    slot: dt.datetime | None = None
    """CREATE: the slot whose Backup to create."""
    retry: bool = False
    """CREATE: this is the retry of the slot's failed run."""
    missed: int = 0
    """Slots to add to status.missedRuns now."""
    last_missed: dt.datetime | None = None
    handled_until: dt.datetime | None = None
    """The new status.lastHandledTime once this decision is carried out (None: unchanged)."""
    next_schedule_time: dt.datetime | None = None


def slots(spec: BackupScheduleSpec, after: dt.datetime, until: dt.datetime) -> tuple[list[dt.datetime], bool]:
    """The slots in (after, until], in UTC, oldest first, at most ``MAX_SLOTS_COUNTED`` of them;
    the flag says whether there were more (then the last item is the newest slot, not the next)."""
    zone = zoneinfo.ZoneInfo(spec.time_zone)
    it = croniter(spec.schedule, after.astimezone(zone))
    found: list[dt.datetime] = []
    while True:
        slot: dt.datetime = it.get_next(dt.datetime).astimezone(dt.UTC)
        if slot > until:
            return found, False
        if len(found) == MAX_SLOTS_COUNTED:
            start = until.astimezone(zone) + dt.timedelta(seconds=1)
            newest: dt.datetime = croniter(spec.schedule, start).get_prev(dt.datetime)
            return [*found[:-1], newest.astimezone(dt.UTC)], True
        found.append(slot)


def next_slot(spec: BackupScheduleSpec, after: dt.datetime) -> dt.datetime:
    zone = zoneinfo.ZoneInfo(spec.time_zone)
    slot: dt.datetime = croniter(spec.schedule, after.astimezone(zone)).get_next(dt.datetime)
    return slot.astimezone(dt.UTC)


def cursor(created: dt.datetime, status: BackupScheduleStatus, children: Sequence[Child]) -> dt.datetime:
    """Every slot up to this time has been dealt with."""
    marks = [created, *(t for t in (status.last_handled_time, status.last_schedule_time) if t)]
    marks += [child.slot for child in children if child.slot is not None]
    return max(marks)


def decide(
    spec: BackupScheduleSpec,
    status: BackupScheduleStatus,
    children: Sequence[Child],
    *,
    created: dt.datetime,
    now: dt.datetime,
) -> ScheduleDecision:
    """What the schedule does now (see the module docstring). All times are timezone-aware."""
    since = cursor(created, status, children)
    upcoming = next_slot(spec, max(since, now))
    due, more = slots(spec, since, now)
    if spec.suspend:
        # The cursor moves slot by slot, so that a suspended schedule's status changes only then.
        return ScheduleDecision(Action.WAIT, "suspended", handled_until=due[-1] if due else None)
    if not due:
        return _retry(spec, children, now=now, upcoming=upcoming) or ScheduleDecision(
            Action.WAIT, "no slot is due", next_schedule_time=upcoming
        )
    newest, older = due[-1], due[:-1]
    missed = len(older) + (1 if more else 0)
    last_missed = older[-1] if older else None

    deadline = spec.starting_deadline_seconds
    if deadline is not None and (now - newest).total_seconds() > deadline:
        return ScheduleDecision(
            Action.WAIT,
            f"the run due at {_iso(newest)} could not start within startingDeadlineSeconds ({deadline})",
            missed=missed + 1,
            last_missed=newest,
            handled_until=newest,
            next_schedule_time=upcoming,
        )
    active = sorted(child.name for child in children if child.active)
    waiting = [child for child in children if child.phase in _WAITING]
    blocked_by = None
    if active and spec.concurrency_policy is ConcurrencyPolicy.FORBID:
        blocked_by = f"concurrencyPolicy Forbid: waiting for {active[0]} to finish"
    elif waiting:
        blocked_by = f"concurrencyPolicy Queue: {waiting[0].name} is already waiting to start"
    if blocked_by is not None:
        return ScheduleDecision(
            Action.WAIT,
            blocked_by,
            missed=missed,
            last_missed=last_missed,
            handled_until=last_missed,
            next_schedule_time=newest,
        )
    return ScheduleDecision(
        Action.CREATE,
        f"the run due at {_iso(newest)}",
        slot=newest,
        missed=missed,
        last_missed=last_missed,
        handled_until=newest,
        next_schedule_time=next_slot(spec, max(newest, now)),
    )


def _retry(
    spec: BackupScheduleSpec, children: Sequence[Child], *, now: dt.datetime, upcoming: dt.datetime
) -> ScheduleDecision | None:
    """The one retry of the newest slot's failed run, if it is configured and its time has come."""
    delay = spec.retry_after_failure_seconds
    slotted = [child for child in children if child.slot is not None]
    if delay is None or not slotted or any(child.active for child in children):
        return None
    newest_slot = max(child.slot for child in slotted if child.slot is not None)
    runs = [child for child in slotted if child.slot == newest_slot]
    failed = [child for child in runs if child.phase is Phase.FAILED and not child.retry]
    if not failed or any(child.retry for child in runs) or failed[0].completed_at is None:
        return None
    at = failed[0].completed_at + dt.timedelta(seconds=delay)
    if at >= upcoming:
        return None  # the next slot comes first: it is the next attempt
    if now < at:
        return ScheduleDecision(
            Action.WAIT, f"{failed[0].name} failed; retrying at {_iso(at)}", next_schedule_time=at
        )
    return ScheduleDecision(
        Action.CREATE,
        f"retry of {failed[0].name}, which failed",
        slot=newest_slot,
        retry=True,
        next_schedule_time=upcoming,
    )


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def storage_of(template: BackupSpec) -> tuple[str, ...]:
    """What a base and its incremental must share: the backend, the path, the codec, the cluster."""
    cfg = template.config
    return (template.backend.value, cfg.path or "", cfg.compression_level.value, template.cluster)


def incremental_base(spec: BackupScheduleSpec, children: Sequence[Child]) -> str | None:
    """The base of the next run, or None when it is a full backup (pure).

    With ``spec.fullEvery`` n > 1, a run builds on the latest successful child written the same way
    (``storage_of``) unless that child ends a chain of n - 1 runs since the last full one (counted
    through the chain's bases); then the run is full. Without it, every run is full.
    """
    if not spec.full_every or spec.full_every <= 1:
        return None
    wanted = storage_of(spec.template)
    done = [c for c in children if c.phase is Phase.SUCCESS and not c.deleting and c.storage == wanted]
    if not done:
        return None
    latest = max(done, key=lambda c: (c.slot or c.created or dt.datetime.min.replace(tzinfo=dt.UTC), c.name))
    by_name = {c.name: c for c in children}
    length, at = 1, latest
    while at.incremental_base is not None and at.incremental_base in by_name and length <= spec.full_every:
        at = by_name[at.incremental_base]
        length += 1
    if at.incremental_base is not None and at.incremental_base not in by_name:
        return None  # its chain reaches a Backup this schedule no longer knows: start afresh
    return None if length >= spec.full_every else latest.name
