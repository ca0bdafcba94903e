"""kopf handlers: thin on purpose. Parse the object, let the reconciler decide, write the status.

A timer drives every Backup that is not finished; it stops by itself (its ``when`` filter) once
the phase is terminal, so a finished Backup costs nothing and re-applying it changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import kopf
import structlog

from shardkeeper import conventions as c
from shardkeeper.api.backup import BackupSpec, BackupStatus
from shardkeeper.api.common import TERMINAL_PHASES, Phase
from shardkeeper.coordinator.backup import BackupObject, BackupReconciler, Outcome
from shardkeeper.coordinator.context import OperatorContext
from shardkeeper.coordinator.kube import KubernetesUnavailable
from shardkeeper.coordinator.queue import OpRef
from shardkeeper.errors import StorageError

log = structlog.get_logger(__name__)

#: Fields that change with every byte moved; writing them is rate-limited.
_PROGRESS_FIELDS = {"bytesDone", "filesDone", "bytesPerSecond", "throughput"}
_LAST_PROGRESS_WRITE = "shardkeeper-last-progress-write"


def _backup_object(body: kopf.Body, peers: Sequence[OpRef] = ()) -> BackupObject:
    meta = body.get("metadata", {})
    return BackupObject(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        generation=meta.get("generation"),
        created=meta.get("creationTimestamp", ""),
        spec=BackupSpec.model_validate(body.get("spec", {})),
        status=BackupStatus.model_validate(body.get("status") or {}),
        peers=peers,
    )


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
    return status.get("phase") not in {p.value for p in TERMINAL_PHASES}


def _without_progress(status: dict[str, Any]) -> dict[str, Any]:
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in _PROGRESS_FIELDS}

    out = strip(status)
    out["nodes"] = {name: strip(node) for name, node in status.get("nodes", {}).items()}
    return out


def _apply(outcome: Outcome, *, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, interval: float) -> None:
    old = BackupStatus.model_validate(body.get("status") or {}).wire()
    new = outcome.status.wire()
    if new == old:
        return
    if _without_progress(new) == _without_progress(old):
        last = memo.get(_LAST_PROGRESS_WRITE, 0.0)
        if time.monotonic() - last < interval:
            return
    memo[_LAST_PROGRESS_WRITE] = time.monotonic()
    patch.status.update(new)
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    interval = ctx.settings.tick_seconds

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Progress and diff-base in annotations: the status schema is strict and belongs to us.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=c.GROUP)
        settings.persistence.finalizer = c.FINALIZER
        settings.posting.level = logging.WARNING
        settings.peering.standalone = True
        # Serve the CRDs present at start-up; no cluster-wide list/watch of CRDs and namespaces needed.
        settings.scanning.disabled = True
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 30

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In-cluster ServiceAccount or kubeconfig, whichever the kubernetes client finds.
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def close(**_: Any) -> None:
        await ctx.close()

    # Handlers defined in a function get "register.<locals>." ids; give them plain ones (the index's
    # id is also the name of the keyword argument that carries it).
    @kopf.index(c.GROUP, c.VERSION, c.BACKUP_PLURAL, id="operations_by_cluster", registry=registry)
    def operations_by_cluster(body: kopf.Body, namespace: str | None, spec: kopf.Spec, **_: Any) -> Any:
        return {(namespace, spec.get("cluster")): _op_ref(c.BACKUP_KIND, body)}

    @kopf.timer(
        c.GROUP,
        c.VERSION,
        c.BACKUP_PLURAL,
        id="reconcile_backup",
        interval=interval,
        initial_delay=0.1,
        backoff=interval,
        when=_unfinished,
        registry=registry,
    )
    async def reconcile_backup(
        body: kopf.Body,
        patch: kopf.Patch,
        memo: kopf.Memo,
        namespace: str | None,
        spec: kopf.Spec,
        **kwargs: Any,
    ) -> None:
        index: kopf.Index[tuple[str | None, str | None], OpRef] = kwargs["operations_by_cluster"]
        peers = list(index.get((namespace, spec.get("cluster")), []))
        obj = _backup_object(body, peers)
        try:
            outcome = await BackupReconciler(ctx, obj).tick()
        except (KubernetesUnavailable, StorageError) as exc:
            # The next tick observes again; nothing was decided on half an observation.
            raise kopf.TemporaryError(str(exc), delay=interval) from exc
        _apply(outcome, body=body, patch=patch, memo=memo, interval=ctx.settings.progress_interval_seconds)

    @kopf.on.delete(
        c.GROUP, c.VERSION, c.BACKUP_PLURAL, id="delete_backup", registry=registry, backoff=interval
    )
    async def delete_backup(body: kopf.Body, **_: Any) -> None:
        outcome = await BackupReconciler(ctx, _backup_object(body)).delete()
        for event in outcome.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
