"""The storage contract every backend implements, and the policy around it."""

from __future__ import annotations

import abc
import contextlib
import posixpath
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import BinaryIO, ClassVar, TypeVar

import structlog

from shardkeeper.api.common import Backend
from shardkeeper.errors import ObjectNotFound, StorageError, TransientStorageError

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class Writer(abc.ABC):
    """A streaming upload of one object. Nothing is visible under the key until ``commit``."""

    @abc.abstractmethod
    def write(self, data: bytes | memoryview) -> int: ...

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None:
        """Throws away what was written; must be safe to call after a failed write."""


class BackgroundWriter(Writer):
    """Hands every write, and finally the commit, to an I/O thread of its own.

    The producer (a CPU worker packing and compressing a chunk) then never waits on the disk or the
    network, and the commit of one chunk (an fsync, a multipart completion) overlaps the packing of
    the next. At most ``depth`` blocks wait in between, so memory stays bounded.
    """

    _COMMIT, _ABORT = object(), object()

    def __init__(self, inner: Writer, *, depth: int = 8) -> None:
        self._inner = inner
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self.done: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="storage-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is self._ABORT:
                    self._inner.abort()
                    self.done.set_exception(StorageError("aborted"))
                    return
                if item is self._COMMIT:
                    if self._error is not None:
                        raise self._error
                    self._inner.commit()
                    self.done.set_result(None)
                    return
                if self._error is None:
                    self._inner.write(item)  # type: ignore[arg-type]
            except BaseException as exc:
                self._error = exc
                if item is self._COMMIT:
                    self.done.set_exception(exc)
                    return

    def write(self, data: bytes | memoryview) -> int:
        if self._error is not None:
            raise self._error
        self._queue.put(data)
        return len(data)

    def commit_later(self) -> Future[None]:
        """Commits after the queued writes; the future tells when (and whether) it is done."""
        self._queue.put(self._COMMIT)
        return self.done

    def commit(self) -> None:
        self.commit_later().result()

    def abort(self) -> None:
        self._queue.put(self._ABORT)
        self._thread.join()
        if self._error is not None and not isinstance(self._error, StorageError):
            log.warning("storage.abort_after_error", error=repr(self._error))


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
    #: How often, and how patiently, whole-object operations are retried on transient errors.
    retry_attempts: ClassVar[int] = 5
    retry_base_delay: ClassVar[float] = 0.2
    retry_max_delay: ClassVar[float] = 5.0

    def __init__(self, *, prefix: str) -> None:
        self.prefix = prefix.strip("/")

    # --- what backends implement ---------------------------------------------------------------

    @abc.abstractmethod
    def _writer(self, path: str) -> Writer: ...

    @abc.abstractmethod
    def _reader(self, path: str) -> BinaryIO: ...

    @abc.abstractmethod
    def _stat(self, path: str) -> ObjectInfo | None: ...

    @abc.abstractmethod
    def _list(self, path_prefix: str) -> Iterator[ObjectInfo]: ...

    @abc.abstractmethod
    def _delete(self, paths: list[str]) -> None: ...

    @abc.abstractmethod
    def url(self, key: str = "") -> str:
        """A human-readable location, e.g. ``s3://bucket/prefix/key``, for status and messages."""

    # --- the contract callers use --------------------------------------------------------------

    def full(self, key: str) -> str:
        check_key(key)
        return posixpath.join(self.prefix, key) if self.prefix else key

    def _relative(self, path: str) -> str:
        return path[len(self.prefix) + 1 :] if self.prefix else path

    def open_writer(self, key: str) -> Writer:
        """A writer the caller must commit or abort (``writer`` does that for a block of code)."""
        return self._writer(self.full(key))

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[Writer]:
        """Yields a writer; commits when the block ends, aborts if it raises."""
        w = self._writer(self.full(key))
        try:
            yield w
        except BaseException:
            w.abort()
            raise
        w.commit()

    def reader(self, key: str) -> BinaryIO:
        return self._retry(lambda: self._reader(self.full(key)), what=f"open {key}")

    def put_bytes(self, key: str, data: bytes) -> None:
        def put() -> None:
            with self.writer(key) as w:
                w.write(data)

        self._retry(put, what=f"put {key}")

    def get_bytes(self, key: str) -> bytes:
        def get() -> bytes:
            with self._reader(self.full(key)) as f:
                return f.read()

        return self._retry(get, what=f"get {key}")

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
        delay = self.retry_base_delay
        for attempt in range(1, self.retry_attempts + 1):
            try:
                return op()
            except TransientStorageError as exc:
                if attempt == self.retry_attempts:
                    raise
                log.warning("storage.retry", op=what, attempt=attempt, error=str(exc))
                time.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
                delay = min(delay * 2, self.retry_max_delay)
        raise AssertionError("unreachable")


__all__ = ["ObjectInfo", "ObjectNotFound", "Storage", "StorageError", "Writer", "check_key"]
