"""One operation at a time per node: its state, its driver task, and the registry that holds it.

An operation runs as a single coroutine from prepare to its end. Between prepare and commit the
node is *reserved*; if no commit arrives within the reservation the operation ends by itself, so a
coordinator that vanished never wedges a node. ``abort`` cancels the coroutine wherever it is, and
the coroutine's own cleanup removes staging and whatever it uploaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal, Protocol, TypeVar

import structlog

from shardkeeper.agent import metrics
from shardkeeper.agent.memory import release_free_memory
from shardkeeper.api.agent import NodePhase, OperationStatus
from shardkeeper.api.common import utcnow
from shardkeeper.api.status import HoldWindow
from shardkeeper.errors import ShardkeeperError, UnknownOperation

log = structlog.get_logger(__name__)
T = TypeVar("T")

HISTORY_SIZE = 256
ABORT_WAIT_SECONDS = 60.0


class OperationConflict(ShardkeeperError):
    """The request does not fit the node's current state (busy, not prepared yet, ...)."""

    def __init__(self, message: str, *, holder: OperationStatus | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class ReservationExpired(ShardkeeperError):
    pass


_RESULTS = {"SUCCESS": "success", "FAILED": "failed", "CANCELED": "canceled"}


class Operation:
    def __init__(self, *, op_id: str, uid: str, kind: Literal["backup", "restore"], node: str) -> None:
        self.id, self.uid, self.kind, self.node = op_id, uid, kind, node
        self.phase = NodePhase.PREPARING
        self.error: str | None = None
        self.collections: list[str] = []
        self.bytes_total = self.files_total = 0
        self.pause_ms: float | None = None
        self.held = False
        self.hold: HoldWindow | None = None
        self.warnings: list[str] = []
        self.bytes_reused = 0
        self.workers: int | None = None
        self.job: Job | None = None
        self._transfer_started: float | None = None
        self._transfer_ended: float | None = None
        self.started_at = self.updated_at = utcnow()
        #: Set when the operation must stop; worker threads poll it between reads.
        self.cancelled = threading.Event()
        self.abort_reason: str | None = None
        self.finishing = False
        self.committed = asyncio.Event()
        #: Later steps the coordinator triggers (a restore's "finalize" and "complete").
        self.signals: dict[str, asyncio.Event] = {"finalize": asyncio.Event(), "complete": asyncio.Event()}
        self.task: asyncio.Task[None] | None = None
        self._counters = threading.Lock()
        self._bytes_done = self._files_done = 0
        #: Set, and replaced by a fresh one, at every phase change (the event loop's thread only).
        self._phase_changed = asyncio.Event()
        self.waits_ended = False

    async def wait_while(self, phase: NodePhase) -> None:
        """Returns once the phase is not ``phase``, or once waiting on it ended (``end_waits``).
        Callers bound it with ``asyncio.timeout``."""
        while self.phase is phase and not self.waits_ended:
            await self._phase_changed.wait()

    def end_waits(self) -> None:
        """Answers every long poll on it at once: the registry dropped it (a new operation took
        its id, or the history is full), or the agent is stopping."""
        self.waits_ended = True
        self._phase_changed.set()

    def set_phase(self, phase: NodePhase, error: str | None = None) -> None:
        if phase.value in _RESULTS and self.phase.value not in _RESULTS:
            metrics.OPERATIONS.labels(self.kind, self.node, _RESULTS[phase.value]).inc()
        if phase is NodePhase.TRANSFERRING and self._transfer_started is None:
            self._transfer_started = time.monotonic()
        elif phase is not NodePhase.TRANSFERRING and self._transfer_started is not None:
            self._transfer_ended = self._transfer_ended or time.monotonic()
        self.phase = phase
        if error is not None:
            self.error = error
        self.updated_at = utcnow()
        self._phase_changed.set()
        self._phase_changed = asyncio.Event()
        extra = {"error": error} if error is not None else {}  # no error=None on every line
        log.info("operation.phase", id=self.id, kind=self.kind, node=self.node, phase=phase, **extra)

    async def wait_signal(self, name: str, within: float) -> None:
        """Waits for the coordinator's next step; a coordinator that vanished must not hold the node."""
        try:
            await asyncio.wait_for(self.signals[name].wait(), within)
        except TimeoutError:
            raise ReservationExpired(f"no {name} arrived from the coordinator within {within:.0f}s") from None

    def add_bytes(self, n: int) -> None:
        with self._counters:
            self._bytes_done += n
        metrics.TRANSFERRED.labels(self.kind, self.node).inc(n)

    def add_files(self, n: int) -> None:
        with self._counters:
            self._files_done += n

    def status(self) -> OperationStatus:
        with self._counters:
            bytes_done, files_done = self._bytes_done, self._files_done
        rate = None
        if self._transfer_started is not None:
            elapsed = (self._transfer_ended or time.monotonic()) - self._transfer_started
            rate = int(bytes_done / elapsed) if elapsed > 0 else None
        return OperationStatus(
            id=self.id,
            uid=self.uid,
            kind=self.kind,
            node=self.node,
            phase=self.phase,
            error=self.error,
            collections=self.collections,
            bytes_done=bytes_done,
            bytes_total=self.bytes_total,
            files_done=files_done,
            files_total=self.files_total,
            pause_ms=self.pause_ms,
            held=self.held,
            hold=self.hold,
            warnings=self.warnings,
            workers=self.workers,
            bytes_per_second=rate,
            bytes_reused=self.bytes_reused,
            started_at=self.started_at,
            updated_at=self.updated_at,
        )


class Job(Protocol):
    """What an operation kind (backup, restore) does in each step."""

    async def prepare(self, op: Operation) -> None: ...

    async def release(self, op: Operation) -> None:
        """Ends the workload's write hold, if this operation still has one."""

    async def transfer(self, op: Operation) -> None: ...

    async def discard(self, op: Operation, *, succeeded: bool) -> None: ...


async def in_thread(op: Operation, fn: Callable[[], T]) -> T:
    """Runs blocking work in a thread; if the operation is cancelled meanwhile, tells the thread
    to stop and waits until it has, so that cleanup never races a writer."""
    future = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        op.cancelled.set()
        with contextlib.suppress(BaseException):
            await future
        raise


class Registry:
    def __init__(self, node: str, *, reservation_limit: float) -> None:
        self.node = node
        self.reservation_limit = reservation_limit
        self.active: Operation | None = None
        self._history: OrderedDict[str, Operation] = OrderedDict()
        self._lock = asyncio.Lock()

    def get(self, op_id: str) -> Operation | None:
        if self.active is not None and self.active.id == op_id:
            return self.active
        return self._history.get(op_id)

    async def start(
        self,
        *,
        op_id: str,
        uid: str,
        kind: Literal["backup", "restore"],
        reservation_seconds: float,
        job_factory: Callable[[], Job],
    ) -> tuple[Operation, bool]:
        """Starts an operation, or returns the one this very request already started."""
        async with self._lock:
            existing = self.get(op_id)
            if existing is not None and existing.uid == uid:
                return existing, False
            if self.active is not None:
                raise OperationConflict(
                    f'node "{self.node}" is busy with {self.active.kind} "{self.active.id}" '
                    f"({self.active.phase})",
                    holder=self.active.status(),
                )
            op = Operation(op_id=op_id, uid=uid, kind=kind, node=self.node)
            op.job = job_factory()
            self.active = op
            if (replaced := self._history.pop(op_id, None)) is not None:
                replaced.end_waits()
            op.task = asyncio.create_task(
                self._drive(op, op.job, self.reservation(reservation_seconds)), name=f"op-{op_id}"
            )
            return op, True

    def reservation(self, requested: float) -> float:
        return min(requested, self.reservation_limit)

    async def release(self, op_id: str) -> Operation:
        op = self._require(op_id)
        if op.phase is NodePhase.PREPARED and op.job is not None:
            await op.job.release(op)
        elif op.phase in (NodePhase.PREPARING, NodePhase.FAILED, NodePhase.CANCELED):
            raise OperationConflict(f'{op.kind} "{op_id}" cannot be released: it is {op.phase}')
        return op

    async def signal(self, op_id: str, name: str, *, waiting_in: NodePhase) -> Operation:
        """Triggers step ``name`` of an operation that waits for it in phase ``waiting_in``;
        repeating it once the step has happened is harmless."""
        op = self._require(op_id)
        if op.phase is waiting_in:
            op.signals[name].set()
        elif not op.signals[name].is_set() and op.phase is not NodePhase.SUCCESS:
            raise OperationConflict(f'{op.kind} "{op_id}" cannot {name}: it is {op.phase}')
        return op

    async def commit(self, op_id: str) -> Operation:
        op = self._require(op_id)
        if op.phase is NodePhase.PREPARED:
            op.committed.set()
            op.set_phase(NodePhase.TRANSFERRING)
        elif op.phase is NodePhase.PREPARING:
            raise OperationConflict(f'{op.kind} "{op_id}" is not prepared yet')
        elif op.phase in (NodePhase.FAILED, NodePhase.CANCELED):
            raise OperationConflict(f'{op.kind} "{op_id}" cannot be committed: it is {op.phase}: {op.error}')
        return op

    async def abort(self, op_id: str, reason: str) -> Operation:
        op = self._require(op_id)
        if op.phase.terminal or op.task is None:
            return op
        op.abort_reason = reason
        op.cancelled.set()
        if not op.finishing:  # once cleaning up, it ends by itself; a cancel would cut the cleanup short
            op.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(op.task), ABORT_WAIT_SECONDS)
        return op

    async def shutdown(self) -> None:
        if self.active is not None:
            await self.abort(self.active.id, "the agent is shutting down")
        for op in self._history.values():  # the server waits for open requests before it stops
            op.end_waits()

    def _require(self, op_id: str) -> Operation:
        op = self.get(op_id)
        if op is None:
            raise UnknownOperation(f'node "{self.node}" has no operation "{op_id}"')
        return op

    async def _drive(self, op: Operation, job: Job, reservation: float) -> None:
        """Runs the operation to its end. The terminal phase is reported only once staging is
        cleaned and the node is free again, so whoever sees it can rely on both."""
        succeeded = False
        final: tuple[NodePhase, str | None] = (NodePhase.SUCCESS, None)
        try:
            await job.prepare(op)
            op.set_phase(NodePhase.PREPARED)
            try:
                await asyncio.wait_for(op.committed.wait(), reservation)
            except TimeoutError:
                raise ReservationExpired(
                    f"reservation expired: no commit arrived within {reservation:.0f}s"
                ) from None
            if op.phase is not NodePhase.TRANSFERRING:
                op.set_phase(NodePhase.TRANSFERRING)
            await job.transfer(op)
            succeeded = True
        except asyncio.CancelledError:
            op.cancelled.set()
            final = (NodePhase.CANCELED, op.abort_reason or "canceled")
        except ShardkeeperError as exc:
            op.cancelled.set()
            final = (NodePhase.FAILED, str(exc))
        except Exception as exc:
            op.cancelled.set()
            log.exception("operation.crashed", id=op.id)
            final = (NodePhase.FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            op.finishing = True
            try:
                await asyncio.shield(job.discard(op, succeeded=succeeded))
            except Exception:
                log.exception("operation.cleanup_failed", id=op.id)
            async with self._lock:
                if self.active is op:
                    self.active = None
                # What the job held (its node's listing) goes now: the operation stays in the history
                # for its status only. Kept, a long-lived agent's next backup of a million files
                # started on top of it (448 MB at its peak against 342: benchmarks/README.md).
                op.job = None
                op.set_phase(*final)
                self._history[op.id] = op
                while len(self._history) > HISTORY_SIZE:
                    self._history.popitem(last=False)[1].end_waits()
            release_free_memory()  # an idle agent keeps no operation's peak (milliseconds)
