"""What every reconcile needs from the outside world, built once when the operator starts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from shardkeeper.api.common import Backend
from shardkeeper.coordinator.agents import AgentClient
from shardkeeper.coordinator.kube import ClusterView, discover, publish_status
from shardkeeper.coordinator.settings import OperatorSettings
from shardkeeper.coordinator.twophase import Limits
from shardkeeper.storage import open_storage
from shardkeeper.storage.base import Storage

StorageOpener = Callable[..., Storage]


@dataclass
class OperatorContext:
    settings: OperatorSettings
    discover: Callable[[str, str], Awaitable[ClusterView]] = discover
    publish_status: Callable[[str, str, str, dict[str, Any]], Awaitable[None]] = publish_status
    open_storage: StorageOpener = open_storage
    _session: aiohttp.ClientSession | None = field(default=None, init=False)
    _agents: AgentClient | None = field(default=None, init=False)

    @property
    def limits(self) -> Limits:
        return Limits(
            prepare_timeout=self.settings.prepare_timeout_seconds,
            unreachable_timeout=self.settings.agent_unreachable_seconds,
        )

    @property
    def agents(self) -> AgentClient:
        if self._agents is None:
            # Created lazily because an aiohttp session belongs to the running event loop.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, enable_cleanup_closed=True)
            )
            self._agents = AgentClient(
                self._session,
                self.settings.agent_token,
                timeout=self.settings.agent_request_timeout,
                abort_timeout=self.settings.agent_abort_timeout,
            )
        return self._agents

    def storage(self, backend: Backend, path: str | None) -> Storage:
        return self.open_storage(backend, path=path)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session, self._agents = None, None
