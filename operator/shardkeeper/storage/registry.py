"""Backends by name, imported lazily so that an installation pays only for the SDKs it uses.

A backend is *enabled* when the environment configures it (its required variables are set); the
Helm chart sets them from ``backups.<backend>.envconfig``. Asking for one that is not enabled fails
with the names of the missing variables.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Protocol

from shardkeeper.api.common import Backend
from shardkeeper.errors import BackendNotConfigured
from shardkeeper.storage.base import Storage


class BackendFactory(Protocol):
    required_env: tuple[str, ...]

    def from_env(self, env: Mapping[str, str], *, path: str | None) -> Storage: ...


#: backend -> "module:attribute" of its factory; imported on first use.
_BACKENDS: dict[Backend, str] = {
    Backend.FILESYSTEM: "shardkeeper.storage.filesystem:FACTORY",
}


def _factory(backend: Backend) -> BackendFactory:
    target = _BACKENDS.get(backend)
    if target is None:
        raise BackendNotConfigured(f'backend "{backend}" is not supported by this version of shardkeeper')
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # an SDK missing from this installation
        raise BackendNotConfigured(
            f'backend "{backend}" needs a library that is not installed: {exc.name}'
        ) from exc
    factory: BackendFactory = getattr(module, attr)
    return factory


def missing_env(backend: Backend, env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    if backend not in _BACKENDS:
        return []
    required = _factory(backend).required_env
    return [name for name in required if not env.get(name)]


def configured_backends(env: Mapping[str, str] | None = None) -> list[Backend]:
    env = os.environ if env is None else env
    return [b for b in _BACKENDS if not missing_env(b, env)]


def open_storage(
    backend: Backend, *, path: str | None = None, env: Mapping[str, str] | None = None
) -> Storage:
    """The storage for ``backend``, at the backend's default path or at ``path`` if given."""
    env = os.environ if env is None else env
    if backend not in _BACKENDS:
        raise BackendNotConfigured(f'backend "{backend}" is not supported by this version of shardkeeper')
    missing = missing_env(backend, env)
    if missing:
        raise BackendNotConfigured(
            f'backend "{backend}" is not enabled: set {", ".join(missing)} '
            f"(Helm: backups.{backend}.enabled and backups.{backend}.envconfig)"
        )
    return _factory(backend).from_env(env, path=path)
