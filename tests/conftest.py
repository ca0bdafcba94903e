"""Shared fixtures. Test tiers, by what they need:

* ``tests/unit``: pure logic and the local filesystem; no network, no processes.
* ``tests/agent``: a real agent service in-process (aiohttp test server) on a real data directory.
* ``tests/storage``: one contract suite, run unchanged against every backend, each against a real
  server on loopback (versitygw for S3, fake-gcs-server, Azurite) started here.
* ``tests/e2e``: the real control plane (kube-apiserver + etcd built from Go modules), real agent
  and sample-database processes, and the real operator process. Nothing is mocked there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.servers import SERVERS, StorageServer

_E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test under tests/e2e as ``e2e`` by its path (a ``pytestmark`` in a conftest marks
    nothing), so ``-m e2e`` and ``-m "not e2e"`` select the tiers."""
    for item in items:
        if item.path.is_relative_to(_E2E):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def storage_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, StorageServer]]:
    """One running server per cloud backend, started on first use and stopped at the end."""
    started: dict[str, StorageServer] = {}

    class Lazy(dict[str, StorageServer]):
        def __missing__(self, name: str) -> StorageServer:
            server = SERVERS[name](tmp_path_factory.mktemp(f"{name}-server")).start()
            server.create_bucket()
            started[name] = server
            self[name] = server
            return server

    yield Lazy()
    for server in started.values():
        server.stop()
