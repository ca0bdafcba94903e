"""Events as the operator posts them: who posted them, ordered to the microsecond, within the API's limits."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from shardkeeper.coordinator.events import NOTE_MAX_BYTES, REPORTING_CONTROLLER, event_body, shorten

BODY = {
    "apiVersion": "shardkeeper.io/v1alpha1",
    "kind": "Backup",
    "metadata": {"name": "nightly", "namespace": "db", "uid": "u-1", "resourceVersion": "7"},
}


def test_the_event_names_shardkeeper_and_carries_microseconds() -> None:
    now = dt.datetime(2026, 11, 30, 8, 0, 0, 123456, tzinfo=dt.UTC)
    ev = event_body(
        BODY, type_="Normal", reason="Started", note="go", action="Backup", now=now, instance="op-1"
    )
    assert ev["reportingController"] == REPORTING_CONTROLLER == "shardkeeper.io/operator"
    assert ev["reportingInstance"] == "op-1"
    assert ev["eventTime"] == "2026-11-30T08:00:00.123456Z"
    # No legacy second-resolution timestamps: kubectl describe would order by them.
    assert not {"firstTimestamp", "lastTimestamp", "source"} & set(ev)
    assert ev["regarding"] == {
        "apiVersion": "shardkeeper.io/v1alpha1",
        "kind": "Backup",
        "name": "nightly",
        "namespace": "db",
        "uid": "u-1",
        "resourceVersion": "7",
    }
    assert ev["metadata"] == {"name": f"nightly.{int(now.timestamp() * 1e6) * 1000:x}", "namespace": "db"}


def test_a_long_reason_is_cut_to_the_api_limit() -> None:
    now = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    ev = event_body(
        BODY, type_="Warning", reason="R" * 300, note="x", action="A" * 300, now=now, instance="i"
    )
    assert len(ev["reason"]) == len(ev["action"]) == 128


@given(st.text(max_size=3000))
def test_a_note_fits_in_one_kib_and_keeps_both_ends(note: str) -> None:
    short = shorten(note)
    assert len(short.encode()) <= NOTE_MAX_BYTES
    if len(note.encode()) <= NOTE_MAX_BYTES:
        assert short == note
    else:
        assert note.startswith(short.split(" [...] ", 1)[0])
        assert note.endswith(short.rsplit(" [...] ", 1)[1])
        assert len(short.encode()) >= NOTE_MAX_BYTES - 8  # only a split character is lost at each cut
