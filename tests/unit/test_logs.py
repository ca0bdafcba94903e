"""kopf's own per-object log lines keep the object's kind, namespace and name in our structlog
setup, tracebacks included, in both renderings."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import kopf
import pytest
import structlog
from kopf._core.actions.loggers import ObjectLogger  # the adapter kopf logs every object's lines with

from shardkeeper.logs import configure


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _kopf_handler_failure() -> None:
    body = kopf.Body(
        {
            "apiVersion": "shardkeeper.io/v1alpha1",
            "kind": "Backup",
            "metadata": {"name": "nightly", "namespace": "team-a", "uid": "u-1"},
        }
    )
    logger = ObjectLogger(body=body, settings=kopf.OperatorSettings())
    try:
        raise RuntimeError("boom in a handler")
    except RuntimeError:
        logger.exception("Handler 'reconcile_backup' failed with an exception. Will retry.")


@pytest.mark.usefixtures("restore_logging")
def test_console_lines_keep_the_object_and_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure(json=False)
    _kopf_handler_failure()
    err = capsys.readouterr().err
    assert "Handler 'reconcile_backup' failed" in err
    assert "kind=Backup" in err and "name=nightly" in err and "namespace=team-a" in err
    assert "Traceback (most recent call last)" in err and "RuntimeError: boom in a handler" in err


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_keep_the_object_and_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure(json=True)
    _kopf_handler_failure()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["kind"], line["namespace"], line["name"]) == ("Backup", "team-a", "nightly")
    assert line["logger"] == "kopf.objects" and line["level"] == "error"
    assert "RuntimeError: boom in a handler" in line["exception"]
