"""The test bed's PKI, made with ``cryptography``: CA, apiserver serving cert, SA keys, client certs.

Keys are EC P-256 (fast to generate; Go and OpenSSL accept them everywhere the control plane needs a
key), except the service-account signing key, which is RSA 2048 like upstream's (RS256 tokens).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = _dt.timedelta(days=3650)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


class CertificateAuthority:
    """A self-signed CA that can sign serving and client certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, cn: str = "testbed-ca") -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _dt.datetime.now(_dt.UTC)
        name = _name(cn)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(hours=1))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, stem: str = "ca") -> CertPair:
        return CertPair(
            cert=_write(directory / f"{stem}.crt", self.cert_pem),
            key=_write(directory / f"{stem}.key", _key_pem(self.key), private=True),
        )

    def issue(
        self,
        directory: Path,
        stem: str,
        cn: str,
        *,
        orgs: tuple[str, ...] = (),
        server: bool = False,
        client: bool = False,
        dns_names: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> CertPair:
        """Issue a leaf certificate and write ``<directory>/<stem>.crt`` and ``<stem>.key``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _dt.datetime.now(_dt.UTC)
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, orgs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(hours=1))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return CertPair(
            cert=_write(directory / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM)),
            key=_write(directory / f"{stem}.key", _key_pem(key), private=True),
        )

    def issue_serving(self, directory: Path, stem: str, cn: str = "127.0.0.1") -> CertPair:
        """A serving cert valid for ``IP:127.0.0.1`` and ``DNS:localhost`` (Go ignores the CN)."""
        return self.issue(directory, stem, cn, server=True, dns_names=("localhost",), ips=("127.0.0.1",))


def write_rsa_keypair(directory: Path, stem: str) -> CertPair:
    """An RSA 2048 key pair as ``<stem>.key`` (PKCS#8) and ``<stem>.pub`` (SubjectPublicKeyInfo)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return CertPair(
        cert=_write(directory / f"{stem}.pub", pub),
        key=_write(directory / f"{stem}.key", _key_pem(key), private=True),
    )


APISERVER_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# 10.88.0.1: the real node's bridge address, where in-cluster clients reach the apiserver (node.py relay).
APISERVER_IPS = ("127.0.0.1", "10.96.0.1", "10.88.0.1")


@dataclass(frozen=True)
class ClusterPKI:
    ca: CertificateAuthority
    ca_files: CertPair
    apiserver: CertPair
    service_account: CertPair  # .cert is the public key, .key the private key
    admin: CertPair
    operator: CertPair
    # Per-component superuser identities (O=system:masters), so the audit log tells them apart from "admin".
    components: dict[str, CertPair]

    @classmethod
    def create(cls, directory: Path, operator_user: str, components: dict[str, str]) -> ClusterPKI:
        """``components`` maps a file stem to the user name (CN) of a system:masters client cert."""
        ca = CertificateAuthority.create()
        return cls(
            ca=ca,
            ca_files=ca.write(directory),
            apiserver=ca.issue(
                directory,
                "apiserver",
                "kube-apiserver",
                server=True,
                dns_names=APISERVER_DNS,
                ips=APISERVER_IPS,
            ),
            service_account=write_rsa_keypair(directory, "sa"),
            admin=ca.issue(directory, "admin", "admin", orgs=("system:masters",), client=True),
            operator=ca.issue(directory, "operator", operator_user, client=True),
            components={
                stem: ca.issue(directory, stem, user, orgs=("system:masters",), client=True)
                for stem, user in components.items()
            },
        )
