"""Every backend runs the same contract, against a real server (or directory)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from shardkeeper.api.common import Backend
from shardkeeper.storage import open_storage
from shardkeeper.storage.base import Storage
from testbed.servers import StorageServer
from tests.storage.contract import StorageContract


class BackendFixtures:
    backend: Backend

    @pytest.fixture
    def env(self, storage_servers: dict[str, StorageServer], tmp_path: Path) -> dict[str, str]:
        return storage_servers[self.backend.value].env()

    @pytest.fixture
    def make_storage(self, env: dict[str, str]) -> Callable[[str], Storage]:
        return lambda prefix: open_storage(self.backend, path=prefix, env=env)

    @pytest.fixture
    def storage(self, make_storage: Callable[[str], Storage]) -> Storage:
        return make_storage(f"contract/{uuid.uuid4().hex[:10]}")


class TestFilesystem(BackendFixtures, StorageContract):
    backend = Backend.FILESYSTEM

    @pytest.fixture
    def env(self, tmp_path: Path) -> dict[str, str]:  # type: ignore[override]
        return {"BACKUP_FILESYSTEM_PATH": str(tmp_path)}


class TestS3(BackendFixtures, StorageContract):
    backend = Backend.S3


class TestGcs(BackendFixtures, StorageContract):
    backend = Backend.GCS


class TestAzure(BackendFixtures, StorageContract):
    backend = Backend.AZURE
