"""Storage retries (``storage.base.retrying``): which errors are retried, when it gives up, what it logs."""

from __future__ import annotations

import pytest
import tenacity
from structlog.testing import capture_logs

from shardkeeper.errors import StorageError, TransientStorageError
from shardkeeper.storage.base import RetryPolicy, retrying

QUICK = RetryPolicy(attempts=4, initial_delay=0.001, max_delay=0.002, jitter=0.001, deadline=5.0)


class Flaky:
    """Fails with ``errors`` in turn, then returns "done"; counts its calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_transient_errors_are_retried_until_the_operation_succeeds() -> None:
    op = Flaky(TransientStorageError("503 slow down"), TransientStorageError("timed out"))
    with capture_logs() as logs:
        assert retrying(op, what="put a/b", policy=QUICK) == "done"
    assert op.calls == 3
    retries = [entry for entry in logs if entry["event"] == "storage.retry"]
    assert [(r["op"], r["attempt"], r["error"]) for r in retries] == [
        ("put a/b", 1, "503 slow down"),
        ("put a/b", 2, "timed out"),
    ]
    assert all(0 <= r["delay"] <= 0.01 for r in retries)  # logged to 10 ms


def test_it_gives_up_after_the_policy_attempts_naming_the_last_error() -> None:
    op = Flaky(*(TransientStorageError(f"timed out ({n})") for n in range(10)))
    with pytest.raises(TransientStorageError, match=r"^timed out \(3\) \(gave up after 4 attempts\)$") as err:
        retrying(op, what="get x", policy=QUICK)
    assert op.calls == 4
    assert isinstance(err.value.__cause__, TransientStorageError)


def test_other_errors_are_raised_at_once() -> None:
    op = Flaky(StorageError("access denied"))
    with pytest.raises(StorageError, match=r"^access denied$") as err:
        retrying(op, what="get x", policy=QUICK)
    assert op.calls == 1 and not isinstance(err.value, TransientStorageError)


def test_no_attempt_starts_past_the_deadline() -> None:
    # The first wait (0.05-0.10 s) ends before the 0.12 s deadline; the second (at least 0.10 s,
    # starting at least 0.05 s in) would not, so the second attempt is the last.
    policy = RetryPolicy(attempts=10, initial_delay=0.05, max_delay=1.0, jitter=0.05, deadline=0.12)
    op = Flaky(*(TransientStorageError("down") for _ in range(10)))
    with pytest.raises(TransientStorageError, match=r"gave up after 2 attempts"):
        retrying(op, what="get x", policy=policy)
    assert op.calls == 2


def test_any_other_exception_passes_unchanged_even_after_retries() -> None:
    boom = ValueError("a bug, not the server")
    op = Flaky(TransientStorageError("timed out"), boom)
    with pytest.raises(ValueError) as err:
        retrying(op, what="get x", policy=QUICK)
    assert err.value is boom and op.calls == 2


def _waits(policy: RetryPolicy) -> list[float]:
    """One wait per failed attempt but the last, drawn from the policy's strategy."""
    wait = policy.wait()
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    waits = []
    for attempt in range(1, policy.attempts):
        state.attempt_number = attempt
        waits.append(wait(state))
    return waits


def test_the_default_waits_add_up_to_35_to_43_seconds() -> None:
    # The docstring's promise: waits of 0.5, 1, 2, 4, 8, 10 and 10 s between the 8 attempts, each
    # plus up to 1 s of jitter; 35.5-42.5 s in all, inside the 90 s deadline.
    policy = RetryPolicy()
    waits = _waits(policy)
    for got, base in zip(waits, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0], strict=True):
        assert base <= got <= base + 1.0
    assert 35.5 <= sum(waits) <= 42.5 < policy.deadline


def test_waits_at_the_cap_are_jittered_too() -> None:
    # Agents that lost the same server must not all come back at the same instant: 200 draws of
    # the last wait spread over most of the second of jitter (all within 0.5 s of each other: below 2**-190).
    last = [_waits(RetryPolicy())[-1] for _ in range(200)]
    assert min(last) >= 10.0 and max(last) <= 11.0 and max(last) - min(last) > 0.5
