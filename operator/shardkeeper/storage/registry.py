"""Backends by name, imported lazily so that an installation pays only for the SDKs it uses.

A backend is *enabled* when the environment configures it: its required variables are set (the
Helm chart sets them from ``backups.<backend>.envconfig`` and ``secrets``). Several may be enabled
at once. Asking for one that is not enabled fails with the names of the missing variables; one
whose SDK is not installed fails with the package extra that brings it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

from shardkeeper.api.common import Backend
from shardkeeper.errors import BackendNotConfigured
from shardkeeper.storage.base import Storage


@dataclass(frozen=True)
class _Entry:
    module: str
    extra: str
    #: Each group must have at least one variable set, e.g. (("BUCKET",), ("CONN_STRING", "ACCOUNT")).
    required: tuple[tuple[str, ...], ...]
    #: Variables whose values must never appear in a message.
    secrets: tuple[str, ...] = ()


_BACKENDS: dict[Backend, _Entry] = {
    Backend.FILESYSTEM: _Entry("shardkeeper.storage.filesystem", "", (("BACKUP_FILESYSTEM_PATH",),)),
    Backend.S3: _Entry(
        "shardkeeper.storage.s3",
        "s3",
        (("BACKUP_S3_BUCKET",),),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_SESSION_TOKEN"),
    ),
    Backend.GCS: _Entry("shardkeeper.storage.gcs", "gcs", (("BACKUP_GCS_BUCKET",),)),
    Backend.AZURE: _Entry(
        "shardkeeper.storage.azure",
        "azure",
        (("BACKUP_AZURE_CONTAINER",), ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT")),
        ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_KEY"),
    ),
}


def missing_env(backend: Backend, env: Mapping[str, str] | None = None) -> list[str]:
    """What is missing to enable ``backend``: one entry per unsatisfied group ("A or B")."""
    env = os.environ if env is None else env
    return [" or ".join(group) for group in _BACKENDS[backend].required if not any(env.get(v) for v in group)]


def configured_backends(env: Mapping[str, str] | None = None) -> list[Backend]:
    env = os.environ if env is None else env
    return [b for b in _BACKENDS if not missing_env(b, env)]


def open_storage(
    backend: Backend, *, path: str | None = None, env: Mapping[str, str] | None = None
) -> Storage:
    """The storage for ``backend``, at the backend's default path or at ``path`` if given."""
    env = os.environ if env is None else env
    entry = _BACKENDS.get(backend)
    if entry is None:
        raise BackendNotConfigured(f'backend "{backend}" is not supported by this version of shardkeeper')
    missing = missing_env(backend, env)
    if missing:
        raise BackendNotConfigured(
            f'backend "{backend}" is not enabled: set {", ".join(missing)} '
            f"(Helm: backups.{backend}.enabled and backups.{backend}.envconfig)"
        )
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:  # an SDK missing from this installation
        raise BackendNotConfigured(
            f'backend "{backend}" needs {exc.name}, which is not installed: '
            f'pip install "shardkeeper[{entry.extra}]"'
        ) from exc
    secrets = [env[name] for name in entry.secrets if env.get(name)]
    storage: Storage = module.open_from_env(env, path=path, secrets=secrets)
    return storage
