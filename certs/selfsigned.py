"""Self-signed TLS for the webhook: pure CA/leaf functions, and the manager of `selfSigned` mode.

The manager keeps the CA and the leaf in one Secret (shared by every replica), writes them into the cert
directory watched by `CertificateSource`, and keeps the ValidatingWebhookConfiguration's `caBundle` in
step. CA rotation is make-before-break: the new CA is published in the bundle next to the old one
before any leaf signed by it is served, and the old CA stays in the bundle until it expires.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dittoctl.api.kinds import SECRETS, WEBHOOKCONFIGS
from dittoctl.kube.anchor import anchor_owners
from dittoctl.kube.background import Background
from dittoctl.kube.gateway import ApiError, Conflict, Gateway, NotFound
from dittoctl.kube.logs import fields

log = logging.getLogger("dittofs.certs")

CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_FRACTION = 1 / 3
_SKEW = timedelta(minutes=5)  # backdate notBefore: peers' clocks are not perfectly in sync
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.DOTALL)
# After a CA switch, passes (of every replica: each reads the Secret once per interval) before the old CA goes.
SETTLE_PASSES = 3
CA_CERT, CA_KEY, PREVIOUS_CA = "ca.crt", "ca.key", "ca-previous.crt"
TLS_CERT, TLS_KEY = "tls.crt", "tls.key"


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)  # a log line or a failing test's repr must not show it

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def private_key(self) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError("unsupported private key type")
        return key


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_ca(common_name: str = "dittofs-operator-webhook-ca", *, days: int = CA_DAYS,
           now: datetime | None = None) -> KeyPair:
    """A fresh CA (ECDSA P-256: small, fast handshakes, accepted by Go's crypto/tls)."""
    start = _now(now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])  # X.509's upper bound
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _SKEW).not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def split_sans(sans: Iterable[str]) -> tuple[list[str], list[str]]:
    """Extra SANs as given on a command line: (DNS names, IP addresses)."""
    dns: list[str] = []
    ips: list[str] = []
    for san in sans:
        san = san.strip()
        if not san:
            continue
        try:
            ips.append(str(ipaddress.ip_address(san)))
        except ValueError:
            dns.append(san)
    return dns, ips


def service_dns_names(service: str, namespace: str, cluster_domain: str = "cluster.local") -> list[str]:
    """The names the apiserver may use for a Service (it dials <service>.<namespace>.svc)."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.{cluster_domain}"]


def new_leaf(ca: KeyPair, dns_names: Sequence[str], ips: Sequence[str] = (), *, days: int = LEAF_DAYS,
             now: datetime | None = None, client: bool = False) -> KeyPair:
    """A serving certificate signed by `ca`, valid for the names (SANs; Go ignores the CN) and IPs.
    ``client``: a client certificate instead (extended key usage clientAuth, for mutual TLS)."""
    if not dns_names and not ips:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    start = _now(now)
    ca_cert, ca_key = ca.cert, ca.private_key()
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cn = dns_names[0] if dns_names else ips[0]
    end = min(start + timedelta(days=days), ca_cert.not_valid_after_utc)  # never outlive the issuer
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _SKEW).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                              else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def not_after(cert_pem: bytes) -> datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def needs_renewal(cert_pem: bytes, *, now: datetime | None = None, fraction: float = RENEW_FRACTION) -> bool:
    """True when less than `fraction` of the certificate's lifetime remains (or it is unreadable)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return True
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - _now(now) < lifetime * fraction


def pair_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Does the private key belong to the (first) certificate?"""
    try:
        pair = KeyPair(cert_pem, key_pem)
        return _spki(pair.cert.public_key()) == _spki(pair.private_key().public_key())
    except (ValueError, TypeError):
        return False


def _spki(public_key: Any) -> bytes:
    data: bytes = public_key.public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return data


def signed_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """Issued by the CA in ``ca_pem``, or by one of them when it is a bundle."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return False
    for issuer in _certificates(ca_pem):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def covers(cert_pem: bytes, dns_names: Iterable[str], ips: Iterable[str] = ()) -> bool:
    """Does the certificate's SAN list include every wanted name and IP?"""
    try:
        san = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return set(dns_names) <= have_dns and {str(ipaddress.ip_address(i)) for i in ips} <= have_ips


def usable_leaf(leaf: KeyPair, ca_pem: bytes, dns_names: Sequence[str], ips: Sequence[str],
                now: datetime | None = None) -> bool:
    """The leaf can keep serving: key matches, issued by `ca_pem`, right SANs, not due for renewal."""
    return (pair_matches(leaf.cert_pem, leaf.key_pem) and signed_by(leaf.cert_pem, ca_pem)
            and covers(leaf.cert_pem, dns_names, ips) and not needs_renewal(leaf.cert_pem, now=now))


def usable_ca(ca: KeyPair, now: datetime | None = None) -> bool:
    try:
        constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return constraints.ca and pair_matches(ca.cert_pem, ca.key_pem) and not needs_renewal(ca.cert_pem, now=now)


def write_atomic(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write via a temporary file + rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- the selfSigned mode -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Stored:
    ca: KeyPair | None
    previous_ca: bytes | None
    leaf: KeyPair | None
    resource_version: str | None
    exists: bool


class SelfSignedManager:
    """Keeps CA + leaf in Secret `secret_name`, the files in `cert_dir`, and the webhook's caBundle."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        namespace: str,
        secret_name: str,
        service: str,
        webhook_config_name: str,
        cert_dir: str | Path,
        extra_sans: Sequence[str] = (),
        interval: float = 60.0,
        ca_days: int = CA_DAYS,
        leaf_days: int = LEAF_DAYS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_files_written: Callable[[], object] | None = None,
    ) -> None:
        self.gateway = gateway
        self.on_files_written = on_files_written  # e.g. CertificateSource.reload: serve without a poll delay
        self.namespace = namespace
        self.secret_name = secret_name
        self.webhook_config_name = webhook_config_name
        self.cert_dir = Path(cert_dir)
        extra_dns, self.ips = split_sans(extra_sans)
        self.dns_names = service_dns_names(service, namespace) + [n for n in extra_dns if n]
        self.interval = interval
        self.ca_days = ca_days
        self.leaf_days = leaf_days
        self.clock = clock
        self.published_bundle: bytes | None = None
        self._said: str | None = None  # the last problem logged
        self._loop = Background("webhook-selfsigned-certs", self.run)

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def run(self) -> None:
        """One pass per `interval` (a quick retry after a failure). Cheap when nothing changes: two GETs."""
        while True:
            try:
                done = await self.ensure()
            except (ApiError, Conflict, NotFound, OSError, ValueError) as exc:
                self._say(f"self-signed certificate pass failed: {exc}")
                done = False
            except Exception:  # keep the loop alive: a dead loop would let the certificate expire
                log.exception("self-signed certificate pass failed")
                done = False
            await asyncio.sleep(self.interval if done else min(5.0, self.interval))

    async def ensure(self) -> bool:
        """One pass; True when the Secret, the files and the caBundle are all current."""
        now = self.clock()
        stored = await self._read()
        config = await self.gateway.get_or_none(WEBHOOKCONFIGS, self.webhook_config_name)
        ca, previous, leaf = stored.ca, stored.previous_ca, stored.leaf
        changed = False
        if ca is None or not usable_ca(ca, now):
            if ca is not None and pair_matches(ca.cert_pem, ca.key_pem) and not_after(ca.cert_pem) > now:
                previous = ca.cert_pem  # still trusted by the apiserver: keep it in the bundle meanwhile
            elif previous is None and config is not None:
                # No CA of ours to carry over (the Secret deleted, its key lost, cert-manager's Secret taken over
                # on a mode switch): what the apiserver trusts today stays in the bundle until every replica
                # serves a leaf of the new CA, as in a rotation.
                previous = b"".join(dict.fromkeys(bundle_of(config))) or None
            ca = new_ca(days=self.ca_days, now=now)
            changed = True
            log.info("self-signed webhook CA created", extra=fields(not_after=not_after(ca.cert_pem).isoformat()))
        if previous is not None and (kept := _still_trusted(previous, ca.cert_pem, now)) != previous:
            previous, changed = kept, True
        if previous is not None and leaf is not None and self._settled(leaf, ca, now):
            # Every replica has had time to serve the new CA's leaf: the old CA (maybe one a deleted Secret was
            # regenerated to get rid of) is trusted no longer.
            previous, changed = None, True
        bundle = ca.cert_pem + (previous or b"")
        # Until the bundle with the new CA is published, keep serving a leaf the apiserver trusts today.
        old_leaf_ok = (leaf is not None and previous is not None and self.published_bundle != bundle
                       and usable_leaf(leaf, previous, self.dns_names, self.ips, now))
        leaf_ok = leaf is not None and (old_leaf_ok or usable_leaf(leaf, ca.cert_pem, self.dns_names, self.ips, now))
        if not leaf_ok and (previous is None or self.published_bundle == bundle):
            leaf = new_leaf(ca, self.dns_names, self.ips, days=self.leaf_days, now=now)
            changed = True
            log.info("self-signed webhook certificate issued",
                     extra=fields(not_after=not_after(leaf.cert_pem).isoformat()))
        if changed and not await self._save(stored, ca, previous, leaf):
            return False  # another replica wrote first: the next pass adopts its material
        try:
            published = await self._publish(bundle, config)
        except ApiError as exc:  # e.g. RBAC: the leaf is still served (the caBundle is what is missing)
            self._say(f"webhook caBundle not updated: {exc}")
            published = False
        if leaf is not None:
            self._write_files(bundle, leaf)
        if published and leaf is not None and previous is not None and not signed_by(leaf.cert_pem, ca.cert_pem):
            return False  # the bundle is out: come back soon to switch the leaf to the new CA
        return published and leaf is not None

    async def _read(self) -> _Stored:
        secret = await self.gateway.get_or_none(SECRETS, self.secret_name, self.namespace)
        if secret is None:
            return _Stored(None, None, None, None, exists=False)
        data = {k: _b64decode(v) for k, v in (secret.get("data") or {}).items()}

        def pair(cert: str, key: str) -> KeyPair | None:
            c, k = data.get(cert), data.get(key)
            return KeyPair(c, k) if c and k and pair_matches(c, k) else None

        return _Stored(pair(CA_CERT, CA_KEY), data.get(PREVIOUS_CA) or None, pair(TLS_CERT, TLS_KEY),
                       (secret.get("metadata") or {}).get("resourceVersion"), exists=True)

    async def _save(self, stored: _Stored, ca: KeyPair, previous: bytes | None, leaf: KeyPair | None) -> bool:
        data = {CA_CERT: ca.cert_pem, CA_KEY: ca.key_pem}
        if leaf is not None:
            data |= {TLS_CERT: leaf.cert_pem, TLS_KEY: leaf.key_pem}
        encoded: dict[str, str | None] = {k: base64.b64encode(v).decode() for k, v in data.items()}
        encoded[PREVIOUS_CA] = base64.b64encode(previous).decode() if previous else None
        try:
            if not stored.exists:
                body = {
                    "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": self.secret_name, "namespace": self.namespace,
                                 "labels": {"app.kubernetes.io/managed-by": "dittofs-operator",
                                            "app.kubernetes.io/component": "webhook-certificate"},
                                 "ownerReferences": await anchor_owners(self.gateway, self.webhook_config_name)},
                    # The apiserver refuses a kubernetes.io/tls Secret without these keys; empty until a leaf is
                    # issued (after a deletion: once the bundle with the new CA is out), or it was never created.
                    "data": {TLS_CERT: "", TLS_KEY: ""} | {k: v for k, v in encoded.items() if v is not None},
                }
                await self.gateway.create(SECRETS, body, self.namespace)
            else:
                # resourceVersion makes the patch conditional: two replicas never both rotate.
                patch = {"metadata": {"resourceVersion": stored.resource_version}, "data": encoded}
                await self.gateway.merge_patch(SECRETS, self.secret_name, patch, self.namespace)
        except Conflict:
            log.info("certificate Secret changed concurrently; re-reading", extra=fields(secret=self.secret_name))
            return False
        return True

    async def _publish(self, bundle: bytes, config: Mapping[str, Any] | None) -> bool:
        """Put `bundle` into every webhook's clientConfig.caBundle (JSON patch, guarded by name tests)."""
        if config is None:
            self._say(f"ValidatingWebhookConfiguration {self.webhook_config_name} not found; caBundle not set")
            return False
        wanted = base64.b64encode(bundle).decode()
        ops: list[dict[str, Any]] = []
        for i, hook in enumerate(config.get("webhooks") or []):
            if ((hook.get("clientConfig") or {}).get("caBundle") or "") != wanted:
                ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.get("name")})
                ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": wanted})
        if ops:
            await self.gateway.json_patch(WEBHOOKCONFIGS, self.webhook_config_name, ops)
            log.info("webhook caBundle updated", extra=fields(webhook_config=self.webhook_config_name,
                                                        webhooks=len(ops) // 2))
        self.published_bundle = bundle
        self._said = None
        return True

    def _settled(self, leaf: KeyPair, ca: KeyPair, now: datetime) -> bool:
        """The leaf is the new CA's and was issued long enough ago that every replica's pass (one per interval)
        has read it from the Secret and serves it."""
        try:
            issued = x509.load_pem_x509_certificate(leaf.cert_pem).not_valid_before_utc + _SKEW
        except ValueError:
            return False
        settle = timedelta(seconds=SETTLE_PASSES * self.interval)
        return signed_by(leaf.cert_pem, ca.cert_pem) and now - issued >= settle

    def _say(self, problem: str) -> None:
        if problem != self._said:  # each distinct problem once, not once per 5 s retry
            self._said = problem
            log.warning(problem, extra=fields(webhook_config=self.webhook_config_name))

    def _write_files(self, bundle: bytes, leaf: KeyPair) -> None:
        files = {CA_CERT: (bundle, False), TLS_KEY: (leaf.key_pem, True), TLS_CERT: (leaf.cert_pem, False)}
        written = False
        for name, (data, private) in files.items():
            path = self.cert_dir / name
            try:
                if path.read_bytes() == data:
                    continue
            except OSError:
                pass
            write_atomic(path, data, private=private)
            written = True
        if written and self.on_files_written is not None:
            self.on_files_written()


def _certificates(pems: bytes) -> list[x509.Certificate]:
    """The readable certificates of a bundle (one bad block does not cost the others)."""
    certs = []
    for block in _PEM_BLOCK.findall(pems):
        with contextlib.suppress(ValueError):
            certs.append(x509.load_pem_x509_certificate(block))
    return certs


def _still_trusted(pems: bytes, ca_pem: bytes, now: datetime) -> bytes | None:
    """The certificates of a bundle worth keeping beside ``ca_pem``: readable, unexpired, not ``ca_pem``."""
    kept = [c.public_bytes(serialization.Encoding.PEM) for c in _certificates(pems) if c.not_valid_after_utc > now]
    return b"".join(c for c in kept if c != ca_pem) or None


def _b64decode(value: Any) -> bytes:
    try:
        return base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except ValueError:
        return b""


def bundle_of(config: Mapping[str, Any]) -> list[bytes]:
    """The decoded caBundle of every webhook in a ValidatingWebhookConfiguration (for tests and status)."""
    return [_b64decode((hook.get("clientConfig") or {}).get("caBundle") or "")
            for hook in config.get("webhooks") or []]
