"""One operation per cluster at a time: who goes next.

Backups and Restores of the same cluster (namespace + StatefulSet) queue up in creation order. An
operation may start when nothing else on its cluster is running and nothing older is waiting. The
operator keeps an index of every operation by cluster (a kopf index, fed by its watch), so this is
decided without extra API calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shardkeeper.api.common import Phase

RUNNING = frozenset(
    {Phase.STARTED, Phase.TRANSFERRING, Phase.TRANSFERRED, Phase.FINALIZING, Phase.CANCELLING}
)
WAITING = frozenset({None, Phase.QUEUED})


@dataclass(frozen=True)
class OpRef:
    kind: str
    namespace: str
    name: str
    uid: str
    created: str
    """creationTimestamp (RFC 3339, so it sorts as text)."""
    phase: Phase | None

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def _order(op: OpRef) -> tuple[str, str, str]:
    return (op.created, op.kind, op.name)


def blocker(me: OpRef, others: Iterable[OpRef], *, fresh_since: str = "") -> OpRef | None:
    """The operation ``me`` must wait for, or None if it may start now.

    Terminal operations never block. One with no status blocks only if it was created at or after
    ``fresh_since`` (RFC 3339, as ``created``): an older one never got a status from the operator
    (it cannot be handled), so it must not hold the queue."""
    peers = [o for o in others if o.uid != me.uid and (o.phase is not None or o.created >= fresh_since)]
    running = [o for o in peers if o.phase in RUNNING]
    if running:
        return min(running, key=_order)
    ahead = [o for o in peers if o.phase in WAITING and _order(o) < _order(me)]
    return min(ahead, key=_order) if ahead else None
