"""The storage contract every backend implements, and the policy around it.

Backends implement a handful of ``_``-prefixed primitives and translate their SDK's errors into
``shardkeeper.errors`` at that boundary. Everything else lives here, once: key checks, retries with
backoff (``RetryPolicy``, applied by tenacity), reads that resume where a dropped connection left
them, uploads in parts (each part retried on its own), and the redaction of secrets from messages.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, ClassVar, NoReturn, TypeVar

import structlog
import tenacity

from shardkeeper.api.common import Backend
from shardkeeper.errors import ObjectNotFound, StorageError, TransientStorageError

log = structlog.get_logger(__name__)
T = TypeVar("T")
MiB = 1 << 20


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures (timeouts, 5xx, throttling, a server away for a while) are retried:
    the numbers; ``retrying`` applies them with tenacity.

    After attempt n fails, the wait is ``initial_delay * multiplier**(n-1)``, at most ``max_delay``
    (tenacity's ``wait_exponential``), plus a random ``0..jitter`` seconds (``wait_random``), also
    at the cap, so that agents that lost the same server do not come back in step. No attempt
    starts once ``deadline`` seconds would have passed, nor after ``attempts`` attempts. The
    defaults (waits of 0.5, 1, 2, 4, 8, 10 and 10 s, each plus up to 1 s: 35.5-42.5 s in all when
    every attempt fails at once, longer when attempts take time themselves) ride out a server away
    for about that long; a longer outage fails the operation, which the coordinator then reports.
    SDK-level retries are turned off so that they do not multiply with these (GCS resumable
    uploads, whose recovery lives in the SDK, get the backoff and the deadline, without jitter).
    """

    attempts: int = 8
    initial_delay: float = 0.5
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 1.0
    deadline: float = 90.0

    def wait(self) -> tenacity.wait.wait_base:
        """The wait after each failed attempt, as tenacity's strategy (see the class docstring)."""
        exponential = tenacity.wait_exponential(
            multiplier=self.initial_delay, max=self.max_delay, exp_base=self.multiplier
        )
        return exponential + tenacity.wait_random(0, self.jitter)


DEFAULT_RETRY = RetryPolicy()


def retrying(op: Callable[[], T], *, what: str, policy: RetryPolicy = DEFAULT_RETRY) -> T:
    """Runs ``op``, again after ``TransientStorageError`` (see ``RetryPolicy``); any other error at once.

    Raises the last ``TransientStorageError``'s message with "(gave up after N attempts)" once the
    policy says stop. Each retry is logged as ``storage.retry`` with the attempt, error and wait."""

    def log_retry(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "storage.retry", op=what, attempt=state.attempt_number, error=str(exc), delay=round(wait, 2)
        )

    def give_up(state: tenacity.RetryCallState) -> NoReturn:
        exc = state.outcome.exception() if state.outcome is not None else None
        raise TransientStorageError(f"{exc} (gave up after {state.attempt_number} attempts)") from exc

    controller = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientStorageError),
        stop=tenacity.stop_after_attempt(policy.attempts) | tenacity.stop_before_delay(policy.deadline),
        wait=policy.wait(),
        before_sleep=log_retry,
        retry_error_callback=give_up,  # only when this policy stops: errors of ``op`` pass as they are
    )
    return controller(op)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class Writer(abc.ABC):
    """A streaming upload of one object. Nothing is visible under the key until ``commit``."""

    @property
    def local(self) -> bool:
        """Whether ``write`` is a copy into this node's page cache (the filesystem backend: a
        local disk, or an NFS share whose client caches writes), not a request of its own: then
        it costs the calling thread less than a hand-off to another. Such a write can still wait
        when the kernel throttles dirty pages, as a hand-off would then wait for room."""
        return False

    @abc.abstractmethod
    def write(self, data: bytes | memoryview) -> int: ...

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None:
        """Throws away what was written; must be safe to call after a failed write."""


class PartWriter(Writer):
    """An upload in parts (S3 multipart, Azure staged blocks): bytes are gathered into parts, each
    part is sent (and retried) on its own, and ``commit`` assembles them. An object smaller than one
    part goes in a single request. Memory: one part.

    Parts start at ``part_size`` and double every ``parts_per_size`` parts, so that an object of any
    size fits the backend's limit on the number of parts.
    """

    part_size: ClassVar[int] = 8 * MiB
    parts_per_size: ClassVar[int] = 1000

    def __init__(self, *, what: str, policy: RetryPolicy = DEFAULT_RETRY) -> None:
        self._what = what
        self._policy = policy
        self._buffer = bytearray()
        self._parts = 0
        self._size = self.part_size
        self._started = False

    # --- what a backend implements -----------------------------------------------------------

    @abc.abstractmethod
    def _begin(self) -> None:
        """Starts the multi-part upload (S3: CreateMultipartUpload; Azure: nothing)."""

    @abc.abstractmethod
    def _put_part(self, number: int, data: bytes) -> None: ...

    @abc.abstractmethod
    def _complete(self, parts: int) -> None: ...

    @abc.abstractmethod
    def _put_whole(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def _cancel(self) -> None: ...

    # --- the policy --------------------------------------------------------------------------

    def write(self, data: bytes | memoryview) -> int:
        self._buffer += data
        while len(self._buffer) >= self._size:
            part = bytes(self._buffer[: self._size])
            del self._buffer[: self._size]
            self._send(part)
        return len(data)

    def _send(self, part: bytes) -> None:
        if not self._started:
            retrying(self._begin, what=f"begin {self._what}", policy=self._policy)
            self._started = True
        self._parts += 1
        number = self._parts
        retrying(
            lambda: self._put_part(number, part), what=f"part {number} of {self._what}", policy=self._policy
        )
        if self._parts % self.parts_per_size == 0:
            self._size *= 2

    def commit(self) -> None:
        try:
            if not self._started:
                data = bytes(self._buffer)
                retrying(lambda: self._put_whole(data), what=f"put {self._what}", policy=self._policy)
            else:
                if self._buffer:
                    self._send(bytes(self._buffer))
                parts = self._parts
                retrying(lambda: self._complete(parts), what=f"complete {self._what}", policy=self._policy)
        except BaseException:
            self.abort()
            raise
        finally:
            self._buffer.clear()

    def abort(self) -> None:
        self._buffer.clear()
        if self._started:
            with contextlib.suppress(StorageError):
                self._cancel()
            self._started = False


class _ResumingReader:
    """Reads an object from the start; if the connection drops midway, reopens it where it broke."""

    def __init__(
        self, opener: Callable[[int], BinaryIO], *, what: str, policy: RetryPolicy = DEFAULT_RETRY
    ) -> None:
        self._opener, self._what, self._policy = opener, what, policy
        self._offset = 0
        self._stream: BinaryIO | None = retrying(lambda: opener(0), what=f"open {what}", policy=policy)

    def read(self, n: int = -1) -> bytes:
        def attempt() -> bytes:
            if self._stream is None:
                self._stream = self._opener(self._offset)
            try:
                return self._stream.read(n)
            except TransientStorageError:
                self._drop()
                raise

        data = retrying(attempt, what=f"read {self._what} at {self._offset}", policy=self._policy)
        self._offset += len(data)
        return data

    def _drop(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
            self._stream = None

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> _ResumingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_key(key: str) -> str:
    """Keys are relative, '/'-separated and never climb out of the backend's root."""
    if not key or key.startswith("/") or "\\" in key:
        raise StorageError(f"invalid storage key {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise StorageError(f"invalid storage key {key!r}")
    return key


class Storage(abc.ABC):
    """A flat key space under one root (a bucket, a container or a directory) and a path prefix.

    Subclasses implement the ``_``-prefixed primitives and raise the errors of
    ``shardkeeper.errors`` (never SDK errors); the public methods add key checks and retries.
    """

    backend: ClassVar[Backend]
    retry: ClassVar[RetryPolicy] = DEFAULT_RETRY

    def __init__(self, *, prefix: str, secrets: Iterable[str] = ()) -> None:
        """``StorageError`` if ``prefix`` (leading and trailing '/' ignored) is not a valid key."""
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        #: Values that must never appear in a message (keys, connection strings).
        self._secrets = tuple(s for s in secrets if s and len(s) >= 6)

    # --- what backends implement ---------------------------------------------------------------

    @abc.abstractmethod
    def _writer(self, path: str) -> Writer: ...

    @abc.abstractmethod
    def _reader(self, path: str, offset: int) -> BinaryIO:
        """The object's bytes from ``offset``; its ``read`` raises our errors, not the SDK's."""

    @abc.abstractmethod
    def _stat(self, path: str) -> ObjectInfo | None: ...

    @abc.abstractmethod
    def _list(self, path_prefix: str) -> Iterator[ObjectInfo]: ...

    @abc.abstractmethod
    def _list_dirs(self, path_prefix: str) -> list[str]:
        """Names of the 'directories' directly under ``path_prefix`` (which ends with '/' or is empty)."""

    @abc.abstractmethod
    def _delete(self, paths: list[str]) -> None: ...

    @abc.abstractmethod
    def url(self, key: str = "") -> str:
        """A human-readable location, e.g. ``s3://bucket/prefix/key``, for status and messages."""

    # --- the contract callers use --------------------------------------------------------------

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def full(self, key: str) -> str:
        check_key(key)
        return posixpath.join(self.prefix, key) if self.prefix else key

    def _relative(self, path: str) -> str:
        return path[len(self.prefix) + 1 :] if self.prefix else path

    def _dir_path(self, prefix: str) -> str:
        if prefix.strip("/"):
            return self.full(prefix.rstrip("/")) + "/"
        return f"{self.prefix}/" if self.prefix else ""

    def open_writer(self, key: str) -> Writer:
        """A writer the caller must commit or abort (``writer`` does that for a block of code)."""
        return self._writer(self.full(key))

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[Writer]:
        """Yields a writer; commits when the block ends, aborts if it raises."""
        w = self.open_writer(key)
        try:
            yield w
        except BaseException:
            w.abort()
            raise
        w.commit()

    def reader(self, key: str) -> _ResumingReader:
        path = self.full(key)
        return _ResumingReader(lambda offset: self._reader(path, offset), what=key, policy=self.retry)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self.writer(key) as w:  # writers retry their own requests
            w.write(data)

    def get_bytes(self, key: str) -> bytes:
        with self.reader(key) as r:
            return r.read()

    def stat(self, key: str) -> ObjectInfo | None:
        info = self._retry(lambda: self._stat(self.full(key)), what=f"stat {key}")
        return None if info is None else ObjectInfo(key, info.size)

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a 'directory' if it ends with '/')."""
        if prefix.strip("/"):
            full = self.full(prefix.rstrip("/")) + ("/" if prefix.endswith("/") else "")
        else:
            full = f"{self.prefix}/" if self.prefix else ""
        found = self._retry(lambda: list(self._list(full)), what=f"list {prefix}")
        return sorted((ObjectInfo(self._relative(o.key), o.size) for o in found), key=lambda o: o.key)

    def list_dirs(self, prefix: str = "") -> builtins.list[str]:
        """Names directly under ``prefix`` that have objects below them (for listing backups)."""
        names = self._retry(lambda: self._list_dirs(self._dir_path(prefix)), what=f"list {prefix}/")
        return sorted(names)

    def delete_prefix(self, prefix: str) -> int:
        """Deletes everything under ``prefix/``, including what a crashed writer left half-written;
        returns how many objects there were."""
        path = self.full(prefix.rstrip("/"))
        return self._retry(lambda: self._delete_tree(path), what=f"delete {prefix}/")

    def _delete_tree(self, path: str) -> int:
        paths = [o.key for o in self._list(path + "/")]
        if paths:
            self._delete(paths)
        return len(paths)

    def delete(self, key: str) -> None:
        self._retry(lambda: self._delete([self.full(key)]), what=f"delete {key}")

    def _retry(self, op: Callable[[], T], *, what: str) -> T:
        return retrying(op, what=what, policy=self.retry)


__all__ = [
    "DEFAULT_RETRY",
    "ObjectInfo",
    "ObjectNotFound",
    "PartWriter",
    "RetryPolicy",
    "Storage",
    "StorageError",
    "Writer",
    "check_key",
    "retrying",
]
