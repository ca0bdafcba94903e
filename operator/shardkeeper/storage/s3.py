"""AWS S3 and S3-compatible stores (MinIO, versitygw, Ceph RGW...), with boto3.

Configuration, as the seed names it: ``BACKUP_S3_BUCKET`` (required), ``BACKUP_S3_PATH``,
``BACKUP_S3_ENDPOINT`` (default ``s3.amazonaws.com``), ``BACKUP_S3_USE_SSL`` (default true),
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (optional: without them boto3's default chain is
used, which covers IAM roles, IRSA web identity and instance profiles), ``AWS_REGION`` or
``AWS_DEFAULT_REGION``.

Large objects go up as multipart uploads (each part retried by itself, CRC32-checked on the wire);
small ones as one PUT. boto3's own retries are off: ``storage.base`` retries.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO

import boto3
import botocore.config
import botocore.exceptions

from shardkeeper.api.common import Backend
from shardkeeper.errors import AccessDenied, ObjectNotFound, StorageError, TransientStorageError
from shardkeeper.storage.base import ObjectInfo, PartWriter, Storage, Writer

AWS_DEFAULT_ENDPOINT = "s3.amazonaws.com"
_MISSING = {"NoSuchKey", "NotFound", "404"}
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
    "403",
}
_TRANSIENT = {
    "SlowDown",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "RequestTimeTooSkewed",
    "500",
    "502",
    "503",
    "504",
}


class S3Storage(Storage):
    backend = Backend.S3

    def __init__(self, *, client: Any, bucket: str, prefix: str, secrets: Sequence[str] = ()) -> None:
        super().__init__(prefix=prefix, secrets=secrets)
        self.client = client
        self.bucket = bucket

    def url(self, key: str = "") -> str:
        path = self.full(key) if key else self.prefix
        return f"s3://{self.bucket}/{path}".rstrip("/")

    def translate(self, exc: Exception, what: str) -> StorageError:
        """botocore's errors, in our words (and without secrets)."""
        if isinstance(exc, botocore.exceptions.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            message = self.redact(f"{what}: {code}: {error.get('Message', '')}".rstrip(": "))
            if code == "NoSuchBucket":
                return StorageError(f'{what}: bucket "{self.bucket}" does not exist')
            if code in _MISSING or status == "404":
                return ObjectNotFound(message)
            if code in _DENIED or status == "403":
                return AccessDenied(message)
            if code in _TRANSIENT or status.startswith("5"):
                return TransientStorageError(message)
            return StorageError(message)
        if isinstance(
            exc,
            (
                botocore.exceptions.EndpointConnectionError,
                botocore.exceptions.ConnectionClosedError,
                botocore.exceptions.ReadTimeoutError,
                botocore.exceptions.ConnectTimeoutError,
                botocore.exceptions.ResponseStreamingError,
                botocore.exceptions.IncompleteReadError,
                ConnectionError,
                TimeoutError,
            ),
        ):
            return TransientStorageError(self.redact(f"{what}: {exc}"))
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return AccessDenied(
                f"{what}: no AWS credentials found (set AWS_ACCESS_KEY_ID or use an IAM role)"
            )
        return StorageError(self.redact(f"{what}: {type(exc).__name__}: {exc}"))

    def call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise self.translate(exc, what) from exc

    def _writer(self, path: str) -> Writer:
        return _MultipartWriter(self, path)

    def _reader(self, path: str, offset: int) -> BinaryIO:
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        response = self.call(f"get {path}", self.client.get_object, Key=path, **extra)
        return _Body(self, response["Body"], path)  # type: ignore[return-value]

    def _stat(self, path: str) -> ObjectInfo | None:
        try:
            head = self.call(f"stat {path}", self.client.head_object, Key=path)
        except ObjectNotFound:
            return None
        return ObjectInfo(path, int(head["ContentLength"]))

    def _list(self, path_prefix: str) -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=path_prefix)
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"], int(item["Size"]))
        except Exception as exc:
            raise self.translate(exc, f"list {path_prefix}") from exc

    def _list_dirs(self, path_prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=path_prefix, Delimiter="/"
        )
        try:
            return [
                p["Prefix"][len(path_prefix) :].rstrip("/")
                for page in pages
                for p in page.get("CommonPrefixes", [])
            ]
        except Exception as exc:
            raise self.translate(exc, f"list {path_prefix}") from exc

    def _delete(self, paths: list[str]) -> None:
        for start in range(0, len(paths), 1000):  # the API's batch limit
            batch = [{"Key": p} for p in paths[start : start + 1000]]
            result = self.call("delete", self.client.delete_objects, Delete={"Objects": batch, "Quiet": True})
            errors = [e for e in result.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise StorageError(self.redact(f"delete {errors[0].get('Key')}: {errors[0].get('Message')}"))


class _Body:
    """A streaming GET body whose errors are ours."""

    def __init__(self, storage: S3Storage, body: Any, path: str) -> None:
        self._storage, self._body, self._path = storage, body, path

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self._body.read(None if n < 0 else n)
            return data
        except Exception as exc:
            raise self._storage.translate(exc, f"read {self._path}") from exc

    def close(self) -> None:
        self._body.close()


class _MultipartWriter(PartWriter):
    def __init__(self, storage: S3Storage, path: str) -> None:
        super().__init__(what=path, policy=storage.retry)
        self._s3, self._path = storage, path
        self._upload_id: str | None = None
        self._etags: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _begin(self) -> None:
        created = self._s3.call(
            f"begin {self._path}",
            self._s3.client.create_multipart_upload,
            Key=self._path,
            ChecksumAlgorithm="CRC32",
        )
        self._upload_id = created["UploadId"]

    def _put_part(self, number: int, data: bytes) -> None:
        part = self._s3.call(
            f"part {number} of {self._path}",
            self._s3.client.upload_part,
            Key=self._path,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
            ChecksumAlgorithm="CRC32",
        )
        with self._lock:
            self._etags[number] = {
                "PartNumber": number,
                "ETag": part["ETag"],
                "ChecksumCRC32": part["ChecksumCRC32"],
            }

    def _complete(self, parts: int) -> None:
        self._s3.call(
            f"complete {self._path}",
            self._s3.client.complete_multipart_upload,
            Key=self._path,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": [self._etags[n] for n in range(1, parts + 1)]},
        )

    def _put_whole(self, data: bytes) -> None:
        self._s3.call(
            f"put {self._path}",
            self._s3.client.put_object,
            Key=self._path,
            Body=data,
            ChecksumAlgorithm="CRC32",
        )

    def _cancel(self) -> None:
        self._s3.call(
            f"abort {self._path}",
            self._s3.client.abort_multipart_upload,
            Key=self._path,
            UploadId=self._upload_id,
        )


def _truthy(value: str | None, default: bool) -> bool:
    return (
        default if value is None or value == "" else value.strip().lower() not in ("0", "false", "no", "off")
    )


def open_from_env(env: Mapping[str, str], *, path: str | None, secrets: Sequence[str] = ()) -> Storage:
    endpoint = env.get("BACKUP_S3_ENDPOINT") or AWS_DEFAULT_ENDPOINT
    use_ssl = _truthy(env.get("BACKUP_S3_USE_SSL"), True)
    custom = endpoint != AWS_DEFAULT_ENDPOINT
    endpoint_url = endpoint if "://" in endpoint else f"{'https' if use_ssl else 'http'}://{endpoint}"
    config = botocore.config.Config(
        retries={"total_max_attempts": 1},  # storage.base retries, once for all backends
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=32,
        s3={"addressing_style": "path"} if custom else {},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    keys: dict[str, Any] = {}
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_ACCESS_KEY"):
        keys = {
            "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_ACCESS_KEY"),
            "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY") or env.get("AWS_SECRET_KEY"),
            "aws_session_token": env.get("AWS_SESSION_TOKEN") or None,
        }
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url if custom else None,
        region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=config,
        **keys,
    )
    prefix = path if path is not None else env.get("BACKUP_S3_PATH", "")
    return S3Storage(client=client, bucket=env["BACKUP_S3_BUCKET"], prefix=prefix, secrets=secrets)
