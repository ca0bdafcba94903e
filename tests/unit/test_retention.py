"""Retention decisions: one test per row of the table in coordinator/retention.py, then properties
that hold for any backups and any policy (hypothesis)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shardkeeper.api.common import Phase
from shardkeeper.api.retention import Retention, parse_duration
from shardkeeper.coordinator.retention import Item, Verdict, plan, pruned

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
S, F, C = Phase.SUCCESS, Phase.FAILED, Phase.CANCELED


def hours_ago(h: float, phase: Phase | None = S, name: str | None = None, **kw: Any) -> Item:
    return Item(name or f"b{h:g}", NOW - dt.timedelta(hours=h), phase, **kw)


def policy(**fields: Any) -> Retention:
    return Retention.model_validate({"minSuccessful": 0, "keepFailed": 0, **fields})


def verdicts(p: Retention, *items: Item, **kw: Any) -> dict[str, Verdict]:
    return {v.name: v for v in plan(p, items, now=NOW, **kw)}


def test_keep_last_keeps_the_newest_n_and_prunes_the_rest_oldest_first() -> None:
    items = [hours_ago(h) for h in (1, 2, 3, 4, 5)]
    result = plan(policy(keepLast=3), items, now=NOW)
    assert [v.name for v in result] == ["b1", "b2", "b3", "b4", "b5"]
    assert [v.keep for v in result] == [True, True, True, False, False]
    assert result[0].reason == "keepLast" and result[4].reason == "kept by no rule"
    assert pruned(result) == ["b5", "b4"]


def test_unfinished_backups_are_never_pruned() -> None:
    v = verdicts(
        policy(keepLast=0), hours_ago(1, None), hours_ago(2, Phase.QUEUED), hours_ago(3, Phase.TRANSFERRING)
    )
    assert all(x.keep and x.reason == "unfinished" for x in v.values())


def test_the_min_successful_floor_survives_max_age() -> None:
    v = verdicts(policy(maxAge="1d", minSuccessful=2), hours_ago(30), hours_ago(40), hours_ago(50))
    assert (v["b30"].keep, v["b30"].reason) == (True, "minSuccessful")
    assert v["b40"].keep and not v["b50"].keep and v["b50"].reason == "older than maxAge"


def test_max_age_prunes_what_a_keep_rule_would_keep() -> None:
    v = verdicts(policy(keepLast=10, maxAge="36h"), hours_ago(1), hours_ago(37))
    assert v["b1"].keep and (v["b37"].keep, v["b37"].reason) == (False, "older than maxAge")


def test_without_any_keep_rule_every_young_success_is_kept() -> None:
    v = verdicts(policy(maxAge="2d"), hours_ago(1), hours_ago(47), hours_ago(49))
    assert v["b1"].reason == v["b47"].reason == "no keep rule" and not v["b49"].keep


def test_keep_daily_keeps_the_newest_of_each_of_the_newest_n_days_with_a_backup() -> None:
    # Two a day at 01:00 and 13:00 for four days, and a gap day: restic's reading.
    days = [dt.datetime(2026, 11, d, h, tzinfo=dt.UTC) for d in (30, 29, 27, 26) for h in (13, 1)]
    items = [Item(f"{t:%d-%H}", t, S) for t in days if t <= NOW]
    v = verdicts(policy(keepDaily=3), *items)
    assert sorted(n for n, x in v.items() if x.keep) == ["27-13", "29-13", "30-01"]


def test_keep_rules_combine_and_list_every_rule_that_keeps() -> None:
    items = [Item(f"m{m}", dt.datetime(2026, m, 28, tzinfo=dt.UTC), S) for m in range(1, 12)]
    v = verdicts(policy(keepLast=2, keepMonthly=4, keepYearly=1), *items)
    assert v["m11"].reason == "keepLast, keepMonthly, keepYearly"
    assert v["m9"].reason == "keepMonthly" and v["m8"].keep and not v["m7"].keep


def test_daily_buckets_are_read_in_the_given_time_zone() -> None:
    # 23:30 and 22:30 UTC are the same UTC day, but two days in Berlin (00:30 and 23:30).
    late = Item("late", dt.datetime(2026, 11, 29, 23, 30, tzinfo=dt.UTC), S)
    early = Item("early", dt.datetime(2026, 11, 29, 22, 30, tzinfo=dt.UTC), S)
    assert not verdicts(policy(keepDaily=2), late, early)["early"].keep
    berlin = verdicts(policy(keepDaily=2), late, early, zone=zoneinfo.ZoneInfo("Europe/Berlin"))
    assert berlin["early"].keep


def test_weekly_buckets_are_iso_weeks() -> None:
    sunday, monday = dt.datetime(2026, 11, 29, tzinfo=dt.UTC), dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    v = verdicts(policy(keepWeekly=2), Item("sun", sunday, S), Item("mon", monday, S))
    assert v["sun"].keep and v["mon"].keep


def test_failed_and_canceled_attempts_are_kept_up_to_keep_failed() -> None:
    v = verdicts(policy(keepFailed=1, keepLast=5), hours_ago(1, F), hours_ago(2, C), hours_ago(3))
    assert (v["b1"].keep, v["b1"].reason) == (True, "keepFailed")
    assert (v["b2"].keep, v["b2"].reason) == (False, "beyond keepFailed")
    assert v["b3"].keep, "failures do not use up keepLast"


def test_a_backup_a_kept_one_depends_on_is_kept_even_through_a_chain() -> None:
    v = verdicts(
        policy(keepLast=1),
        hours_ago(1, name="inc2", depends_on="inc1"),
        hours_ago(2, name="inc1", depends_on="full"),
        hours_ago(3, name="full"),
        hours_ago(4, name="old"),
    )
    assert v["inc2"].keep and v["inc1"].reason == "needed by inc2" and v["full"].reason == "needed by inc1"
    assert not v["old"].keep


def test_a_dependency_cycle_in_metadata_ends() -> None:
    v = verdicts(
        policy(keepLast=1),
        hours_ago(1, name="a", depends_on="b"),
        hours_ago(2, name="b", depends_on="c"),
        hours_ago(3, name="c", depends_on="b"),
    )
    assert all(x.keep for x in v.values())


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * 86400), ("2w", 14 * 86400), ("1d12h", 36 * 3600), ("90m", 5400)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("bad", ["", "0d", "1y", "12", "-1d", "1h1d"])
def test_bad_durations_are_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Retention.model_validate({"maxAge": bad})
    assert [e["loc"][0] for e in refused.value.errors()] == ["maxAge"]


# --- properties ------------------------------------------------------------------------------

phases = st.sampled_from([S, S, S, F, C, None, Phase.QUEUED, Phase.TRANSFERRING])
backups = st.lists(
    st.tuples(st.integers(min_value=0, max_value=24 * 400), phases),
    min_size=0,
    max_size=40,
    unique_by=lambda x: x[0],
).map(lambda xs: [Item(f"b{h}", NOW - dt.timedelta(hours=h), p) for h, p in xs])
counts = st.one_of(st.none(), st.integers(min_value=0, max_value=6))
policies = st.builds(
    lambda last, hourly, daily, weekly, monthly, yearly, age, floor, failed: Retention.model_validate(
        {
            "keepLast": last,
            "keepHourly": hourly,
            "keepDaily": daily,
            "keepWeekly": weekly,
            "keepMonthly": monthly,
            "keepYearly": yearly,
            "maxAge": age,
            "minSuccessful": floor,
            "keepFailed": failed,
        }
    ),
    counts,
    counts,
    counts,
    counts,
    counts,
    counts,
    st.one_of(st.none(), st.sampled_from(["1h", "3d", "2w", "90d"])),
    st.integers(min_value=0, max_value=4),
    st.integers(min_value=0, max_value=3),
)


@settings(max_examples=300, deadline=None)
@given(policies, backups)
def test_properties_of_every_plan(p: Retention, items: list[Item]) -> None:
    result = plan(p, items, now=NOW)
    kept = {v.name for v in result if v.keep}
    by_name = {i.name: i for i in items}
    assert sorted(v.name for v in result) == sorted(by_name), "one verdict per backup"
    newest_first = sorted(items, key=lambda i: (i.time, i.name), reverse=True)
    # Never an unfinished backup, never the floor.
    assert {i.name for i in items if i.phase is None or not i.phase.terminal} <= kept
    floor = {i.name for i in [i for i in newest_first if i.phase is S][: p.min_successful]}
    assert floor <= kept
    # Exactly keepFailed failures stay (or all of them, if fewer).
    failures = [i for i in items if i.phase in (F, C)]
    assert len([i for i in failures if i.name in kept]) == min(len(failures), p.keep_failed)
    # Applying the plan and planning again prunes nothing more: retention is idempotent.
    again = plan(p, [by_name[n] for n in kept], now=NOW)
    assert all(v.keep for v in again), [v for v in again if not v.keep]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10), backups)
def test_keep_last_alone_keeps_exactly_that_many_successes(n: int, items: list[Item]) -> None:
    result = plan(policy(keepLast=n), items, now=NOW)
    successes = {i.name for i in items if i.phase is S}
    assert len([v for v in result if v.keep and v.name in successes]) == min(n, len(successes))
