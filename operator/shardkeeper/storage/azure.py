"""Azure Blob Storage, with azure-storage-blob.

Configuration, as the seed names it: ``BACKUP_AZURE_CONTAINER`` (required), ``BACKUP_AZURE_PATH``,
and credentials: ``AZURE_STORAGE_CONNECTION_STRING`` first, else ``AZURE_STORAGE_ACCOUNT`` with
``AZURE_STORAGE_KEY`` (no key: anonymous access to a public container).

Large objects go up as staged blocks committed at the end (each block retried by itself), small
ones as one upload. The SDK's own retries are off: ``storage.base`` retries.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, BlobPrefix, BlobServiceClient, ContainerClient

from shardkeeper.api.common import Backend
from shardkeeper.errors import AccessDenied, ObjectNotFound, StorageError, TransientStorageError
from shardkeeper.storage.base import MiB, ObjectInfo, PartWriter, Storage, Writer

_SDK: dict[str, Any] = {
    "retry_total": 0,
    "connection_timeout": 20,
    "read_timeout": 60,
    "max_single_get_size": 4 * MiB,
    "max_chunk_get_size": 4 * MiB,
}


class AzureStorage(Storage):
    backend = Backend.AZURE

    def __init__(self, *, container: ContainerClient, prefix: str, secrets: Sequence[str] = ()) -> None:
        super().__init__(prefix=prefix, secrets=secrets)
        self.container = container

    def url(self, key: str = "") -> str:
        path = self.full(key) if key else self.prefix
        return f"{self.container.url}/{path}".rstrip("/")

    def translate(self, exc: Exception, what: str) -> StorageError:
        code = getattr(exc, "error_code", None)
        reason = str(getattr(exc, "reason", "") or exc).splitlines()[0]
        message = self.redact(f"{what}: {code or type(exc).__name__}: {reason}")
        if code == "ContainerNotFound":
            return StorageError(f'{what}: container "{self.container.container_name}" does not exist')
        if isinstance(exc, ResourceNotFoundError):
            return ObjectNotFound(message)
        if isinstance(exc, ClientAuthenticationError) or code in (
            "AuthenticationFailed",
            "AuthorizationFailure",
        ):
            return AccessDenied(message)
        if isinstance(exc, (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError)):
            return TransientStorageError(message)
        if isinstance(exc, HttpResponseError):
            status = exc.status_code or 0
            if status in (401, 403):
                return AccessDenied(message)
            if status >= 500 or status in (408, 429):
                return TransientStorageError(message)
        return StorageError(message)

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise self.translate(exc, what) from exc

    def _writer(self, path: str) -> Writer:
        return _BlockWriter(self, path)

    def _reader(self, path: str, offset: int) -> BinaryIO:
        blob = self.container.get_blob_client(path)
        downloader = self.call(f"get {path}", blob.download_blob, offset=offset or None)
        return _Reader(self, downloader.chunks(), path)  # type: ignore[return-value]

    def _stat(self, path: str) -> ObjectInfo | None:
        try:
            props = self.call(f"stat {path}", self.container.get_blob_client(path).get_blob_properties)
        except ObjectNotFound:
            return None
        return ObjectInfo(path, int(props.size))

    def _list(self, path_prefix: str) -> Iterator[ObjectInfo]:
        try:
            for blob in self.container.list_blobs(name_starts_with=path_prefix or None):
                yield ObjectInfo(blob.name, int(blob.size))
        except Exception as exc:
            raise self.translate(exc, f"list {path_prefix}") from exc

    def _list_dirs(self, path_prefix: str) -> list[str]:
        try:
            return [
                item.name[len(path_prefix) :].rstrip("/")
                for item in self.container.walk_blobs(name_starts_with=path_prefix or None, delimiter="/")
                if isinstance(item, BlobPrefix)
            ]
        except Exception as exc:
            raise self.translate(exc, f"list {path_prefix}") from exc

    def _delete(self, paths: list[str]) -> None:
        for path in paths:
            try:
                self.container.delete_blob(path)
            except ResourceNotFoundError:
                continue
            except Exception as exc:
                raise self.translate(exc, f"delete {path}") from exc


class _Reader:
    """The download's chunks as a stream whose errors are ours."""

    def __init__(self, storage: AzureStorage, chunks: Iterator[bytes], path: str) -> None:
        self._storage, self._chunks, self._path = storage, chunks, path
        self._pending = b""

    def read(self, n: int = -1) -> bytes:
        try:
            while n < 0 or len(self._pending) < n:
                piece = next(self._chunks, None)
                if piece is None:
                    break
                self._pending += piece
        except Exception as exc:
            raise self._storage.translate(exc, f"read {self._path}") from exc
        if n < 0:
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def close(self) -> None:
        self._pending = b""


class _BlockWriter(PartWriter):
    """Staged blocks, committed as a list: until then, nothing is visible under the name."""

    def __init__(self, storage: AzureStorage, path: str) -> None:
        super().__init__(what=path, policy=storage.retry)
        self._az, self._path = storage, path
        self._blob = storage.container.get_blob_client(path)

    @staticmethod
    def _block_id(number: int) -> str:
        return base64.b64encode(f"{number:08d}".encode()).decode()

    def _begin(self) -> None:
        """Blocks need no session."""

    def _put_part(self, number: int, data: bytes) -> None:
        self._az.call(f"block {number} of {self._path}", self._blob.stage_block, self._block_id(number), data)

    def _complete(self, parts: int) -> None:
        blocks = [BlobBlock(block_id=self._block_id(n)) for n in range(1, parts + 1)]
        self._az.call(f"commit {self._path}", self._blob.commit_block_list, blocks)

    def _put_whole(self, data: bytes) -> None:
        self._az.call(f"put {self._path}", self._blob.upload_blob, data, overwrite=True)

    def _cancel(self) -> None:
        """Uncommitted blocks are discarded by the service (after a week at most)."""


def open_from_env(env: Mapping[str, str], *, path: str | None, secrets: Sequence[str] = ()) -> Storage:
    if env.get("AZURE_STORAGE_CONNECTION_STRING"):
        service = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"], **_SDK)
    else:
        account = env["AZURE_STORAGE_ACCOUNT"]
        service = BlobServiceClient(
            account_url=f"https://{account}.blob.core.windows.net",
            credential=env.get("AZURE_STORAGE_KEY") or None,
            **_SDK,
        )
    container = service.get_container_client(env["BACKUP_AZURE_CONTAINER"])
    prefix = path if path is not None else env.get("BACKUP_AZURE_PATH", "")
    return AzureStorage(container=container, prefix=prefix, secrets=secrets)
