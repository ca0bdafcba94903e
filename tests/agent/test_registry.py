"""The agent's registry of operations (``agent.operations.Registry``)."""

from __future__ import annotations

import gc
import weakref

from shardkeeper.agent.operations import Operation, Registry


class _Job:
    """A job that holds what a real one does for a big node (its listing), and ends at once."""

    def __init__(self, fail: bool) -> None:
        self.listing = bytearray(1 << 20)
        self.fail = fail

    async def prepare(self, op: Operation) -> None:
        if self.fail:
            raise ValueError("refused")

    async def release(self, op: Operation) -> None:
        pass

    async def transfer(self, op: Operation) -> None:
        pass

    async def discard(self, op: Operation, *, succeeded: bool) -> None:
        pass


async def test_an_ended_operation_keeps_its_status_and_lets_its_job_go() -> None:
    registry = Registry("node-0", reservation_limit=60)
    for i, fail in enumerate((False, True)):
        made = [_Job(fail)]
        gone = weakref.ref(made[0])
        op, started = await registry.start(
            op_id=f"op-{i}", uid=f"u{i}", kind="backup", reservation_seconds=60, job_factory=made.pop
        )
        assert started
        if not fail:
            op.committed.set()
        assert op.task is not None
        await op.task
        gc.collect()
        assert gone() is None, "the ended operation still holds its job"
        assert registry.get(f"op-{i}") is op and op.phase.terminal
        assert op.phase.value == ("FAILED" if fail else "SUCCESS")
