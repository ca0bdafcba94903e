"""A real Kubernetes control plane on loopback: etcd + kube-apiserver, RBAC on, token auth.

No kubelet, scheduler or controller-manager run: ``testbed.cluster`` creates pods and writes their
status the way a kubelet would. The binaries are built from Go modules by ``hack/build-*.sh`` and
cached outside the repository (see ``testbed.binaries``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import requests
import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from testbed.binaries import Binaries

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

REPO = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _write_pki(d: Path) -> None:
    """A CA with keyCertSign and a serving certificate with proper SANs (strict TLS verifiers accept it)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shardkeeper-testbed-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes.default.svc"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "apiserver.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "apiserver.key").write_bytes(_pem_key(key))
    sa = _key()
    (d / "sa.key").write_bytes(_pem_key(sa))
    (d / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def write_kubeconfig(
    path: Path, *, server: str, ca: Path, token: str, user: str, namespace: str = "default"
) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testbed", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "testbed", "user": user, "namespace": namespace}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class ControlPlane:
    workdir: Path
    binaries: Binaries = field(default_factory=Binaries.locate)
    etcd_port: int = 0
    port: int = 0
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def start(self, *, timeout: float = 120.0, crds: bool = True) -> ControlPlane:
        """Starts etcd and kube-apiserver and, unless ``crds`` is false, applies our CRDs. If any
        step fails, what was started is stopped before the error propagates (no orphans)."""
        try:
            return self._start(timeout=timeout, crds=crds)
        except BaseException:
            self.stop()
            raise

    def _start(self, *, timeout: float, crds: bool) -> ControlPlane:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki.mkdir(exist_ok=True)
        _write_pki(self.pki)
        (self.pki / "tokens.csv").write_text(f'{self.admin_token},admin,admin,"system:masters"\n')
        self.etcd_port = self.etcd_port or free_port()
        peer = free_port()
        self.port = self.port or free_port()
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        self._spawn(
            [
                str(self.binaries.etcd),
                "--name=testbed",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=testbed=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            logs / "etcd.log",
        )
        self._spawn(
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.pki}",
                f"--tls-cert-file={self.pki / 'apiserver.crt'}",
                f"--tls-private-key-file={self.pki / 'apiserver.key'}",
                f"--client-ca-file={self.pki / 'ca.crt'}",
                f"--token-auth-file={self.pki / 'tokens.csv'}",
                f"--service-account-issuer=https://127.0.0.1:{self.port}",
                f"--service-account-key-file={self.pki / 'sa.pub'}",
                f"--service-account-signing-key-file={self.pki / 'sa.key'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                # No controller-manager creates the "default" ServiceAccount that this plugin requires.
                "--disable-admission-plugins=ServiceAccount",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
            ],
            logs / "kube-apiserver.log",
        )
        write_kubeconfig(
            self.kubeconfig, server=self.server, ca=self.pki / "ca.crt", token=self.admin_token, user="admin"
        )
        self._wait_ready(timeout)
        if not crds:
            return self
        self.apply(REPO / "crds")
        for crd in sorted(p.stem for p in (REPO / "crds").glob("*.yaml")):
            self.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        return self

    def _spawn(self, argv: list[str], log: Path) -> None:
        out = log.open("ab")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._procs.append(proc)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{cast('list[str]', proc.args)[0]} exited with {proc.returncode}; "
                        f"see {self.workdir / 'logs'}"
                    )
            try:
                resp = requests.get(
                    f"{self.server}/readyz",
                    headers={"Authorization": f"Bearer {self.admin_token}"},
                    verify=str(self.pki / "ca.crt"),
                    timeout=2,
                )
                if resp.status_code == 200:
                    return
                last = resp.text[-300:]
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                last = repr(exc)
            time.sleep(0.3)
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s: {last}")

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig)}
        result = subprocess.run(
            [str(self.binaries.kubectl), *args],
            env=env,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def apply(self, path: Path | str, *, namespace: str | None = None, kubeconfig: Path | None = None) -> str:
        args = ["apply", "--server-side", "--force-conflicts", "-f", str(path)]
        if namespace:
            args += ["-n", namespace]
        return self.kubectl(*args, kubeconfig=kubeconfig).stdout

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path) -> Path:
        """A kubeconfig that authenticates as a ServiceAccount (a real, RBAC-checked identity)."""
        token = self.kubectl("create", "token", name, "-n", namespace, "--duration=24h").stdout.strip()
        return write_kubeconfig(
            path, server=self.server, ca=self.pki / "ca.crt", token=token, user=name, namespace=namespace
        )

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self._procs):
            try:
                # Nothing here needs a graceful drain; kube-apiserver's would take ~15 s.
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def api_client(kubeconfig: Path) -> ApiClient:
    """A Kubernetes client for ``kubeconfig`` (typed: the library's loader is not)."""
    from kubernetes import config

    api: ApiClient = config.new_client_from_config(str(kubeconfig))  # type: ignore[no-untyped-call]
    return api
