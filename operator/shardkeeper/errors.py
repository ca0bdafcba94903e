"""The project's error vocabulary.

SDK and HTTP errors are translated into these at the boundary where they happen; the kopf handlers
translate these into ``kopf.TemporaryError`` (worth retrying) or a terminal FAILED status.
"""


class ShardkeeperError(Exception):
    """Base of every error this project raises on purpose."""


class SpecError(ShardkeeperError):
    """The user's request cannot be carried out as written; retrying will not help."""


# --- storage ---------------------------------------------------------------------------------


class StorageError(ShardkeeperError):
    """A backend operation failed."""


class ObjectNotFound(StorageError):
    """The key does not exist in the backend."""


class AccessDenied(StorageError):
    """The backend refused the credentials or the operation."""


class TransientStorageError(StorageError):
    """A failure that may go away if the operation is retried (timeouts, throttling, 5xx)."""


class BackendNotConfigured(SpecError):
    """A backend was requested that this installation has not enabled."""


# --- agents ----------------------------------------------------------------------------------


class AgentError(ShardkeeperError):
    """An agent could not be asked, or answered with a failure."""


class AgentUnreachable(AgentError):
    """No answer from the agent (connection refused, timeout)."""


class AgentRefused(AgentError):
    """The agent answered, and said no (busy, bad request, precondition failed)."""

    def __init__(self, message: str, *, status: int, holder_uid: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        #: With 409: the uid of whoever holds the node (the CR that started that operation).
        self.holder_uid = holder_uid


class InvalidRequest(ShardkeeperError):
    """A request body that is not what the protocol says (HTTP 400); the message says why."""


class UnknownOperation(ShardkeeperError):
    """The agent does not know the operation (HTTP 404)."""


# --- archives --------------------------------------------------------------------------------


class IntegrityError(ShardkeeperError):
    """Data read back does not match its recorded checksum or size."""


class UnsafeArchiveEntry(ShardkeeperError):
    """An entry that no restore may write: outside its target, through a link, of a type or with a
    name that is never restored. The backup refuses it first, naming the path."""


class CorruptDescriptor(IntegrityError):
    """A descriptor read from the backend is not JSON, or not of the shape its format says."""


class UnknownFormatVersion(SpecError):
    """A descriptor was written by a format this code does not know."""
