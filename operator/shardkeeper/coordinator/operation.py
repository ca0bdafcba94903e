"""What reconciling a Backup and a Restore have in common.

Each kopf timer tick builds a reconciler for one object and calls ``tick``. It reads everything it
needs (CR status, pods, agents, backend) every time, so the operator can stop and restart at any
point: waiting in the queue, preparing, or observing the nodes and acting on the pure decision of
``twophase``. Subclasses say how to start (what to check and prepare), how to decide, and what the
kind-specific steps do.

The parts: ``operation_base`` (the state, what a kind defines, reaching every node, the end,
reporting), ``starting`` (the queue, the checks, prepare), ``running`` (observe, decide, act), and
here the entry points with what ends an operation whatever its phase (crashes, cleanup, delete).
"""

from __future__ import annotations

import datetime as dt

from shardkeeper.api.common import Phase
from shardkeeper.coordinator.objects import (
    TRANSIENT_ERRORS,
    FinishingFirst,
    Outcome,
    SpecT,
    StatusT,
    Stop,
    retry_later,
)
from shardkeeper.coordinator.running import Running
from shardkeeper.coordinator.starting import Starting
from shardkeeper.errors import (
    CorruptDescriptor,
    StorageError,
    TransientStorageError,
)

#: The longest wait between two attempts at a cleanup that failed (seconds).
CLEANUP_RETRY_MAX = 300.0


class OperationReconciler(Starting[SpecT, StatusT], Running[SpecT, StatusT]):
    """A Backup's or a Restore's reconciler: ``tick`` each timer tick, ``delete`` once deleted."""

    # --- entry points --------------------------------------------------------------------------

    async def tick(self) -> Outcome[StatusT]:
        st = self.status
        before = st.phase
        st.observed_generation = self.obj.generation
        if st.phase is not None and st.phase.terminal and st.cleanup_pending:
            await self._retry_cleanup()
            return Outcome(status=st, events=self.events)
        try:
            self._check()
            if self.op_spec.cancel and not st.nodes and (st.phase is None or not st.phase.terminal):
                self._finish(Phase.CANCELED, "canceled before it started", reason="Canceled")
            elif st.phase in (None, Phase.QUEUED) or (st.phase is Phase.STARTED and not st.nodes):
                await self._start()
            elif st.phase is not None and not st.phase.terminal:
                await self._advance()
            st.backend_unavailable_since = None
        except Stop:
            pass
        except TransientStorageError as exc:
            self._backend_trouble(exc)
        except CorruptDescriptor as exc:  # read from the backend: retrying will not mend it
            self._finish(Phase.FAILED, str(exc), reason="CorruptDescriptor")
        except StorageError as exc:  # denied, no such bucket...: retrying will not help
            self._finish(Phase.FAILED, f'backend "{self.op_spec.backend}": {exc}', reason="BackendError")
        except Exception as exc:
            await self._crashed(exc)
        if st.phase in (Phase.FAILED, Phase.CANCELED) and st.phase is not before:
            await self._end_cleanup()
        if st.phase is not before or self._failure_reason or self._message or not st.conditions:
            self._refresh_conditions()
        return Outcome(status=st, events=self.events)

    async def _end_cleanup(self) -> None:
        try:
            pending = await self._on_end()
        except Exception as exc:
            self.log.exception("operation.cleanup_failed", error=repr(exc))
            pending = f"{type(exc).__name__}: {exc}"
        self._note_cleanup(pending)

    def _note_cleanup(self, pending: str | None) -> None:
        """Records what is left to clean up (None: nothing) and when to try again: after 2 ticks,
        doubling up to ``CLEANUP_RETRY_MAX`` seconds, for as long as it takes."""
        st = self.status
        if pending is None:
            if st.cleanup_attempts:
                self._event("Normal", "CleanupDone", f"cleaned up after {st.cleanup_attempts + 1} attempts")
            st.cleanup_pending, st.cleanup_attempts, st.cleanup_retry_at = None, 0, None
            return
        if not st.cleanup_attempts:
            self._event("Warning", "CleanupPending", f"will retry until done: {pending}")
        st.cleanup_attempts += 1
        delay = min(self.ctx.settings.tick_seconds * 2**st.cleanup_attempts, CLEANUP_RETRY_MAX)
        st.cleanup_pending = pending[:2000]
        st.cleanup_retry_at = self.now + dt.timedelta(seconds=delay)

    async def _retry_cleanup(self) -> None:
        st = self.status
        if st.cleanup_retry_at is not None and self.now < st.cleanup_retry_at:
            return
        await self._end_cleanup()

    async def _crashed(self, exc: Exception) -> None:
        """A tick raised something no step handles. A transient error is raised again (the handler
        retries next tick) until it has lasted ``transient_error_seconds``; anything else, or a
        transient error past that, aborts every node and fails the operation, naming the error."""
        st = self.status
        where = f"{self.obj.kind} {self.obj.namespace}/{self.obj.name}"
        if isinstance(exc, TRANSIENT_ERRORS):
            since = self.obj.failing_since or self.now
            failing = (self.now - since).total_seconds()
            if retry_later(exc, failing_for=failing, limit=self.ctx.settings.transient_error_seconds):
                raise exc
            message, reason = f"{where}: failing for {failing:.0f}s: {exc}", "TransientErrorLimit"
        else:
            message = f"{where}: unexpected error while reconciling: {type(exc).__name__}: {exc}"
            reason = "ReconcileError"
        self.log.error("operation.tick_failed", reason=reason, exc_info=exc)
        running = st.phase is not None and not st.phase.terminal and bool(st.nodes)
        self._finish(Phase.FAILED, message[:4000], reason=reason)
        if running:  # FAILED on record first, then the nodes hear the abort
            try:
                await self._publish()
                await self._abort_all(f"aborted: {message}")
            except Exception as abort_exc:
                self.log.warning("operation.abort_not_delivered", error=repr(abort_exc))

    def _backend_trouble(self, exc: TransientStorageError) -> None:
        """The backend did not answer this tick. Try again next tick, within a deadline."""
        st = self.status
        st.backend_unavailable_since = st.backend_unavailable_since or self.now
        away = (self.now - st.backend_unavailable_since).total_seconds()
        limit = self.ctx.settings.backend_unavailable_seconds
        if away > limit:
            self._finish(
                Phase.FAILED,
                f'backend "{self.op_spec.backend}" unavailable for {away:.0f}s: {exc}',
                reason="BackendUnavailable",
            )
        else:
            self._message = f"backend unavailable, retrying: {exc}"
            self.log.warning("operation.backend_unavailable", error=str(exc), seconds=round(away))

    def finishes_before_deletion(self) -> bool:
        """Whether a deletion now lets the operation finish instead of canceling it."""
        return False

    async def delete(self) -> Outcome[StatusT]:
        """The object is being deleted: an unfinished operation (queued, starting or running) is
        canceled, everywhere, with one terminal Event; a finished one is left as it ended.

        One that must be finished rather than undone (``finishes_before_deletion``) gets a tick
        instead, which knows the object is being deleted; if that does not end it, the status is
        written and ``FinishingFirst`` raised (the handler ticks it again). Raises what ``tick`` does
        (a transient error within its deadline)."""
        self.deleting = True
        if self.finishes_before_deletion():
            await self.tick()
            phase = self.status.phase
            if phase is None or not phase.terminal:
                await self._publish()  # Terminating, with the nodes' progress (best effort)
                raise FinishingFirst(
                    f"deleted while {phase.value if phase else 'unstarted'}: the {self.noun} is "
                    f"finished first, not undone; the {self.obj.kind} goes once it has ended"
                )
        st = self.status
        if st.phase is None or not st.phase.terminal:
            if st.nodes:
                await self._abort_all(f"the {self.obj.kind} was deleted")
            self._finish(Phase.CANCELED, f"canceled: the {self.obj.kind} was deleted", reason="Canceled")
            await self._end_cleanup()
        elif st.cleanup_pending:  # one last try; the object goes either way, saying what is left
            await self._end_cleanup()
        if st.cleanup_pending:
            self._event(
                "Warning", "CleanupIncomplete", f"deleted before its cleanup was done: {st.cleanup_pending}"
            )
        return Outcome(status=st, events=self.events)
