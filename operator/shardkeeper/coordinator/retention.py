"""Which backups a retention policy keeps, as a pure function of the backups and the time.

Every backup gets one verdict, with the rule that decided it (first matching row wins):

    backup                                                   verdict
    unfinished (not started, queued, running)                keep   "unfinished"
    successful, among the newest minSuccessful successful    keep   "minSuccessful" (even past maxAge)
    successful, older than maxAge                            prune  "older than maxAge"
    successful, no keep* rule set                            keep   "no keep rule"
    successful, kept by keepLast/keepHourly/.../keepYearly   keep   "keepLast", "keepDaily"...
    successful, kept by no rule                              prune  "kept by no rule"
    failed or canceled, among the newest keepFailed          keep   "keepFailed"
    failed or canceled, older                                prune  "beyond keepFailed"
    pruned above, but a kept backup depends on it            keep   "needed by <name>"

The keep* rules read as restic's ``forget`` policy, over the successful backups within maxAge:
keepLast n keeps the newest n; keepHourly n keeps the newest backup of each of the newest n hours
that have one (keepDaily: days, keepWeekly: ISO weeks, keepMonthly, keepYearly likewise), the
periods read in the policy's time zone. A backup kept by several rules lists them all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shardkeeper.api.common import Phase
from shardkeeper.api.retention import Retention

Bucket = Callable[[dt.datetime], tuple[int, ...]]

BUCKETS: tuple[tuple[str, Bucket], ...] = (
    ("keepHourly", lambda t: (t.year, t.month, t.day, t.hour)),
    ("keepDaily", lambda t: (t.year, t.month, t.day)),
    ("keepWeekly", lambda t: tuple(t.isocalendar()[:2])),
    ("keepMonthly", lambda t: (t.year, t.month)),
    ("keepYearly", lambda t: (t.year,)),
)


@dataclass(frozen=True)
class Item:
    """One backup as retention sees it."""

    name: str
    time: dt.datetime
    """When it was taken (its schedule slot, else its start); timezone-aware."""
    phase: Phase | None
    depends_on: str | None = None
    """The backup this one needs to be restored (an incremental's base); None for a full backup."""


@dataclass(frozen=True)
class Verdict:
    name: str
    keep: bool
    reason: str


def _counts(policy: Retention) -> dict[str, int | None]:
    return {
        "keepHourly": policy.keep_hourly,
        "keepDaily": policy.keep_daily,
        "keepWeekly": policy.keep_weekly,
        "keepMonthly": policy.keep_monthly,
        "keepYearly": policy.keep_yearly,
    }


def _keep_rules(policy: Retention, newest_first: Sequence[Item], zone: dt.tzinfo) -> dict[str, list[str]]:
    """name -> the keep* rules that keep it."""
    kept: dict[str, list[str]] = {}
    if policy.keep_last is not None:
        for item in newest_first[: policy.keep_last]:
            kept.setdefault(item.name, []).append("keepLast")
    counts = _counts(policy)
    for rule, bucket in BUCKETS:
        left = counts[rule]
        if left is None:
            continue
        last: tuple[int, ...] | None = None
        for item in newest_first:
            if left <= 0:
                break
            key = bucket(item.time.astimezone(zone))
            if key != last:
                kept.setdefault(item.name, []).append(rule)
                last, left = key, left - 1
    return kept


def plan(
    policy: Retention, items: Sequence[Item], *, now: dt.datetime, zone: dt.tzinfo = dt.UTC
) -> list[Verdict]:
    """One verdict per item, newest first (see the module docstring)."""
    newest_first = sorted(items, key=lambda i: (i.time, i.name), reverse=True)
    successful = [i for i in newest_first if i.phase is Phase.SUCCESS]
    floor = {i.name for i in successful[: policy.min_successful]}
    max_age = policy.max_age_delta
    young = [i for i in successful if max_age is None or now - i.time <= max_age]
    by_rule = _keep_rules(policy, young, zone) if policy.has_keep_rule else {}
    failed = [i for i in newest_first if i.phase in (Phase.FAILED, Phase.CANCELED)]
    kept_failed = {i.name for i in failed[: policy.keep_failed]}
    young_names = {i.name for i in young}

    verdicts: dict[str, Verdict] = {}
    for item in newest_first:
        if item.phase is None or not item.phase.terminal:
            verdict = Verdict(item.name, True, "unfinished")
        elif item.phase is Phase.SUCCESS:
            if item.name in floor:
                verdict = Verdict(item.name, True, "minSuccessful")
            elif item.name not in young_names:
                verdict = Verdict(item.name, False, "older than maxAge")
            elif not policy.has_keep_rule:
                verdict = Verdict(item.name, True, "no keep rule")
            elif item.name in by_rule:
                verdict = Verdict(item.name, True, ", ".join(by_rule[item.name]))
            else:
                verdict = Verdict(item.name, False, "kept by no rule")
        elif item.name in kept_failed:
            verdict = Verdict(item.name, True, "keepFailed")
        else:
            verdict = Verdict(item.name, False, "beyond keepFailed")
        verdicts[item.name] = verdict
    _keep_dependencies(newest_first, verdicts)
    return [verdicts[i.name] for i in newest_first]


def _keep_dependencies(items: Sequence[Item], verdicts: dict[str, Verdict]) -> None:
    parent = {i.name: i.depends_on for i in items}
    for item in items:
        if not verdicts[item.name].keep:
            continue
        child, base, seen = item.name, parent.get(item.name), {item.name}
        # ``seen``: a cycle in (untrusted) metadata ends the walk instead of looping.
        while base is not None and base in verdicts and base not in seen:
            seen.add(base)
            if not verdicts[base].keep:
                verdicts[base] = Verdict(base, True, f"needed by {child}")
            child, base = base, parent.get(base)


def pruned(verdicts: Sequence[Verdict]) -> list[str]:
    """The names to prune, oldest first."""
    return [v.name for v in reversed(verdicts) if not v.keep]
