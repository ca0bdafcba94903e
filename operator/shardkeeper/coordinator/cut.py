"""Which cut a backup took: a pure function of every node's hold window.

A node's snapshot is its state while its writes were held (nothing changes inside the hold). With
``consistency: cluster`` every node holds until the operator has seen all of them frozen, so all
holds overlap, and the backup is the whole cluster's state at any instant inside that overlap: a
consistent cut (a write a node's snapshot holds, and everything that happened before it on any
node, are in the backup). ``find_cut`` checks that this really happened, from the windows as the
workloads measured them (``api.status.HoldWindow``), after the operator has released every hold:

    consistency  situation                                          result
    node         any                                                no cut claimed; the spread of the
                                                                    holds is reported
    cluster      a node without a hold window (no workload hook)    no cut: that node held nothing
    cluster      a node's hold ended by itself (hold timeout)       no cut: it ended before the release
    cluster      the windows overlap                                cut at the latest heldFrom (the first
                                                                    instant every node was held)
    cluster      they do not overlap (a node's clock far off, or    no cut, naming the two nodes
                 a hold that ended early without saying so)

A hold still open (``heldUntil`` absent: the release did not reach it) counts as lasting until now.
``consistentAt`` and the overlap are on the workloads' clocks; the holds overlap regardless of the
clocks (each began before the operator saw it prepared, and none ended before the release), which is
why a node that says it ended by itself is the one fatal case the clocks cannot excuse.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from shardkeeper.api.backup import BackupStatus
from shardkeeper.api.common import Consistency
from shardkeeper.api.status import HoldWindow


@dataclass(frozen=True)
class Cut:
    consistent_at: dt.datetime | None
    """An instant inside every hold (cluster consistency, when there is a cut)."""
    overlap_ms: float | None
    """How long every hold overlapped, in milliseconds (cluster); None otherwise."""
    problem: str | None
    """Why cluster consistency was not achieved; None if it was (or was not asked for)."""
    summary: str


def _ms(delta: dt.timedelta) -> float:
    return round(delta.total_seconds() * 1000, 3)


def find_cut(consistency: Consistency, windows: Mapping[str, HoldWindow | None], now: dt.datetime) -> Cut:
    """The cut the holds in ``windows`` (node -> window) make; ``now`` closes holds still open."""
    names = sorted(windows)
    if consistency is Consistency.NODE:
        starts = [w.held_from for w in windows.values() if w is not None]
        spread = f"; holds began within {_ms(max(starts) - min(starts))} ms" if len(starts) > 1 else ""
        return Cut(None, None, None, f"none claimed: each node at its own instant (consistency node){spread}")
    missing = [n for n in names if windows[n] is None]
    if missing:
        why = f"nodes {missing} held no writes (no workload hook): there is no cluster-wide cut"
        return Cut(None, None, why, why)
    held = {n: w for n, w in windows.items() if w is not None}
    expired = [n for n in names if held[n].ended_by_itself]
    if expired:
        why = f"the holds of nodes {expired} ended by themselves before the release: no cluster-wide cut"
        return Cut(None, None, why, why)
    first_end = min(names, key=lambda n: held[n].held_until or now)
    last_start = max(names, key=lambda n: held[n].held_from)
    start, end = held[last_start].held_from, held[first_end].held_until or now
    if end <= start:
        why = (
            f'the holds did not overlap: node "{first_end}" resumed writes at {end.isoformat()}, before '
            f'node "{last_start}" held them at {start.isoformat()}'
        )
        return Cut(None, None, why, why)
    overlap = _ms(end - start)
    return Cut(
        start,
        overlap,
        None,
        f"every node's writes were held at once for {overlap} ms from {start.isoformat()}: the backup "
        "is the cluster's state at that instant",
    )


def record_cut(status: BackupStatus, consistency: Consistency, now: dt.datetime) -> Cut:
    """Finds the cut of the nodes in ``status`` and records it there (and the longest pause)."""
    cut = find_cut(consistency, {name: node.hold for name, node in status.nodes.items()}, now)
    status.consistent_at, status.hold_overlap_ms, status.cut = cut.consistent_at, cut.overlap_ms, cut.summary
    pauses = [n.pause_ms for n in status.nodes.values() if n.pause_ms is not None]
    status.max_pause_ms = max(pauses) if pauses else None
    return cut
