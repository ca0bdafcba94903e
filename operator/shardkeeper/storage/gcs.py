"""Google Cloud Storage, with google-cloud-storage.

Configuration, as the seed names it: ``BACKUP_GCS_BUCKET`` (required), ``BACKUP_GCS_PATH``,
``BACKUP_GCS_USE_AUTH`` (default true; ``false`` for emulators), ``GOOGLE_APPLICATION_CREDENTIALS``
and ``GCP_PROJECT`` (or ``GOOGLE_CLOUD_PROJECT``). Credentials follow Application Default
Credentials: a key file, workload identity, or the node's service account. ``STORAGE_EMULATOR_HOST``
points the client at an emulator.

Objects go up as resumable uploads in 8 MiB pieces; the SDK resumes a piece that failed, with the
numbers of ``storage.base.RetryPolicy``. Reads are ranged and resume through ``storage.base``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO

import google.api_core.exceptions as gexc
import google.auth.exceptions
import requests
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs
from google.cloud.storage.fileio import BlobWriter

from shardkeeper.api.common import Backend
from shardkeeper.errors import AccessDenied, ObjectNotFound, StorageError, TransientStorageError
from shardkeeper.storage.base import MiB, ObjectInfo, Storage, Writer

CHUNK = 8 * MiB  # a multiple of 256 KiB, as resumable uploads require

_TRANSIENT = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    gexc.RetryError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    google.auth.exceptions.TransportError,
    ConnectionError,
    TimeoutError,
)


def _retriable(exc: Exception) -> bool:
    return isinstance(exc, _TRANSIENT)


class GcsStorage(Storage):
    backend = Backend.GCS

    def __init__(self, *, client: gcs.Client, bucket: str, prefix: str, secrets: Sequence[str] = ()) -> None:
        super().__init__(prefix=prefix, secrets=secrets)
        self.client = client
        self.bucket = client.bucket(bucket)
        policy = self.retry
        #: The resumable-upload recovery of the SDK, with our retry numbers.
        self.sdk_retry = Retry(
            predicate=_retriable,
            initial=policy.initial_delay,
            maximum=policy.max_delay,
            multiplier=policy.multiplier,
            timeout=policy.deadline,
        )

    def url(self, key: str = "") -> str:
        path = self.full(key) if key else self.prefix
        return f"gs://{self.bucket.name}/{path}".rstrip("/")

    def translate(self, exc: Exception, what: str, *, writing: bool = False) -> StorageError:
        message = self.redact(f"{what}: {exc}")
        if isinstance(exc, gexc.NotFound):
            if writing:
                return StorageError(f'{what}: bucket "{self.bucket.name}" does not exist')
            return ObjectNotFound(message)
        if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized, google.auth.exceptions.RefreshError)):
            return AccessDenied(message)
        if isinstance(exc, google.auth.exceptions.DefaultCredentialsError):
            return AccessDenied(
                f"{what}: no Google credentials (set GOOGLE_APPLICATION_CREDENTIALS, "
                "or BACKUP_GCS_USE_AUTH=false for an emulator)"
            )
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 404:
            return ObjectNotFound(message) if not writing else StorageError(message)
        if status in (401, 403):
            return AccessDenied(message)
        if _retriable(exc) or (isinstance(status, int) and (status >= 500 or status == 429)):
            return TransientStorageError(message)
        return StorageError(message)

    def _writer(self, path: str) -> Writer:
        return _ResumableWriter(self, path)

    def _reader(self, path: str, offset: int) -> BinaryIO:
        blob = self.bucket.blob(path)
        try:
            # No SDK retries here: a failed piece surfaces, and storage.base reopens at the offset.
            reader = blob.open("rb", chunk_size=CHUNK, retry=None)
            reader.seek(offset)
        except Exception as exc:
            raise self.translate(exc, f"get {path}") from exc
        return _Reader(self, reader, path)  # type: ignore[return-value]

    def _stat(self, path: str) -> ObjectInfo | None:
        try:
            blob = self.bucket.get_blob(path, retry=None)
        except Exception as exc:
            raise self.translate(exc, f"stat {path}") from exc
        return None if blob is None else ObjectInfo(path, int(blob.size or 0))

    def _list(self, path_prefix: str) -> Iterator[ObjectInfo]:
        try:
            for blob in self.client.list_blobs(self.bucket, prefix=path_prefix, retry=None):
                yield ObjectInfo(blob.name, int(blob.size or 0))
        except Exception as exc:
            raise self.translate(exc, f"list {path_prefix}") from exc

    def _list_dirs(self, path_prefix: str) -> list[str]:
        try:
            blobs = self.client.list_blobs(self.bucket, prefix=path_prefix, delimiter="/", retry=None)
            for _ in blobs.pages:  # the prefixes fill in as the pages are read
                pass
            return [p[len(path_prefix) :].rstrip("/") for p in blobs.prefixes]
        except Exception as exc:
            raise self.translate(exc, f"list {path_prefix}") from exc

    def _delete(self, paths: list[str]) -> None:
        for path in paths:
            try:
                self.bucket.delete_blob(path, retry=None)
            except gexc.NotFound:
                continue
            except Exception as exc:
                raise self.translate(exc, f"delete {path}") from exc


class _Reader:
    def __init__(self, storage: GcsStorage, reader: Any, path: str) -> None:
        self._storage, self._reader, self._path = storage, reader, path

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self._reader.read(n)
            return data
        except Exception as exc:
            raise self._storage.translate(exc, f"read {self._path}") from exc

    def close(self) -> None:
        self._reader.close()


class _AbandonableBlobWriter(BlobWriter):  # type: ignore[misc]
    """The SDK's writer finishes the upload in close(), which IOBase also calls when the object is
    collected: an aborted writer must not turn into an object that way."""

    abandoned = False

    def close(self) -> None:
        if self.abandoned:
            self._buffer.close()
            return
        super().close()


class _ResumableWriter(Writer):
    """A resumable upload: the object exists only once the last piece is sent, at commit."""

    def __init__(self, storage: GcsStorage, path: str) -> None:
        self._storage, self._path = storage, path
        self._blob = storage.bucket.blob(path, chunk_size=CHUNK)
        self._file: Any = None

    def _open(self) -> Any:
        if self._file is None:
            self._file = _AbandonableBlobWriter(
                self._blob, chunk_size=CHUNK, retry=self._storage.sdk_retry, ignore_flush=True
            )
        return self._file

    def write(self, data: bytes | memoryview) -> int:
        try:
            return int(self._open().write(data))
        except Exception as exc:
            raise self._storage.translate(exc, f"put {self._path}", writing=True) from exc

    def commit(self) -> None:
        try:
            self._open().close()
        except Exception as exc:
            raise self._storage.translate(exc, f"put {self._path}", writing=True) from exc

    def abort(self) -> None:
        # An unfinished resumable upload never becomes an object; GCS discards the session.
        if self._file is not None:
            self._file.abandoned = True
            self._file.close()
            self._file = None


def _truthy(value: str | None, default: bool) -> bool:
    return (
        default if value is None or value == "" else value.strip().lower() not in ("0", "false", "no", "off")
    )


def open_from_env(env: Mapping[str, str], *, path: str | None, secrets: Sequence[str] = ()) -> Storage:
    project = env.get("GCP_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT")
    options = {"api_endpoint": env["STORAGE_EMULATOR_HOST"]} if env.get("STORAGE_EMULATOR_HOST") else None
    try:
        if _truthy(env.get("BACKUP_GCS_USE_AUTH"), True):
            client = gcs.Client(project=project, client_options=options)
        else:
            client = gcs.Client(
                project=project or "shardkeeper",
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options=options,
            )
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise AccessDenied(
            "no Google credentials: set GOOGLE_APPLICATION_CREDENTIALS, run with workload identity, "
            "or set BACKUP_GCS_USE_AUTH=false for an emulator"
        ) from exc
    prefix = path if path is not None else env.get("BACKUP_GCS_PATH", "")
    return GcsStorage(client=client, bucket=env["BACKUP_GCS_BUCKET"], prefix=prefix, secrets=secrets)
