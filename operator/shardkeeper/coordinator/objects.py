"""The values a reconcile works with: the object as read, what a tick decides (status and Events),
and which errors are worth another tick. No I/O here."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

import aiohttp
from pydantic import BaseModel

from shardkeeper.api.common import Backend
from shardkeeper.api.status import OperationStatusBase
from shardkeeper.coordinator import queue
from shardkeeper.coordinator.kube import KubernetesUnavailable
from shardkeeper.errors import AgentUnreachable, ShardkeeperError, TransientStorageError

T = TypeVar("T")

#: Errors worth retrying next tick: the API server or an agent could not be asked. Anything else a
#: tick raises is a fault that retrying will not fix.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    KubernetesUnavailable,
    AgentUnreachable,
    TransientStorageError,
    ConnectionError,
    TimeoutError,
    aiohttp.ClientError,
)


def retry_later(exc: BaseException, *, failing_for: float, limit: float) -> bool:
    """Whether ``exc`` is worth another try: a transient error (``TRANSIENT_ERRORS``) that has
    lasted ``failing_for`` seconds, less than ``limit``. Anything else is final at once."""
    return isinstance(exc, TRANSIENT_ERRORS) and failing_for < limit


class _Config(Protocol):
    @property
    def path(self) -> str | None: ...


class OperationSpec(Protocol):
    @property
    def backend(self) -> Backend: ...

    @property
    def cluster(self) -> str: ...

    @property
    def cancel(self) -> bool: ...

    @property
    def config(self) -> _Config: ...


SpecT = TypeVar("SpecT", bound=BaseModel)
StatusT = TypeVar("StatusT", bound=OperationStatusBase)


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class OperationObject(Generic[SpecT, StatusT]):
    """The parts of a Backup or Restore custom resource a reconcile looks at."""

    kind: str
    name: str
    namespace: str
    uid: str
    generation: int | None
    created: str
    spec: SpecT
    status: StatusT
    peers: Sequence[queue.OpRef] = ()
    """Every Backup and Restore of the same cluster, as the operator's index last saw them."""
    deleting_since: dt.datetime | None = None
    """metadata.deletionTimestamp, once the object is being deleted."""
    failing_since: dt.datetime | None = None
    """Since when every tick has raised a transient error (None if the last tick did not)."""

    def ref(self) -> queue.OpRef:
        return queue.OpRef(
            kind=self.kind,
            namespace=self.namespace,
            name=self.name,
            uid=self.uid,
            created=self.created,
            phase=self.status.phase,
        )


@dataclass
class Outcome(Generic[StatusT]):
    status: StatusT
    events: list[Event] = field(default_factory=list)


class Stop(Exception):
    """Ends a tick early; the status already says why."""


class DeletionDeferred(ShardkeeperError):
    """The object cannot go yet (its Backup's backend is away); the delete handler tries again a
    tick later."""


class FinishingFirst(Exception):
    """The object is deleted while its operation must be finished rather than undone (a restore
    in FINALIZING); the delete handler runs its ticks until it has ended, then lets it go."""


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)
