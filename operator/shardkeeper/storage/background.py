"""Writing on an I/O thread of its own, so that packing never waits on the disk or the network."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import structlog

from shardkeeper.errors import StorageError
from shardkeeper.storage.base import Writer

log = structlog.get_logger(__name__)


class BackgroundWriter(Writer):
    """Hands every write, and finally the commit, to an I/O thread of its own.

    The producer (a CPU worker packing and compressing a chunk) then never waits on the disk or the
    network, and the commit of one chunk (an fsync, a multipart completion) overlaps the packing of
    the next. At most ``depth`` blocks wait in between, so memory stays bounded.

    With ``inline_writes`` the writes run on the caller's thread and only the commit (and an abort)
    on the I/O thread: for a producer whose other work is small (NoCompression) to a ``local``
    writer, a hand-off per block costs more than the write (``benchmarks/README.md``, 2026-12-02).
    """

    _COMMIT, _ABORT = object(), object()

    def __init__(self, inner: Writer, *, depth: int = 8, inline_writes: bool = False) -> None:
        self._inner = inner
        self._inline = inline_writes
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
        if self._inline:
            return self._inner.write(data)
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


__all__ = ["BackgroundWriter"]
