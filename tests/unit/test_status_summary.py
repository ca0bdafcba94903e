"""The summary fields `kubectl get` shows are derived from the fields they summarize."""

from __future__ import annotations

import datetime as dt

import pytest

from shardkeeper.api.backup import BackupStatus
from shardkeeper.api.common import Phase
from shardkeeper.api.status import format_duration

T0 = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m"),
        (65, "1m5s"),
        (3600, "1h"),
        (3725, "1h2m"),
        (90000, "1d1h"),
        (86400 * 3, "3d"),
        (-4, "0s"),
    ],
)
def test_duration_reads_like_kubectl_ages(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_a_running_operation_shows_its_progress_and_no_duration() -> None:
    st = BackupStatus(
        phase=Phase.TRANSFERRING, collections=["a", "b", "c"], bytes_done=1, bytes_total=3, started_at=T0
    )
    wire = st.wire()
    assert (wire["collectionCount"], wire["progress"]) == (3, "33%")
    assert "duration" not in wire


def test_a_finished_operation_shows_its_duration_and_full_progress() -> None:
    st = BackupStatus(
        phase=Phase.SUCCESS,
        collections=["a"],
        bytes_done=0,
        bytes_total=0,
        started_at=T0,
        completed_at=T0 + dt.timedelta(seconds=125),
    )
    wire = st.wire()
    assert (wire["progress"], wire["duration"]) == ("100%", "2m5s")


def test_a_failed_operation_keeps_the_progress_it_reached() -> None:
    st = BackupStatus(phase=Phase.FAILED, bytes_done=50, bytes_total=200, started_at=T0, completed_at=T0)
    wire = st.wire()
    assert (wire["progress"], wire["duration"]) == ("25%", "0s")
    assert (
        "collectionCount" not in wire
    )  # nothing selected yet: no count rather than a 0 that reads as "empty"


def test_summaries_follow_later_changes() -> None:
    st = BackupStatus(phase=Phase.TRANSFERRING, collections=["a"], bytes_done=1, bytes_total=2)
    assert st.wire()["progress"] == "50%"
    st.bytes_done, st.collections = 2, ["a", "b"]
    assert (st.wire()["progress"], st.wire()["collectionCount"]) == ("100%", 2)
