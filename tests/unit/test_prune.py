"""A schedule's retention over its children: ownership, Backups already going, and what the next
run would push out."""

from __future__ import annotations

import datetime as dt

from shardkeeper.api.common import Phase
from shardkeeper.api.retention import Retention
from shardkeeper.coordinator.prune import prune_plan
from shardkeeper.coordinator.schedule import Child

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def child(minutes_ago: int, *, owner: str = "uid-1", deleting: bool = False, slot: bool = True) -> Child:
    when = NOW - dt.timedelta(minutes=minutes_ago)
    return Child(
        f"c{minutes_ago}",
        when if slot else None,
        Phase.SUCCESS,
        completed_at=when,
        created=when,
        deleting=deleting,
        owner_uid=owner,
    )


def plan(*children: Child, next_run: dt.datetime | None = NOW + dt.timedelta(minutes=1), **policy: int):  # type: ignore[no-untyped-def]
    return prune_plan(
        Retention.model_validate(policy), children, uid="uid-1", now=NOW, zone=dt.UTC, next_run=next_run
    )


def test_prunes_the_oldest_beyond_keep_last_and_names_the_next_one() -> None:
    p = plan(child(1), child(2), child(3), child(4), child(5), keepLast=3)
    assert [v.name for v in p.prune] == ["c5", "c4"] and p.kept == 3
    assert p.next_to_prune == ["c3"]


def test_only_its_own_backups_and_none_already_going() -> None:
    p = plan(child(1), child(2, owner="someone-else"), child(3, deleting=True), child(4), keepLast=1)
    assert [v.name for v in p.prune] == ["c4"] and p.kept == 1


def test_a_child_without_a_slot_is_dated_by_its_creation() -> None:
    p = plan(child(1, slot=False), child(2), keepLast=1)
    assert [v.name for v in p.prune] == ["c2"]


def test_nothing_is_next_while_no_run_is_coming() -> None:
    assert plan(child(1), child(2), keepLast=2, next_run=None).next_to_prune == []
