"""A directory as a backend: ``BACKUP_FILESYSTEM_PATH``.

On a multi-node cluster every agent and the operator must see the same directory (an NFS or
hostPath share); the operator proves it with a probe object before any data moves.
Objects are written to a temporary name, fsynced, then renamed, so a reader never sees half an object.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from shardkeeper.api.common import Backend
from shardkeeper.errors import AccessDenied, ObjectNotFound, StorageError, TransientStorageError
from shardkeeper.storage.base import ObjectInfo, Storage, Writer

_TMP_MARK = ".tmp-"


def _translate(exc: OSError, what: str) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFound(f"{what}: not found")
    if isinstance(exc, PermissionError):
        return AccessDenied(f"{what}: permission denied")
    if exc.errno in (errno.EAGAIN, errno.EINTR, errno.EBUSY):
        return TransientStorageError(f"{what}: {exc.strerror}")
    return StorageError(f"{what}: {exc.strerror or exc}")


class _FileWriter(Writer):
    @property
    def local(self) -> bool:
        return True

    def __init__(self, target: Path) -> None:
        self._target = target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = target.with_name(f".{target.name}{_TMP_MARK}{uuid.uuid4().hex[:12]}")
            self._file = self._tmp.open("xb")
        except OSError as exc:
            raise _translate(exc, str(target)) from exc

    def write(self, data: bytes | memoryview) -> int:
        try:
            return self._file.write(data)
        except OSError as exc:
            raise _translate(exc, str(self._target)) from exc

    def commit(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._tmp.replace(self._target)
        except OSError as exc:
            self.abort()
            raise _translate(exc, str(self._target)) from exc

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


class FilesystemStorage(Storage):
    backend = Backend.FILESYSTEM

    def __init__(self, *, root: Path, prefix: str = "") -> None:
        super().__init__(prefix=prefix)
        self.root = root

    def _path(self, path: str) -> Path:
        return self.root / path

    def url(self, key: str = "") -> str:
        return str(self.root / self.full(key)) if key else str(self.root / self.prefix)

    def _writer(self, path: str) -> Writer:
        return _FileWriter(self._path(path))

    def _reader(self, path: str, offset: int) -> BinaryIO:
        try:
            f = self._path(path).open("rb")
        except OSError as exc:
            raise _translate(exc, path) from exc
        f.seek(offset)
        return f

    def _list_dirs(self, path_prefix: str) -> list[str]:
        base = self._path(path_prefix) if path_prefix else self.root
        if not base.is_dir():
            return []
        return [entry.name for entry in base.iterdir() if entry.is_dir() and not entry.name.startswith(".")]

    def _stat(self, path: str) -> ObjectInfo | None:
        try:
            st = self._path(path).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _translate(exc, path) from exc
        return ObjectInfo(path, st.st_size)

    def _list(self, path_prefix: str) -> Iterator[ObjectInfo]:
        # The prefix may end inside a name ("ab" matches "abc/x"), so walk from its directory.
        directory, _, _ = path_prefix.rpartition("/")
        base = self._path(directory) if directory else self.root
        if not base.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(base):
            for name in filenames:
                if _TMP_MARK in name and name.startswith("."):
                    continue
                full = Path(dirpath, name)
                rel = full.relative_to(self.root).as_posix()
                if rel.startswith(path_prefix):
                    try:
                        yield ObjectInfo(rel, full.stat().st_size)
                    except FileNotFoundError:
                        continue

    def _delete_tree(self, path: str) -> int:
        directory = self._path(path)
        if not directory.is_dir():
            return 0
        count = sum(
            1 for _root, _dirs, files in os.walk(directory) for name in files if _TMP_MARK not in name
        )
        try:
            shutil.rmtree(directory)
        except OSError as exc:
            raise _translate(exc, path) from exc
        self._prune_empty_dirs([path])
        return count

    def _delete(self, paths: list[str]) -> None:
        for path in paths:
            try:
                self._path(path).unlink(missing_ok=True)
            except OSError as exc:
                raise _translate(exc, path) from exc
        self._prune_empty_dirs(paths)

    def _prune_empty_dirs(self, paths: list[str]) -> None:
        stop = self._path(self.prefix) if self.prefix else self.root
        for directory in sorted({self._path(p).parent for p in paths}, key=lambda d: -len(d.parts)):
            while directory != stop and stop in directory.parents:
                try:
                    directory.rmdir()
                except OSError:
                    break
                directory = directory.parent


def open_from_env(env: Mapping[str, str], *, path: str | None, secrets: Sequence[str] = ()) -> Storage:
    root = Path(env["BACKUP_FILESYSTEM_PATH"])
    if not root.is_absolute():
        raise StorageError(f"BACKUP_FILESYSTEM_PATH must be an absolute path, not {str(root)!r}")
    return FilesystemStorage(root=root, prefix=path or "")
