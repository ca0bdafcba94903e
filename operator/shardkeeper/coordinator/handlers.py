"""kopf handlers: thin on purpose. Parse the object, let the reconciler decide, write the status.

A timer drives every Backup and Restore that is not finished; it stops by itself (its ``when``
filter) once the phase is terminal, so a finished object costs nothing and re-applying it changes
nothing. An index of every operation by cluster lets each one wait its turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
import structlog

from shardkeeper import conventions as c
from shardkeeper.api.common import TERMINAL_PHASES, Phase, utcnow
from shardkeeper.api.schedule import SCHEDULE_LABEL
from shardkeeper.coordinator import events as k8s_events
from shardkeeper.coordinator import metrics, schedule_handlers
from shardkeeper.coordinator.context import OperatorContext
from shardkeeper.coordinator.kinds import KINDS, Kind, Unparsable, operation_object, unparsable_outcome
from shardkeeper.coordinator.kube import merge_patch
from shardkeeper.coordinator.objects import (
    TRANSIENT_ERRORS,
    DeletionDeferred,
    Event,
    FinishingFirst,
    OperationObject,
    Outcome,
    retry_later,
)
from shardkeeper.coordinator.queue import WAITING, OpRef

log = structlog.get_logger(__name__)

#: Fields that change with every byte moved; writing them is rate-limited.
_PROGRESS_FIELDS = {"bytesDone", "filesDone", "bytesPerSecond", "throughput", "progress"}
_LAST_PROGRESS_WRITE = "shardkeeper-last-progress-write"
_FAILING_SINCE = "shardkeeper-failing-since"
#: One tick or deletion of an object at a time (kopf runs the timer and the delete handler of one
#: object concurrently), the status the last tick produced, and "the delete handler finished it".
_LOCK = "shardkeeper-lock"
_LAST_STATUS = "shardkeeper-last-status"
_DELETED = "shardkeeper-deleted"
#: "The delete handler said it finishes the operation first" (said once per operator process).
_FINISHING = "shardkeeper-finishing"
_INDEXES = ("backups_by_cluster", "restores_by_cluster")


def _op_ref(kind: str, body: kopf.Body) -> OpRef:
    meta, status = body.get("metadata", {}), body.get("status") or {}
    phase = status.get("phase")
    return OpRef(
        kind=kind,
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        created=meta.get("creationTimestamp", ""),
        phase=Phase(phase) if phase in {p.value for p in Phase} else None,
    )


def _unfinished(status: kopf.Status, **_: Any) -> bool:
    """Still to be reconciled: running, or ended with a cleanup left to do."""
    return status.get("phase") not in {p.value for p in TERMINAL_PHASES} or bool(status.get("cleanupPending"))


def _finished_but_not_observed(body: kopf.Body, status: kopf.Status, **_: Any) -> bool:
    meta = body.get("metadata", {})
    return (
        not _unfinished(status)
        and not meta.get("deletionTimestamp")
        and status.get("observedGeneration") != meta.get("generation")
    )


def _without_progress(status: dict[str, Any]) -> dict[str, Any]:
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in _PROGRESS_FIELDS}

    out = strip(status)
    out["nodes"] = {name: strip(node) for name, node in status.get("nodes", {}).items()}
    return out


def _apply(
    outcome: Outcome[Any],
    *,
    before: dict[str, Any],
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    interval: float,
) -> None:
    """Writes the tick's status, unless only progress changed, recently.

    ``before`` is the status as the server has it after the tick's own writes (the reconciler's
    ``written``): the body is a live view, not to be trusted for that."""
    new = outcome.status.wire()
    if new == before:
        return
    if _without_progress(new) == _without_progress(before):
        last = memo.get(_LAST_PROGRESS_WRITE, 0.0)
        if time.monotonic() - last < interval:
            return
    memo[_LAST_PROGRESS_WRITE] = time.monotonic()
    patch.status.update(merge_patch(before, new))


def _measure(
    kind: Kind, body: kopf.Body, obj: OperationObject[Any, Any], outcome: Outcome[Any], peers: list[OpRef]
) -> None:
    """Metrics: an operation that ended in this tick, and its cluster's queue depth."""
    cluster = str(getattr(obj.spec, "cluster", ""))
    phase = outcome.status.phase
    _count_end(kind, body, obj, outcome.status)
    backend = str(getattr(obj.spec, "backend", ""))
    metrics.operation_state(kind.name, obj.namespace, obj.name, cluster, backend, outcome.status)
    waiting = {ref.uid for ref in peers if ref.phase in WAITING and ref.uid != obj.uid}
    if phase in WAITING:
        waiting.add(obj.uid)
    metrics.queue_depth(obj.namespace, cluster, len(waiting))


def _count_end(kind: Kind, body: kopf.Body, obj: OperationObject[Any, Any], status: Any) -> None:
    """Counts the operation in the metrics if it reached a terminal phase since ``obj`` was read."""
    phase = status.phase
    if phase is not None and phase.terminal and phase is not obj.status.phase:
        cluster = str(getattr(obj.spec, "cluster", ""))
        schedule = (body.get("metadata", {}).get("labels") or {}).get(SCHEDULE_LABEL, "")
        metrics.operation_ended(kind.name, obj.namespace, cluster, schedule, status, utcnow())


def _lock(memo: kopf.Memo) -> asyncio.Lock:
    lock = memo.get(_LOCK)
    if lock is None:
        lock = memo[_LOCK] = asyncio.Lock()
    return lock


async def _post(body: kopf.Body, events: Sequence[Event], action: str) -> None:
    for event in events:
        await k8s_events.post(body, type_=event.type, reason=event.reason, note=event.message, action=action)


def interrupted(body: Mapping[str, Any], cancel_read: bool) -> bool:
    """Whether the object, as it is now (``body``, kopf's live view), is being deleted, or has had
    spec.cancel set since the tick read it (``cancel_read``: its value then). A cancel the tick
    already saw is the tick's own decision, not an interruption (a restore finalizing ignores it)."""
    if body.get("metadata", {}).get("deletionTimestamp"):
        return True
    return bool(body.get("spec", {}).get("cancel")) and not cancel_read


def _register_kind(registry: kopf.OperatorRegistry, ctx: OperatorContext, kind: Kind) -> None:
    interval = ctx.settings.tick_seconds

    # Handlers defined in a function get "register.<locals>." ids; give them plain ones (an index's
    # id is also the name of the keyword argument that carries it).
    @kopf.index(c.GROUP, c.VERSION, kind.plural, id=kind.index, registry=registry)
    def by_cluster(body: kopf.Body, namespace: str | None, spec: kopf.Spec, **_: Any) -> Any:
        return {(namespace, spec.get("cluster")): _op_ref(kind.name, body)}

    @kopf.timer(
        c.GROUP,
        c.VERSION,
        kind.plural,
        id=f"reconcile_{kind.name.lower()}",
        interval=interval,
        # kopf's sharp timing: the next tick starts a whole number of intervals after this one
        # started, not an interval after it ended, so a tick that takes long (many nodes to ask)
        # does not push every later one back by its own length (benchmarks/nodes.py: 30 nodes).
        sharp=True,
        initial_delay=0.1,
        backoff=interval,
        when=_unfinished,
        registry=registry,
    )
    async def reconcile(
        body: kopf.Body,
        patch: kopf.Patch,
        memo: kopf.Memo,
        namespace: str | None,
        spec: kopf.Spec,
        **kwargs: Any,
    ) -> None:
        def deleting() -> bool:
            return bool(body.get("metadata", {}).get("deletionTimestamp"))

        async with _lock(memo):
            if memo.get(_DELETED) or deleting():
                return  # the delete handler cancels it; a tick must not start anything now
            key = (namespace, spec.get("cluster"))
            indexes: list[kopf.Index[tuple[str | None, str | None], OpRef]] = [
                kwargs[name] for name in _INDEXES
            ]
            peers = [ref for index in indexes for ref in index.get(key, [])]
            progress_interval = ctx.settings.progress_interval_seconds
            try:
                obj = operation_object(kind, body, peers, memo.get(_FAILING_SINCE))
            except Unparsable as exc:
                outcome = unparsable_outcome(kind, body, exc)
                await _post(body, outcome.events, action=kind.name)
                _apply(outcome, before={}, body=body, patch=patch, memo=memo, interval=progress_interval)
                return
            reconciler = kind.reconciler(ctx, obj)
            cancel_read = bool(getattr(obj.spec, "cancel", False))
            reconciler.interrupted = lambda: interrupted(body, cancel_read)  # body: a live view in timers
            reconciler.post_events = lambda events: _post(body, events, action=kind.name)
            try:
                outcome = await reconciler.tick()
            except Exception as exc:
                # Only a transient error within its deadline gets here (the reconciler fails the
                # operation on any other): the next tick observes again.
                memo[_FAILING_SINCE] = obj.failing_since or utcnow()
                raise kopf.TemporaryError(str(exc), delay=interval) from exc
            finally:
                await reconciler.posted()  # the Events of mid-tick writes first, in order
            memo.pop(_FAILING_SINCE, None)
            memo[_LAST_STATUS] = outcome.status.wire()
            await _post(body, outcome.events, action=kind.name)
            written = reconciler.written  # the status as the tick found it, or as it last published it
            _apply(outcome, before=written, body=body, patch=patch, memo=memo, interval=progress_interval)
            _measure(kind, body, obj, outcome, peers)

    @kopf.on.delete(
        c.GROUP, c.VERSION, kind.plural, id=f"delete_{kind.name.lower()}", registry=registry, backoff=interval
    )
    async def delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """Waits for a tick in progress (it may be preparing nodes), then cancels from the status
        that tick produced: one terminal outcome, whoever got there first. An operation that must
        be finished rather than undone (a restore in FINALIZING) is ticked here, a tick apart, until
        it has ended (within its own deadlines), then the object goes."""
        async with _lock(memo):
            while True:
                try:
                    obj = operation_object(
                        kind, body, failing_since=memo.get(_FAILING_SINCE), status=memo.get(_LAST_STATUS)
                    )
                except Unparsable as exc:
                    log.warning(
                        "operation.deleted_unparsable",
                        name=body.get("metadata", {}).get("name"),
                        error=str(exc),
                    )
                    return  # it never ran: nothing to cancel or delete
                if await _delete_once(obj, body, memo):
                    break
                await asyncio.sleep(interval)
            memo[_DELETED] = True
            metrics.operation_state(kind.name, obj.namespace, obj.name, str(obj.spec.cluster), "", None)

    async def _delete_once(obj: OperationObject[Any, Any], body: kopf.Body, memo: kopf.Memo) -> bool:
        """One attempt at deleting; False if the operation is being finished first (tick again)."""
        reconciler = kind.reconciler(ctx, obj)
        finishing, ticking = False, reconciler.finishes_before_deletion()
        try:
            await reconciler.delete()
            memo.pop(_FAILING_SINCE, None)
        except FinishingFirst as exc:
            finishing = True
            memo.pop(_FAILING_SINCE, None)
            if not memo.get(_FINISHING):
                memo[_FINISHING] = True
                reconciler.events.insert(0, Event("Normal", "FinishingBeforeDeletion", str(exc)))
        except DeletionDeferred as exc:
            raise kopf.TemporaryError(str(exc), delay=interval) from exc
        except Exception as exc:
            if ticking and isinstance(exc, TRANSIENT_ERRORS):
                # A tick finishing the operation met a transient error within the operation's own
                # deadline (past it, the tick fails the operation): tick again, as the timer would.
                memo[_FAILING_SINCE] = obj.failing_since or utcnow()
                log.warning(
                    "operation.delete_tick_failed", name=obj.name, namespace=obj.namespace, error=str(exc)
                )
                return False
            # Transient errors are retried for a while; nothing keeps the object Terminating for
            # ever: past that, or on any other error, it goes, with a Warning saying what was not done.
            since = obj.deleting_since or utcnow()
            failing = (utcnow() - since).total_seconds()
            if retry_later(exc, failing_for=failing, limit=ctx.settings.transient_error_seconds):
                raise kopf.TemporaryError(str(exc), delay=interval) from exc
            log.exception("operation.delete_failed", name=obj.name, namespace=obj.namespace)
            reconciler.events.append(
                Event(
                    "Warning",
                    "CleanupIncomplete",
                    f"{kind.name} {obj.namespace}/{obj.name} deleted without finishing its "
                    f"cleanup: {type(exc).__name__}: {exc}",
                )
            )
        finally:
            # Whatever was decided (canceled, events) is not decided again on a retry.
            memo[_LAST_STATUS] = reconciler.status.wire()
            await _post(body, reconciler.events, action=kind.name)
            reconciler.events.clear()
            _count_end(kind, body, obj, reconciler.status)
        return not finishing

    # A finished object has no timer; a later spec change (deletionPolicy, a late cancel) still gets
    # observed, so that GitOps tools comparing observedGeneration with generation see it settled.
    @kopf.on.event(
        c.GROUP,
        c.VERSION,
        kind.plural,
        id=f"observe_{kind.name.lower()}",
        when=_finished_but_not_observed,
        registry=registry,
    )
    def observe(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        generation = body.get("metadata", {}).get("generation")
        patch.status["observedGeneration"] = generation
        conditions = body.get("status", {}).get("conditions") or []
        patch.status["conditions"] = [{**cond, "observedGeneration": generation} for cond in conditions]


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Progress and diff-base in annotations: the status schema is strict and belongs to us.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=c.GROUP)
        settings.persistence.finalizer = c.FINALIZER
        settings.posting.level = logging.WARNING
        # kopf's own events (a handler's failure) name us too; ours go through ``events``.
        settings.posting.reporting_component = k8s_events.REPORTING_CONTROLLER
        settings.posting.reporting_instance = k8s_events.reporting_instance()
        settings.peering.standalone = True
        # Serve the CRDs present at start-up; no cluster-wide list/watch of CRDs and namespaces needed.
        settings.scanning.disabled = True
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 30
        # A deleted object keeps kopf's finalizer until its timer has exited; a timer still in a
        # tick (or waiting for the delete handler's lock) is polled again only after this, 60 s by
        # default: the "Terminating for about 60 s" after an early delete.
        settings.background.instant_exit_timeout = 0.1
        settings.background.cancellation_polling = ctx.settings.tick_seconds

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In-cluster ServiceAccount or kubeconfig, whichever the kubernetes client finds.
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def close(**_: Any) -> None:
        await ctx.close()

    for kind in KINDS:
        _register_kind(registry, ctx, kind)
    schedule_handlers.register(registry, ctx)
