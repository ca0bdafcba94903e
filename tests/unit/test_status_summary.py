"""The summary fields `kubectl get` shows are derived from the fields they summarize."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from shardkeeper.api.backup import BackupStatus
from shardkeeper.api.common import NAME_BYTES_IN_MESSAGES, Phase, listed, shown_name
from shardkeeper.api.status import COLLECTIONS_LISTED, format_duration

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
    st.bytes_done = 2
    st.list_collections(["a", "b"])
    assert (st.wire()["progress"], st.wire()["collectionCount"]) == ("100%", 2)


def test_a_status_lists_the_first_collections_and_counts_them_all() -> None:
    names = [f"c{i:06d}" for i in range(250_000)]
    st = BackupStatus(phase=Phase.TRANSFERRING)
    st.list_collections(names)
    wire = st.wire()
    assert wire["collections"] == names[:COLLECTIONS_LISTED] and wire["collectionCount"] == 250_000
    assert len(json.dumps(wire)) < 4096  # the same size at any count
    assert not st.collections_complete()
    assert st.describe_collections() == (
        "250000 collections ['c000000', 'c000001', 'c000002', 'c000003', 'c000004', 'c000005', "
        "'c000006', 'c000007', 'c000008', 'c000009', ... and 249990 more]"
    )
    # Read back from the object (the next tick): still incomplete, still the same count.
    again = BackupStatus.model_validate(wire)
    assert (again.collection_count, again.collections_complete()) == (250_000, False)


def test_a_short_list_is_complete_and_named_whole() -> None:
    st = BackupStatus()
    st.list_collections(["a"])
    assert st.collections_complete() and st.describe_collections() == "1 collection ['a']"
    st.list_collections([])
    assert (st.collections, st.collection_count, st.collections_complete()) == ([], None, True)


def test_a_status_written_before_the_count_gets_one() -> None:
    st = BackupStatus.model_validate({"collections": ["a", "b"]})
    assert st.wire()["collectionCount"] == 2 and st.collections_complete()


@pytest.mark.parametrize(
    ("names", "total", "shown"),
    [
        ([], None, "[]"),
        (["a"], None, "['a']"),
        ([f"n{i}" for i in range(10)], None, str([f"n{i}" for i in range(10)])),
        ([f"n{i}" for i in range(11)], None, str([f"n{i}" for i in range(10)])[:-1] + ", ... and 1 more]"),
        (["a", "b"], 5, "['a', 'b', ... and 3 more]"),
    ],
)
def test_listed_names_read_like_a_list_and_stop_at_ten(
    names: list[str], total: int | None, shown: str
) -> None:
    assert listed(names, total=total) == shown


@pytest.mark.parametrize(
    "names",
    [
        [f"{i}" + "x" * 254 for i in range(12)],  # 255 bytes each
        [f"{i}" + "\U0001f600" * 63 for i in range(12)],  # 4-byte characters: 253 bytes each
        [f"{i}" + "\x01" * 254 for i in range(12)],  # control characters: 4 characters each in repr
    ],
)
def test_long_names_are_cut_so_ten_of_them_fit_an_events_note(names: list[str]) -> None:
    """Collection names may have 255 bytes: ten whole ones would pass an Event's 1 KiB note."""
    st = BackupStatus()
    st.list_collections(names)
    text = f"asked 3 nodes to prepare {st.describe_collections()}"
    assert len(text.encode()) < 1024, len(text.encode())
    assert text.endswith("... and 2 more]")
    assert all(shown_name(name) in text for name in names[:10])
    assert all(len(shown_name(name).encode()) <= NAME_BYTES_IN_MESSAGES for name in names)


def test_a_cut_name_keeps_its_start_and_end_where_similar_names_differ() -> None:
    a, b = (
        "tenant_acme_corporation_production_text_embeddings_partition_2024_v1",
        "tenant_acme_corporation_production_text_embeddings_partition_2024_v2",
    )
    assert shown_name(a) != shown_name(b)
    assert shown_name(a).startswith("'tenant_acme") and shown_name(a).endswith("2024_v1'")
    assert "…" in shown_name(a) and len(shown_name(a).encode()) <= NAME_BYTES_IN_MESSAGES
    assert shown_name("short") == "'short'"
    assert shown_name("x" * 62) == repr("x" * 62)  # 64 bytes quoted: whole
    assert shown_name("x" * 200, limit=5) == "'…'"  # the least it can be, whatever the limit
