from __future__ import annotations

import datetime as dt

import pytest

from shardkeeper.api.common import Phase
from shardkeeper.coordinator.conditions import conditions_for

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=1)


def _by_type(conds):  # type: ignore[no-untyped-def]
    return {c.type: c for c in conds}


def test_running_then_success() -> None:
    running = conditions_for([], Phase.TRANSFERRING, error=None, failure_reason=None, generation=1, now=T0)
    assert {t: c.status for t, c in _by_type(running).items()} == {
        "Complete": "False",
        "Finished": "False",
        "Failed": "False",
        "Ready": "False",
        "Reconciling": "True",
        "Stalled": "False",
    }
    done = _by_type(
        conditions_for(running, Phase.SUCCESS, error=None, failure_reason=None, generation=1, now=T1)
    )
    assert done["Complete"].status == "True" and done["Complete"].last_transition_time == T1
    # Failed stayed False, so its transition time did not move.
    assert done["Failed"].status == "False" and done["Failed"].last_transition_time == T0
    assert done["Complete"].observed_generation == 1


def test_failure_carries_reason_and_message() -> None:
    conds = _by_type(
        conditions_for(
            [], Phase.FAILED, error='node "a": disk full', failure_reason="NodeFailed", generation=2, now=T0
        )
    )
    assert conds["Failed"].status == "True" and conds["Failed"].reason == "NodeFailed"
    assert conds["Failed"].message == 'node "a": disk full'
    assert conds["Complete"].status == "False"


def test_canceled_is_a_failed_condition_with_reason_canceled() -> None:
    conds = _by_type(
        conditions_for([], Phase.CANCELED, error=None, failure_reason="Canceled", generation=2, now=T0)
    )
    assert conds["Failed"].status == "True" and conds["Failed"].reason == "Canceled"


@pytest.mark.parametrize(
    ("phase", "ready", "reconciling", "stalled"),
    [
        (Phase.QUEUED, "False", "True", "False"),
        (Phase.TRANSFERRING, "False", "True", "False"),
        (Phase.FINALIZING, "False", "True", "False"),
        (Phase.SUCCESS, "True", "False", "False"),
        (Phase.FAILED, "False", "False", "True"),
        (Phase.CANCELED, "False", "False", "True"),
    ],
)
def test_kstatus_conditions_follow_the_phase(
    phase: Phase, ready: str, reconciling: str, stalled: str
) -> None:
    conds = _by_type(
        conditions_for([], phase, error="boom", failure_reason="NodeFailed", generation=3, now=T0)
    )
    assert (conds["Ready"].status, conds["Reconciling"].status, conds["Stalled"].status) == (
        ready,
        reconciling,
        stalled,
    )
    assert all(c.observed_generation == 3 for c in conds.values())


def test_a_status_field_that_is_gone_is_removed_by_the_patch() -> None:
    from shardkeeper.coordinator.kube import merge_patch

    before = {"phase": "FAILED", "cleanupPending": "x", "nodes": {"n0": {"error": "e", "phase": "FAILED"}}}
    new = {"phase": "FAILED", "nodes": {"n0": {"phase": "FAILED"}, "n1": {"phase": "SUCCESS"}}}
    assert merge_patch(before, new) == {
        "phase": "FAILED",
        "cleanupPending": None,
        "nodes": {"n0": {"phase": "FAILED", "error": None}, "n1": {"phase": "SUCCESS"}},
    }


@pytest.mark.parametrize(
    ("phase", "status", "reason"),
    [
        (Phase.TRANSFERRING, "False", "Transferring"),
        (Phase.SUCCESS, "True", "Succeeded"),
        (Phase.FAILED, "True", "Failed"),
        (Phase.CANCELED, "True", "Canceled"),
    ],
)
def test_finished_ends_on_either_outcome(phase: Phase, status: str, reason: str) -> None:
    finished = _by_type(conditions_for([], phase, error="x", failure_reason=None, generation=1, now=T0))[
        "Finished"
    ]
    assert (finished.status, finished.reason) == (status, reason)
