"""A schedule's retention: which of its Backups to prune now, and which the next run would push out.

Pure, like ``retention.plan`` underneath it. Only Backups the schedule owns (controller
ownerReference with its uid) are considered; one a user labelled by hand is never pruned. A Backup
already being deleted counts as gone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from shardkeeper.api.common import Phase
from shardkeeper.api.retention import Retention
from shardkeeper.coordinator.retention import Item, Verdict, plan
from shardkeeper.coordinator.schedule import Child

_NEXT = "\x00next run"


@dataclass(frozen=True)
class PrunePlan:
    prune: list[Verdict]
    """To prune now, oldest first."""
    kept: int
    next_to_prune: list[str]
    """What the policy prunes once the next run succeeds, oldest first."""


def items(children: Sequence[Child], *, uid: str) -> list[Item]:
    """The schedule's own Backups that still exist, dated by their slot (else their creation)."""
    out = []
    for child in children:
        when = child.slot or child.created
        if child.owner_uid == uid and not child.deleting and when is not None:
            out.append(Item(child.name, when, child.phase, depends_on=child.incremental_base))
    return out


def prune_plan(
    policy: Retention,
    children: Sequence[Child],
    *,
    uid: str,
    now: dt.datetime,
    zone: dt.tzinfo,
    next_run: dt.datetime | None,
) -> PrunePlan:
    own = items(children, uid=uid)
    verdicts = plan(policy, own, now=now, zone=zone)
    prune = [v for v in reversed(verdicts) if not v.keep]
    kept = [i for i in own if i.name not in {v.name for v in prune}]
    following: list[str] = []
    if next_run is not None:
        after = plan(policy, [*kept, Item(_NEXT, next_run, Phase.SUCCESS)], now=next_run, zone=zone)
        following = [v.name for v in reversed(after) if not v.keep and v.name != _NEXT]
    return PrunePlan(prune=prune, kept=len(kept), next_to_prune=following)
