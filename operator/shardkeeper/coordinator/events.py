"""Kubernetes Events about our objects, posted through the ``events.k8s.io/v1`` API.

Why not ``kopf.event``: kopf reports as component ``kopf`` and sets the legacy ``lastTimestamp``,
which has whole seconds, and ``kubectl describe`` orders events by it, so the events of one second
came out in any order. Here each event carries ``eventTime`` in microseconds and no legacy
timestamps; ``kubectl describe`` orders by ``eventTime`` when ``lastTimestamp`` is unset
(kubectl's ``SortableEvents``), and shows ``reportingController`` in its "From" column.

Limits from the API server's validation of ``events.k8s.io/v1`` (``ValidateEventCreate``): ``note``
at most 1 KiB, ``reason`` and ``action`` at most 128 characters, ``reportingInstance`` at most 128.
Events are auxiliary: a failure to post one is logged and never fails the caller.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import os
import socket
from collections.abc import Mapping
from typing import Any, Literal

import structlog
from kubernetes import client

from shardkeeper import conventions as c

log = structlog.get_logger(__name__)

#: ``reportingController`` of every event the operator posts (a qualified name, as the API requires).
REPORTING_CONTROLLER = f"{c.GROUP}/operator"
NOTE_MAX_BYTES = 1024
_CUT = " [...] "


def reporting_instance() -> str:
    """The pod's name (``POD_NAME`` from the downward API, else the host name, which is the pod's)."""
    return (os.environ.get("POD_NAME") or socket.gethostname() or "unknown")[:128]


def shorten(note: str, limit: int = NOTE_MAX_BYTES) -> str:
    """``note`` cut in the middle to at most ``limit`` UTF-8 bytes; its start and end say the most."""
    raw = note.encode()
    if len(raw) <= limit:
        return note
    half = (limit - len(_CUT.encode())) // 2
    head = raw[:half].decode(errors="ignore")
    tail = raw[len(raw) - half :].decode(errors="ignore")
    return f"{head}{_CUT}{tail}"


def _nanos(t: dt.datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def event_body(
    regarding: Mapping[str, Any],
    *,
    type_: Literal["Normal", "Warning"],
    reason: str,
    note: str,
    action: str,
    now: dt.datetime,
    instance: str,
) -> dict[str, Any]:
    """The ``events.k8s.io/v1`` Event for the object ``regarding`` (a kopf body or any object with
    apiVersion, kind and metadata name, namespace and uid)."""
    meta = regarding.get("metadata", {})
    namespace = meta.get("namespace") or "default"
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        # Named as client-go's recorder names them: the object's name and the time in hex nanoseconds.
        "metadata": {
            "name": f"{str(meta.get('name', 'shardkeeper'))[:200]}.{_nanos(now):x}",
            "namespace": namespace,
        },
        "eventTime": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "type": type_,
        "reason": reason[:128],
        "action": action[:128],
        "note": shorten(note),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance,
        "regarding": {
            "apiVersion": regarding.get("apiVersion"),
            "kind": regarding.get("kind"),
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
    }


@functools.cache
def _api() -> client.EventsV1Api:
    """One client for every event: its connection pool is reused (one per call would reconnect)."""
    return client.EventsV1Api()


def _create(body: dict[str, Any]) -> None:
    api = _api()
    # The client sends a dict as it is; its model would only be converted back.
    api.create_namespaced_event(body["metadata"]["namespace"], body, _request_timeout=10)  # type: ignore[arg-type]


async def post(
    regarding: Mapping[str, Any],
    *,
    type_: Literal["Normal", "Warning"],
    reason: str,
    note: str,
    action: str,
) -> None:
    """Posts one event now (the time is taken here, so events posted in turn keep their order)."""
    body = event_body(
        regarding,
        type_=type_,
        reason=reason,
        note=note,
        action=action,
        now=dt.datetime.now(dt.UTC),
        instance=reporting_instance(),
    )
    try:
        await asyncio.to_thread(_create, body)
    except Exception as exc:
        log.warning(
            "event.not_posted",
            reason=reason,
            object=body["regarding"]["name"],
            error=str(getattr(exc, "body", None) or exc)[:600],
        )
