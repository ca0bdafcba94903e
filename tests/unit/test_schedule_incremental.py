"""spec.fullEvery: which run of a schedule is incremental, and on what (one situation per test)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from shardkeeper.api.common import Phase
from shardkeeper.api.schedule import BackupScheduleSpec
from shardkeeper.coordinator.schedule import Child, incremental_base, storage_of

UTC = dt.UTC


def spec(**fields: Any) -> BackupScheduleSpec:
    return BackupScheduleSpec.model_validate(
        {"schedule": "@daily", "template": {"backend": "filesystem", "cluster": "db"}, **fields}
    )


SAME = storage_of(spec().template)


def run(day: int, phase: Phase | None = Phase.SUCCESS, base: str | None = None, **more: Any) -> Child:
    return Child(
        name=f"s-{day}",
        slot=dt.datetime(2026, 11, day, tzinfo=UTC),
        phase=phase,
        incremental_base=base,
        storage=more.pop("storage", SAME),
        **more,
    )


def test_without_full_every_every_run_is_full() -> None:
    assert incremental_base(spec(), [run(1)]) is None
    assert incremental_base(spec(fullEvery=1), [run(1)]) is None


def test_the_first_run_is_full() -> None:
    assert incremental_base(spec(fullEvery=7), []) is None


def test_a_run_builds_on_the_latest_success() -> None:
    children = [run(1), run(2, base="s-1"), run(3, Phase.FAILED, base="s-2")]
    assert incremental_base(spec(fullEvery=7), children) == "s-2"


def test_the_run_after_a_chain_of_full_every_minus_one_is_full() -> None:
    children = [run(1), run(2, base="s-1"), run(3, base="s-2")]
    assert incremental_base(spec(fullEvery=3), children) is None
    assert incremental_base(spec(fullEvery=4), children) == "s-3"


def test_a_base_written_elsewhere_or_otherwise_is_never_used() -> None:
    other = storage_of(spec(template={"backend": "s3", "cluster": "db"}).template)
    assert incremental_base(spec(fullEvery=7), [run(1, storage=other)]) is None
    assert incremental_base(spec(fullEvery=7), [run(1, deleting=True)]) is None


def test_a_chain_reaching_an_unknown_backup_starts_afresh() -> None:
    assert incremental_base(spec(fullEvery=7), [run(2, base="pruned-long-ago")]) is None
