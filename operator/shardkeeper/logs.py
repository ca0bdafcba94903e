"""Logging: structlog with bound context (backup id, node), rendered through stdlib logging so that
kopf's and aiohttp's records come out in the same format."""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import EventDict, WrappedLogger

#: The object fields of kopf's per-object records (``k8s_ref``) that our own lines carry too.
_OBJECT_FIELDS = ("kind", "namespace", "name")


def add_kubernetes_object(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """kopf's per-object log lines (handler failures and their tracebacks included) carry the object
    in the record's ``k8s_ref`` extra; keep its kind, namespace and name as fields."""
    record = event_dict.get("_record")
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict):
        for key in _OBJECT_FIELDS:
            if ref.get(key) and key not in event_dict:
                event_dict[key] = ref[key]
    return event_dict


def configure(*, level: str = "INFO", json: bool = False) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_kubernetes_object,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderers: list[structlog.types.Processor] = (
        # JSON has no traceback of its own: render it as text into the "exception" field.
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if json
        else [structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)]
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Chatty libraries: their debug output is noise and may carry request details.
    for noisy in ("aiohttp.access", "urllib3", "kubernetes", "botocore", "azure", "google"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kopf says "Timer ... succeeded" at INFO on every tick of every running operation and schedule
    # (tens of thousands of lines a day per schedule); our own lines say what happened. Its warnings
    # and errors (a handler's failure, with the object reference) still come through; DEBUG shows all.
    if logging.getLevelName(level.upper()) != logging.DEBUG:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
