"""The cluster's certificates: one CA, the API server's serving certificate (its SANs include the
``kubernetes`` Service address pods use) and its client certificate for the kubelet."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write_pki(d: Path, *, ips: list[str], dns: list[str]) -> None:
    """Writes ca.crt/ca.key, apiserver.crt/.key (serving, for ``ips`` and ``dns``),
    apiserver-kubelet-client.crt/.key (group system:masters) and the service-account key pair
    sa.key/sa.pub into ``d``."""
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = _name("shardkeeper-node-ca")

    def builder(subject: x509.Name, key: rsa.RSAPrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=7))
        )

    usage = dict(
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    ca = (
        builder(ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, key_encipherment=False, **usage
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(d / "ca.key", ca_key)
    leaf_usage = x509.KeyUsage(
        digital_signature=True, key_cert_sign=False, crl_sign=False, key_encipherment=True, **usage
    )
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    sans += [x509.DNSName(name) for name in dns]
    for stem, subject, eku, alt in (
        ("apiserver", _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans),
        (
            "apiserver-kubelet-client",
            _name("kube-apiserver-kubelet-client", ("system:masters",)),
            ExtendedKeyUsageOID.CLIENT_AUTH,
            [],
        ),
    ):
        key = _key()
        b = builder(subject, key).add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        b = b.add_extension(leaf_usage, True).add_extension(x509.ExtendedKeyUsage([eku]), False)
        b = b.add_extension(aki, False)
        if alt:
            b = b.add_extension(x509.SubjectAlternativeName(alt), False)
        (d / f"{stem}.crt").write_bytes(
            b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )
        _write_key(d / f"{stem}.key", key)
    sa = _key()
    _write_key(d / "sa.key", sa)
    (d / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
