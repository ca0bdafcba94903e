"""When a workload held writes for a snapshot: as it says, or within bounds the agent can vouch for.

A workload that reports its hold (``api.hook.HeldWrites``) is believed: its ``heldFrom``/``heldUntil``
make the window and its ``heldMs`` the pause. One that says nothing gets the agent's bounds:

* the window (used to prove that the holds of a cluster overlap) is the *inner* one: writes were
  surely held from the prepare's answer until the release was sent;
* the pause (what the writers felt) is the *outer* one: from the prepare being sent until the
  release was answered.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

from shardkeeper.api.common import utcnow
from shardkeeper.api.hook import HeldWrites
from shardkeeper.api.status import HoldWindow


@dataclass
class Hold:
    listed: HeldWrites
    """What the workload said with its file list."""
    asked_at: dt.datetime
    answered_at: dt.datetime = field(default_factory=utcnow)
    asked_mono: float = 0.0
    ended: HeldWrites | None = None
    """What the workload said when writes resumed: to the release, or to the resume of a deferred
    listing (None until it was sent)."""
    release_sent_at: dt.datetime | None = None
    release_answered_mono: float | None = None

    def __post_init__(self) -> None:
        self.listed = self.listed.hold_only()

    @property
    def writes_resumed(self) -> bool:
        """The workload resumed writes before it answered the prepare (only compaction is paused)."""
        return self.listed.held_until is not None

    def released(self, ended: HeldWrites, sent_at: dt.datetime) -> None:
        """Records the end of the write hold: the answer to ``release``, or to ``resume`` when the
        listing was deferred (then the later ``release`` ends only the compaction hold, and what it
        says changes nothing here: the first end recorded is the hold's)."""
        if self.ended is not None:
            return
        self.ended, self.release_sent_at = ended.hold_only(), sent_at
        self.release_answered_mono = time.perf_counter()

    def window(self) -> HoldWindow:
        """The hold window as well as it is known now (``heldUntil`` None: still holding)."""
        ended = self.ended or HeldWrites()
        if self.listed.held_from is not None:
            return HoldWindow(
                held_from=self.listed.held_from,
                held_until=self.listed.held_until or ended.held_until,
                measured_by="workload",
                ended_by_itself=ended.expired and not self.writes_resumed,
            )
        return HoldWindow(
            held_from=self.answered_at,
            held_until=self.release_sent_at,
            measured_by="agent",
            ended_by_itself=ended.expired,
        )

    def pause_ms(self) -> float | None:
        """How long writes were held, in milliseconds; None while that is not known yet."""
        said = self.listed if self.writes_resumed else self.ended
        if said is not None and said.held_ms is not None:
            return said.held_ms
        window = self.window()
        if window.measured_by == "workload" and window.held_until is not None:
            return (window.held_until - window.held_from).total_seconds() * 1000
        if self.release_answered_mono is None:
            return None
        return (self.release_answered_mono - self.asked_mono) * 1000
