"""Operator settings: every deadline the operator keeps, in one place, with its reason."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr


@dataclass(frozen=True)
class OperatorSettings:
    agent_token: SecretStr
    tick_seconds: float = 2.0
    """How often a running operation is reconciled (agents polled, status mirrored), in seconds:
    a tick starts this long after the last one started; one that took longer is followed by the
    next whole multiple of this after its start (kopf's sharp timer)."""
    reservation_seconds: float = 60.0
    """How long a prepared agent waits for commit before it frees itself. Covers a few ticks and a
    short operator restart; a longer outage aborts the backup, which is the safe side."""
    prepare_timeout_seconds: float = 300.0
    """Phase 1 (quiesce + freeze) must finish on every node within this, or everything aborts."""
    agent_unreachable_seconds: float = 60.0
    """A node whose agent does not answer for this long is declared failed, and the operation with it."""
    pods_ready_timeout_seconds: float = 120.0
    """How long a new operation waits for every pod of the cluster to be Ready before failing."""
    agent_request_timeout: float = 15.0
    agent_abort_timeout: float = 90.0
    """Abort waits until the agent has stopped its transfer and removed staging."""
    backend_unavailable_seconds: float = 120.0
    """The operator's own calls to the backend (descriptors) may fail this long before the
    operation fails; the agents retry their transfers on their own (storage.base.RetryPolicy)."""
    queue_index_grace_seconds: float = 30.0
    """A node busy with an operation the operator's index does not know yet (applied at the same
    moment) sends a new operation back to the queue, rather than failing it, for this long after its
    creation; an unknown holder after that (another coordinator) fails it."""
    queue_timeout_seconds: float = 6 * 3600.0
    """A queued operation gives up if the cluster stays busy this long (measured from its creation)."""
    transient_error_seconds: float = 120.0
    """A tick that raises an error classed transient (the API server or an agent could not be
    asked) is retried each tick for this long; then the operation fails (``TransientErrorLimit``).
    Any other exception in a tick fails the operation at once (``ReconcileError``)."""
    unstatused_grace_seconds: float = 30.0
    """An operation the operator has not given a status this long after its creation no longer
    counts in its cluster's queue: it can never hold the queue."""
    progress_interval_seconds: float = 5.0
    """Progress-only status updates are written at most this often per object."""
